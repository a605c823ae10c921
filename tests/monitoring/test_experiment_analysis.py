"""Experiment analysis: lifts and intervals that cover the truth, a nominal false-positive rate,
SRM detection, CUPED narrowing intervals, the served-impression log path, the CLI and its
errors, and a real A/B-style comparison on the Open Bandit logs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from statsmodels.stats import proportion
from typer.testing import CliRunner

from monitoring.experiments import (
    Metric,
    compare_variants,
    experiment_arms,
    experiment_readout,
    readout_slice,
    sample_ratio_mismatch,
    units_from_event_log,
    units_from_table,
    write_readout,
)
from monitoring.experiments.sources import VARIANT
from persona.cli.experiment import experiment_app, parse_expected_split
from persona.layout import write_table
from persona.schemas import EVENTS
from serving.config import DEFAULT_CONFIG_DIR, load_experiments
from serving.experiments import assign

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
EXPERIMENTS_FILE = DEFAULT_CONFIG_DIR / "experiments.yaml"
CTR = Metric("ctr", "clicks", "impressions")
#: Mean of Beta(0.5, 9.5): the population CTR of the control arm in the synthetic tables.
BASE_CTR = 0.05


def synthetic_units(
    n: int, lift: float, seed: int, pre_impressions: int = 0, mean_impressions: float = 6.7
) -> pd.DataFrame:
    """``n`` customers split 50/50, geometric impressions, a per-customer click propensity
    (strongly heterogeneous, so impressions of one customer are not independent), treatment
    propensity × (1 + lift); with ``pre_impressions``, pre-period clicks from the same
    propensity. Population CTR lift is exactly ``lift``."""
    rng = np.random.default_rng(seed)
    variant = np.where(rng.random(n) < 0.5, "control", "treatment")
    propensity = rng.beta(0.5, 9.5, n)
    impressions = rng.geometric(1 / mean_impressions, n)
    shown = np.minimum(propensity * np.where(variant == "treatment", 1 + lift, 1.0), 1.0)
    frame = pd.DataFrame(
        {
            "customer_id": np.arange(1, n + 1),
            VARIANT: variant,
            "impressions": impressions,
            "clicks": rng.binomial(impressions, shown),
            "segment": rng.choice(["mass", "affluent"], n),
        }
    )
    if pre_impressions:
        frame["pre_clicks"] = rng.binomial(pre_impressions, propensity)
        frame["noise"] = rng.normal(size=n)
    return frame


@pytest.fixture(scope="module")
def lift_readout(tmp_path_factory: pytest.TempPathFactory):
    """A +9% CTR lift on 40k customers, read through a Parquet export like an analyst's."""
    path = tmp_path_factory.mktemp("lift") / "export.parquet"
    synthetic_units(40_000, 0.09, seed=7).to_parquet(path)
    units = units_from_table(
        path,
        unit="customer_id",
        variant="variant",
        outcomes=["clicks"],
        denominator="impressions",
        segment_column="segment",
    )
    return experiment_readout(units)


def test_known_lift_is_covered_by_its_interval_and_significant(lift_readout) -> None:
    lift = lift_readout.overall.metrics[0].lifts[0]
    assert (lift.variant, lift.control) == ("treatment", "control")
    assert lift.raw.relative_ci_low < 0.09 < lift.raw.relative_ci_high
    assert lift.raw.absolute_ci_low < 0.09 * BASE_CTR < lift.raw.absolute_ci_high
    assert lift.raw.p_value < 0.05 and lift.raw.significant
    assert lift.raw.relative_ci_low > 0
    rates = {r.variant: r for r in lift_readout.overall.metrics[0].variants}
    assert rates["control"].ci_low < BASE_CTR < rates["control"].ci_high
    assert rates["treatment"].rate / rates["control"].rate - 1 == pytest.approx(lift.raw.relative)
    assert [s.name for s in lift_readout.by_segment] == ["segment=affluent", "segment=mass"]
    assert not lift_readout.overall.srm.mismatch


def test_no_effect_gives_an_interval_that_covers_zero() -> None:
    readout = compare_variants(synthetic_units(20_000, 0.0, seed=3), CTR, control="control")
    lift = readout.lifts[0].raw
    assert lift.absolute_ci_low < 0 < lift.absolute_ci_high
    assert lift.relative_ci_low < 0 < lift.relative_ci_high
    assert lift.p_value > 0.05


def test_false_positive_rate_over_200_a_a_tests_is_nominal() -> None:
    # Customers' clicks are correlated (heterogeneous propensity): a test that treated
    # impressions as independent would reject far more than 5% here.
    p_values = [
        compare_variants(synthetic_units(800, 0.0, seed=s), CTR, control="control").lifts[0].raw.p_value
        for s in range(200)
    ]  # fmt: skip
    # 200 draws of a 5% event: 2..20 rejections hold with probability > 0.999.
    false_positive_rate = np.mean(np.array(p_values) < 0.05)
    assert 0.01 <= false_positive_rate <= 0.10, false_positive_rate


def test_sample_ratio_mismatch_is_found_at_52_48_and_not_at_50_50() -> None:
    rng = np.random.default_rng(11)
    for share, mismatch in ((0.52, True), (0.50, False)):
        frame = pd.DataFrame(
            {VARIANT: np.where(rng.random(20_000) < share, "control", "treatment")}
        )
        frame["clicks"] = rng.binomial(1, 0.1, len(frame))
        slice_ = readout_slice(
            frame,
            [Metric("clicks", "clicks")],
            control="control",
            expected_split={"control": 0.5, "treatment": 0.5},
        )
        assert slice_.srm.mismatch is mismatch, (share, slice_.srm)
    exact = sample_ratio_mismatch({"control": 10_400, "treatment": 9_600})
    assert exact.chi2 == pytest.approx(32.0) and exact.p_value < 1e-6


def test_srm_refuses_a_variant_without_an_expected_share() -> None:
    with pytest.raises(ValueError, match=r"expected-split: no share for variant.*beta"):
        sample_ratio_mismatch({"control": 10, "beta": 12}, {"control": 0.5, "treatment": 0.5})


def test_cuped_narrows_the_interval_when_the_covariate_correlates() -> None:
    frame = synthetic_units(20_000, 0.09, seed=5, pre_impressions=40, mean_impressions=20)
    with_pre = compare_variants(frame, Metric("ctr", "clicks", "impressions", ("pre_clicks",)), control="control").lifts[0]  # fmt: skip
    width = lambda e: e.relative_ci_high - e.relative_ci_low  # noqa: E731
    assert with_pre.cuped is not None and with_pre.variance_reduction is not None
    # How much CUPED can remove is bounded by corr(clicks, pre_clicks)²; here about a third.
    assert width(with_pre.cuped) < 0.85 * width(with_pre.raw)
    assert with_pre.variance_reduction > 0.25
    assert with_pre.cuped.relative_ci_low < 0.09 < with_pre.cuped.relative_ci_high
    assert with_pre.cuped_theta is not None and with_pre.cuped_theta["pre_clicks"] > 0
    # A covariate unrelated to clicks removes (almost) nothing.
    noise = compare_variants(frame, Metric("ctr", "clicks", "impressions", ("noise",)), control="control").lifts[0]  # fmt: skip
    assert noise.variance_reduction is not None and abs(noise.variance_reduction) < 0.02


# -- the served-impression log ------------------------------------------------------------

START = datetime(2026, 3, 2, tzinfo=UTC)


def served_log(data_dir: Path, customers: int = 1_500, seed: int = 1) -> dict:
    """A hand-built served log (canonical EVENTS) plus a segment table: a pre-period day and two
    experiment days of ranker_vs_priors, arms from the real sticky assignment; returns what a
    correct analysis must count."""
    rng = np.random.default_rng(seed)
    spec = load_experiments(EXPERIMENTS_FILE).experiments["ranker_vs_priors"]
    rows: list[dict] = []
    expected: dict = {"units": {}, "impressions": {}, "clicks": {}, "applies": {}, "apps": set()}

    def event(customer: int, app: str, kind: str, at: datetime, variant: str | None, request: bool):
        rows.append(
            {
                "event_id": f"ev{len(rows)}",
                "customer_id": customer,
                "product_id": None if kind == "login" else "card_gold",
                "app": app,
                "event_type": kind,
                "event_timestamp": at,
                "request_id": f"rq{len(rows)}" if request else None,
                "position": 1 if kind == "impression" else None,
                "amount": None,
                "propensity": 0.5 if kind == "impression" else None,
                "model_version": None,
                "variant": variant,
                "device": "ios",
            }
        )

    for customer in range(1, customers + 1):
        arm = assign(customer, "ranker_vs_priors", spec).variant.name
        app = ["rib", "imobile", "nli"][customer % 3]
        propensity = rng.beta(1, 9)
        for _ in range(rng.integers(1, 6)):  # pre-period: served before the experiment
            at = START - timedelta(hours=float(rng.uniform(1, 20)))
            event(customer, app, "impression", at, None, True)
            if rng.random() < propensity:
                event(customer, app, "click", at + timedelta(seconds=30), None, True)
        shown = int(rng.integers(1, 8))
        clicks = applies = 0
        for i in range(shown):
            at = START + timedelta(hours=1 + i + float(rng.uniform(0, 0.5)))
            event(customer, app, "impression", at, arm, True)
            lift = 1.4 if arm == "transformer" else 1.0
            if rng.random() < min(propensity * lift, 1.0):
                clicks += 1
                event(customer, app, "click", at + timedelta(seconds=30), arm, True)
                if rng.random() < 0.3:
                    applies += 1
                    event(customer, app, "apply", at + timedelta(seconds=90), arm, True)
        event(customer, app, "click", START + timedelta(hours=12), None, False)  # organic
        event(customer, "cib", "impression", START + timedelta(hours=3), "default", True)
        expected["units"][arm] = expected["units"].get(arm, 0) + 1
        expected["impressions"][arm] = expected["impressions"].get(arm, 0) + shown
        expected["clicks"][arm] = expected["clicks"].get(arm, 0) + clicks
        expected["applies"][arm] = expected["applies"].get(arm, 0) + applies
        expected["apps"].add(app)
    # Customer 99999 was served both arms (a broken assignment): left out and counted.
    event(99_999, "rib", "impression", START + timedelta(hours=1), "control", True)
    event(99_999, "rib", "impression", START + timedelta(hours=2), "transformer", True)
    write_table(
        data_dir / "serving" / "events", pa.Table.from_pylist(rows, EVENTS.arrow_schema()), EVENTS
    )

    segment_dir = data_dir / "features" / "customer_segment"
    segment_dir.mkdir(parents=True)
    ids = np.arange(1, customers + 1)
    old = datetime(2025, 1, 1, tzinfo=UTC)
    pd.DataFrame(
        {
            "customer_id": np.concatenate([ids, ids]),
            "event_timestamp": [old] * customers + [old + timedelta(days=30)] * customers,
            "segment_id": ["stale"] * customers + [f"seg{c % 2}" for c in ids],
            "segment_version": "rules_v0",
        }
    ).to_parquet(segment_dir / "data.parquet")
    return expected


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    data_dir = tmp_path_factory.mktemp("served")
    return data_dir, served_log(data_dir)


def test_served_log_readout_counts_exposed_customers_and_their_served_outcomes(served) -> None:
    data_dir, expected = served
    units = units_from_event_log(data_dir, experiments_file=EXPERIMENTS_FILE, start=START)
    readout = experiment_readout(units)
    assert readout.experiment == "ranker_vs_priors" and readout.control == "control"
    ctr = next(m for m in readout.overall.metrics if m.metric == "ctr")
    rates = {r.variant: r for r in ctr.variants}
    assert {v: r.units for v, r in rates.items()} == expected["units"]
    assert {v: r.denominator for v, r in rates.items()} == expected["impressions"]
    assert {v: r.numerator for v, r in rates.items()} == expected["clicks"]
    applies = next(m for m in readout.overall.metrics if m.metric == "apply_rate")
    assert {r.variant: r.numerator for r in applies.variants} == expected["applies"]
    purchases = next(m for m in readout.overall.metrics if m.metric == "purchase_rate")
    assert purchases.lifts == [] and "no variation" in purchases.notes[0]
    assert not readout.overall.srm.mismatch
    assert readout.overall.srm.expected_share == pytest.approx(
        {"holdout": 0.05, "control": 0.475, "transformer": 0.475}
    )
    assert any("1 customer(s) were served several arms" in n for n in readout.notes)
    assert {s.value for s in readout.by_app} == expected["apps"]
    assert {s.value for s in readout.by_segment} == {"seg0", "seg1"}
    transformer = next(lift for lift in ctr.lifts if lift.variant == "transformer")
    assert transformer.cuped is not None and transformer.cuped_theta is not None
    assert set(transformer.cuped_theta) == {"pre_clicks", "pre_impressions"}
    assert transformer.primary.relative_ci_low < 0.4 < transformer.primary.relative_ci_high
    assert transformer.primary.p_value < 0.05


def test_served_log_without_start_has_no_pre_period_and_says_so(served) -> None:
    data_dir, expected = served
    units = units_from_event_log(data_dir, experiments_file=EXPERIMENTS_FILE)
    readout = experiment_readout(units)
    ctr = readout.overall.metrics[0]
    assert all(lift.cuped is None for lift in ctr.lifts)
    assert any("no --start" in n for n in readout.notes)
    assert {r.variant: r.denominator for r in ctr.variants} == expected["impressions"]


def test_experiment_arms_come_from_the_config_and_unknown_names_are_refused() -> None:
    name, split = experiment_arms(EXPERIMENTS_FILE, None)
    assert name == "ranker_vs_priors" and sum(split.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"experiment: 'nope' is not in .*ranker_vs_priors"):
        experiment_arms(EXPERIMENTS_FILE, "nope")


# -- the CLI --------------------------------------------------------------------------------


def test_cli_analyses_the_served_log_and_writes_json_html_png(served, tmp_path: Path) -> None:
    data_dir, _ = served
    out = tmp_path / "readout"
    result = CliRunner().invoke(
        experiment_app,
        [
            "analyze", "--data-dir", str(data_dir), "--experiments-file", str(EXPERIMENTS_FILE),
            "--experiment", "ranker_vs_priors", "--start", "2026-03-02", "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "transformer" in result.output
    page = (out / "readout.html").read_text()
    for variant in ("control", "transformer", "holdout", "app=rib", "segment=seg0"):
        assert variant in page
    assert "data:image/png;base64," in page
    assert (out / "lift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    payload = json.loads((out / "readout.json").read_text())
    assert payload["overall"]["srm"]["mismatch"] is False
    assert payload["window"]["start"].startswith("2026-03-02")


def test_cli_missing_column_is_named_with_the_columns_that_exist(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    synthetic_units(200, 0.0, seed=1).to_csv(path, index=False)
    result = CliRunner().invoke(
        experiment_app,
        ["analyze", "--table", str(path), "--outcome", "clickd", "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 2
    message = " ".join(result.output.split())  # rich wraps long lines
    assert "outcome: column 'clickd' not found" in message
    assert "columns are: customer_id, variant, impressions, clicks, segment" in message
    assert "Traceback" not in result.output


def test_cli_generic_table_with_split_covariate_and_segments(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    synthetic_units(4_000, 0.09, seed=2, pre_impressions=20).to_csv(path, index=False)
    out = tmp_path / "o"
    result = CliRunner().invoke(
        experiment_app,
        [
            "analyze", "--table", str(path), "--unit", "customer_id", "--variant", "variant",
            "--outcome", "clicks", "--denominator", "impressions", "--covariate", "pre_clicks",
            "--segment-column", "segment", "--expected-split", "control=0.5,treatment=0.5",
            "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "readout.json").read_text())
    lift = payload["overall"]["metrics"][0]["lifts"][0]
    assert lift["cuped"] is not None and lift["variance_reduction"] > 0
    assert {s["value"] for s in payload["by_segment"]} == {"mass", "affluent"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data-dir", "x"], "exactly one of --table"),
        (["--control", "nobody"], "control: no variant named 'nobody'"),
        (["--expected-split", "control=0.5,treatment"], "expected-split: 'treatment'"),
        (["--covariate", "tier"], "tier: must be numeric"),
    ],
)
def test_cli_refuses_bad_input_in_one_line(tmp_path: Path, extra: list[str], message: str) -> None:
    path = tmp_path / "export.parquet"
    synthetic_units(100, 0.0, seed=1).assign(tier="gold").to_parquet(path)
    args = ["analyze", "--table", str(path), "--outcome", "clicks", "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(experiment_app, args + extra)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output


def test_expected_split_parses_shares() -> None:
    assert parse_expected_split("control=0.5, treatment=0.5") == {"control": 0.5, "treatment": 0.5}
    with pytest.raises(ValueError, match="share of 'b' must be positive"):
        parse_expected_split("a=1,b=0")


# -- real data: Open Bandit's uniform-random vs Thompson-sampling logs -------------------------


def test_open_bandit_random_vs_thompson_sampling_matches_a_two_proportion_test(
    tmp_path: Path,
) -> None:
    folder = SHARED_DATA / "open_bandit"
    if not folder.is_dir():
        pytest.skip(f"real data folder {folder} does not exist")
    logs = [
        pd.read_csv(folder / policy / "all" / "all.csv", usecols=["timestamp", "click"]).assign(
            policy=policy
        )
        for policy in ("random", "bts")
    ]
    table = pd.concat(logs, ignore_index=True).reset_index(names="impression_id")
    path = tmp_path / "open_bandit.parquet"
    table.to_parquet(path)
    units = units_from_table(path, unit="impression_id", variant="policy", outcomes=["click"])
    readout = experiment_readout(units, control="random")
    paths = write_readout(readout, tmp_path / "report")
    click = readout.overall.metrics[0]
    rates = {r.variant: r.rate for r in click.variants}
    assert rates == pytest.approx({"random": 0.0038, "bts": 0.0042}, abs=5e-5)
    lift = click.lifts[0].raw
    clicks = table.groupby("policy")["click"].agg(["sum", "count"])
    reference = proportion.test_proportions_2indep(
        clicks.loc["bts", "sum"], clicks.loc["bts", "count"],
        clicks.loc["random", "sum"], clicks.loc["random", "count"],
        compare="diff", method="wald",
    )  # fmt: skip
    assert lift.absolute == pytest.approx(reference.diff, rel=1e-9)
    assert lift.p_value == pytest.approx(reference.pvalue, rel=1e-3)
    assert lift.p_value > 0.05  # 10,000 impressions per policy cannot tell 0.38% from 0.42%
    assert not readout.overall.srm.mismatch
    assert "bts" in paths.html.read_text()
