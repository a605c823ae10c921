"""Off-policy evaluation: estimators on a synthetic bandit whose true value is known, input
validation, and the validation on the real Open Bandit logs (BTS's observed click rate inside
the estimates' 95% intervals), the report files and the ``persona ope`` CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from monitoring.ope.estimators import (
    Estimate,
    LoggedBandit,
    cross_fitted_reward_model,
    doubly_robust_terms,
    estimate,
    logged_bandit_from_tables,
)
from monitoring.ope.open_bandit import (
    CampaignValidation,
    evaluation_policy_from_log,
    read_open_bandit_log,
    validate_on_open_bandit,
)
from monitoring.ope.report import open_bandit_report, write_open_bandit_report
from persona.cli.ope import ope_app

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
OPEN_BANDIT = SHARED_DATA / "open_bandit"
#: shared/data/README.md: BTS's observed click rate per campaign (10,000 impressions each).
BTS_OBSERVED = {"all": 0.0042, "men": 0.0069, "women": 0.0046}
#: docs/CALIBRATION.md: SNIPS estimate of BTS from the random log.
CALIBRATION_SNIPS = {"all": 0.0063, "men": 0.0055, "women": 0.0059}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- a synthetic bandit with a known true value -------------------------------------------


@dataclass(frozen=True)
class SyntheticBandit:
    """Two binary context features (4 equally likely customer types), 8 actions, Bernoulli
    rewards; the logging policy is a known random softmax per type, the target policy a softmax
    of the click probabilities (so it is better than the logging one)."""

    click_probability: np.ndarray  # type × action
    logging_policy: np.ndarray  # type × action
    target_policy: np.ndarray  # type × action

    @property
    def true_value(self) -> float:
        """The target policy's exact mean reward: types are equally likely."""
        return float((self.target_policy * self.click_probability).sum(axis=1).mean())

    def log(self, n_rounds: int, seed: int) -> tuple[LoggedBandit, np.ndarray, np.ndarray]:
        """Rounds under the logging policy; the target distribution and the type per round."""
        rng = np.random.default_rng(seed)
        types = rng.integers(0, 4, size=n_rounds)
        cumulative = self.logging_policy[types].cumsum(axis=1)
        actions = (rng.random((n_rounds, 1)) > cumulative).sum(axis=1)
        rewards = rng.random(n_rounds) < self.click_probability[types, actions]
        context = np.column_stack([types // 2, types % 2]).astype(float)
        logged = LoggedBandit(
            actions=actions,
            rewards=rewards.astype(float),
            propensities=self.logging_policy[types, actions],
            context=context,
            n_actions=8,
        )
        return logged, self.target_policy[types], types


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def bandit() -> SyntheticBandit:
    rng = np.random.default_rng(7)
    # Additive in the logit (action effect + two context effects), as the reward model assumes.
    logit = rng.normal(0.0, 1.0, size=8)[None, :] + np.array([[0.0], [0.6], [-0.8], [-0.2]])
    click = 1 / (1 + np.exp(-logit))
    return SyntheticBandit(
        click_probability=click,
        logging_policy=_softmax(rng.normal(0.0, 1.0, size=(4, 8))),
        target_policy=_softmax(6.0 * click),  # favours the better actions
    )


@pytest.fixture(scope="module")
def large_log(bandit: SyntheticBandit) -> tuple[LoggedBandit, np.ndarray, list[Estimate]]:
    logged, target, _ = bandit.log(20_000, seed=1)
    return logged, target, estimate(logged, target, n_bootstrap=1000, seed=0)


def test_every_estimator_covers_the_true_value(
    bandit: SyntheticBandit, large_log: tuple[LoggedBandit, np.ndarray, list[Estimate]]
) -> None:
    logged, _, estimates = large_log
    assert [e.name for e in estimates] == ["ips", "snips", "dr"]
    # The target policy is better than the logging one, so the test can tell them apart.
    assert bandit.true_value - logged.rewards.mean() > 0.05
    for item in estimates:
        assert item.covers(bandit.true_value), item
        assert item.ci_high - item.ci_low < 0.04, item


def test_snips_and_dr_have_lower_variance_than_ips(
    large_log: tuple[LoggedBandit, np.ndarray, list[Estimate]],
) -> None:
    _, _, estimates = large_log
    se = {e.name: e.standard_error for e in estimates}
    assert se["snips"] < 0.9 * se["ips"]
    assert se["dr"] < 0.9 * se["ips"]


@pytest.mark.slow
def test_intervals_cover_the_truth_at_about_the_nominal_rate(bandit: SyntheticBandit) -> None:
    replications = 40
    hits = {"ips": 0, "snips": 0, "dr": 0}
    values: dict[str, list[float]] = {name: [] for name in hits}
    for seed in range(replications):
        logged, target, _ = bandit.log(2_000, seed=100 + seed)
        for item in estimate(logged, target, n_bootstrap=400, seed=seed):
            hits[item.name] += item.covers(bandit.true_value)
            values[item.name].append(item.value)
    for name, count in hits.items():
        assert count / replications >= 0.85, (name, count)
        spread = np.std(values[name]) / np.sqrt(replications)
        assert abs(np.mean(values[name]) - bandit.true_value) < 3 * spread, name


def test_dr_with_a_zero_reward_model_is_ips_and_with_the_true_one_is_tighter(
    bandit: SyntheticBandit, large_log: tuple[LoggedBandit, np.ndarray, list[Estimate]]
) -> None:
    logged, target, estimates = large_log
    ips = estimates[0]
    zero = doubly_robust_terms(logged, target, np.zeros_like(target))
    assert zero.mean() == pytest.approx(ips.value, rel=1e-12)
    types = (2 * logged.context[:, 0] + logged.context[:, 1]).astype(int)  # type: ignore[index]
    oracle = estimate(
        logged,
        target,
        estimators=["dr"],
        reward_predictions=bandit.click_probability[types],
        n_bootstrap=500,
    )[0]
    assert oracle.covers(bandit.true_value)
    assert oracle.standard_error < 0.8 * ips.standard_error


def test_cross_fitted_reward_model_learns_the_click_probabilities(
    bandit: SyntheticBandit, large_log: tuple[LoggedBandit, np.ndarray, list[Estimate]]
) -> None:
    logged, _, _ = large_log
    predictions = cross_fitted_reward_model(logged, seed=3)
    types = (2 * logged.context[:, 0] + logged.context[:, 1]).astype(int)  # type: ignore[index]
    truth = bandit.click_probability[types]
    assert predictions.shape == truth.shape
    assert np.corrcoef(predictions.ravel(), truth.ravel())[0, 1] > 0.9
    np.testing.assert_array_equal(predictions, cross_fitted_reward_model(logged, seed=3))


def test_estimates_are_reproducible_for_a_seed(bandit: SyntheticBandit) -> None:
    logged, target, _ = bandit.log(3_000, seed=7)
    first = estimate(logged, target, n_bootstrap=300, seed=11)
    assert first == estimate(logged, target, n_bootstrap=300, seed=11)
    other = estimate(logged, target, n_bootstrap=300, seed=12)
    assert [e.ci_low for e in other] != [e.ci_low for e in first]
    # One-dimensional targets (the logged action's probability) serve IPS and SNIPS.
    rows = np.arange(logged.n_rounds)
    ips_snips = estimate(
        logged, target[rows, logged.actions], estimators=["ips", "snips"], n_bootstrap=300, seed=11
    )
    assert ips_snips == first[:2]


# --- input validation ---------------------------------------------------------------------


def _small_log(**overrides: object) -> LoggedBandit:
    fields: dict[str, object] = {
        "actions": np.array([0, 1, 2, 1]),
        "rewards": np.array([0.0, 1.0, 0.0, 1.0]),
        "propensities": np.array([0.2, 0.5, 0.3, 0.5]),
        "n_actions": 3,
    }
    return LoggedBandit(**{**fields, **overrides})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"propensities": np.array([0.2, 0.0, 0.3, 0.5])}, "propensities"),
        ({"propensities": np.array([0.2, 1.5, 0.3, 0.5])}, "propensities"),
        ({"propensities": np.array([0.2, 0.5, 0.3])}, "propensities"),
        ({"rewards": np.array([0.0, np.nan, 0.0, 1.0])}, "rewards"),
        ({"actions": np.array([0.0, 1.0, 2.0, 1.0])}, "actions"),
        ({"actions": np.array([0, 1, 3, 1])}, "actions"),
        ({"actions": np.array([], dtype=int)}, "actions"),
        ({"positions": np.array([1, 2, 3])}, "positions"),
        ({"context": np.ones((3, 2))}, "context"),
    ],
)
def test_bad_logs_are_refused_naming_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        _small_log(**overrides)


@pytest.mark.parametrize(
    ("target", "kwargs", "field"),
    [
        (np.full((4, 2), 0.5), {}, "target_probabilities"),
        (np.full((4, 3), 0.5), {}, "target_probabilities"),
        (np.array([0.1, 0.2, np.nan, 0.3]), {}, "target_probabilities"),
        (np.array([0.1, 0.2, 0.3, 0.3]), {}, "target_probabilities"),  # dr needs 2-D
        (np.full((4, 3), 1 / 3), {"estimators": ["ipw"]}, "estimators"),
        (np.full((4, 3), 1 / 3), {"n_bootstrap": 10}, "n_bootstrap"),
        (np.full((4, 3), 1 / 3), {"confidence_level": 1.5}, "confidence_level"),
        (np.full((4, 3), 1 / 3), {"reward_predictions": np.zeros((4, 2))}, "reward_predictions"),
    ],
)
def test_bad_targets_and_settings_are_refused_naming_the_field(
    target: np.ndarray, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        estimate(_small_log(), target, n_folds=2, **kwargs)  # type: ignore[arg-type]


def test_tables_give_per_round_and_per_position_targets() -> None:
    logged = pd.DataFrame(
        {
            "request_id": ["r1", "r2", "r3"],
            "product_id": ["card_gold", "loan_home", "card_gold"],
            "slot": [1, 2, 1],
            "clicked": [1, 0, 0],
            "p": [0.5, 0.25, 0.5],
        }
    )
    names = {"action_column": "product_id", "reward_column": "clicked", "propensity_column": "p"}
    per_slot = pd.DataFrame(
        {
            "product_id": ["card_gold", "loan_home", "loan_home", "deposit_fixed"],
            "slot": [1, 1, 2, 2],
            "probability": [0.75, 0.25, 0.4, 0.6],
        }
    )
    bandit, target = logged_bandit_from_tables(logged, per_slot, position_column="slot", **names)
    assert bandit.n_actions == 3
    np.testing.assert_allclose(target.sum(axis=1), 1.0)
    rows = np.arange(3)
    np.testing.assert_allclose(target[rows, bandit.actions], [0.75, 0.4, 0.75])
    np.testing.assert_array_equal(bandit.positions, [1, 2, 1])  # type: ignore[arg-type]

    per_round = pd.DataFrame(
        {"request_id": ["r1", "r2", "r3"], "product_id": ["loan_home"] * 3, "probability": 1.0}
    )
    bandit, target = logged_bandit_from_tables(
        logged, per_round, round_column="request_id", **names
    )
    assert target[np.arange(3), bandit.actions].tolist() == [0.0, 1.0, 0.0]

    with pytest.raises(
        ValueError, match=r"^target\.probability: probabilities of 1 sum to 0\.250000"
    ):
        logged_bandit_from_tables(logged, per_slot.iloc[1:], position_column="slot", **names)
    with pytest.raises(ValueError, match=r"^target\.request_id: no target distribution for 'r3'"):
        logged_bandit_from_tables(logged, per_round.iloc[:2], round_column="request_id", **names)
    with pytest.raises(ValueError, match=r"^logged: missing column\(s\) reward"):
        logged_bandit_from_tables(logged, per_slot, action_column="product_id")


# --- the real Open Bandit logs ------------------------------------------------------------


@pytest.fixture(scope="module")
def open_bandit() -> Path:
    if not OPEN_BANDIT.is_dir():
        pytest.skip(f"real data folder {OPEN_BANDIT} does not exist")
    return OPEN_BANDIT


@pytest.fixture(scope="module")
def validations(open_bandit: Path) -> list[CampaignValidation]:
    return validate_on_open_bandit(open_bandit, n_bootstrap=2000, seed=0)


@pytest.mark.slow
def test_bts_click_rate_lies_inside_the_snips_and_dr_intervals(
    validations: list[CampaignValidation],
) -> None:
    assert [v.campaign for v in validations] == ["all", "men", "women"]
    for validation in validations:
        observed = BTS_OBSERVED[validation.campaign]
        assert validation.observed_ctr == pytest.approx(observed)
        assert validation.n_rounds_logged == validation.n_rounds_target == 10_000
        for name in ("snips", "dr"):  # SNIPS is the headline estimator
            item = validation.estimate_of(name)
            assert item.ci_low <= observed <= item.ci_high, (validation.campaign, item)
            assert validation.covered[name]
            assert validation.relative_error[name] == pytest.approx(item.value / observed - 1)
            # Not a vacuous interval: far narrower than the [0, 1] a click rate can take.
            assert item.ci_high - item.ci_low < 0.01


@pytest.mark.slow
def test_snips_is_near_the_calibrated_reference(validations: list[CampaignValidation]) -> None:
    for validation in validations:
        snips = validation.estimate_of("snips")
        assert snips.value == pytest.approx(CALIBRATION_SNIPS[validation.campaign], abs=5e-4)
        assert abs(validation.relative_error["snips"]) < 0.6


@pytest.mark.slow
def test_report_writes_json_and_png(
    validations: list[CampaignValidation], open_bandit: Path, tmp_path: Path
) -> None:
    report = open_bandit_report(validations, source=open_bandit, seed=0)
    paths = write_open_bandit_report(report, tmp_path)
    document = json.loads(paths.json.read_text())
    assert document["headline_estimator"] == "snips"
    assert document["covered_in_every_campaign"] == {"ips": True, "snips": True, "dr": True}
    assert [c["campaign"] for c in document["campaigns"]] == ["all", "men", "women"]
    assert paths.png.read_bytes()[:8] == PNG_MAGIC


def _write_log(path: Path, rows: list[tuple[int, int, int, float]]) -> None:
    frame = pd.DataFrame(rows, columns=["item_id", "position", "click", "propensity_score"])
    frame.insert(0, "timestamp", "2019-11-24 00:00:00+00:00")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path)


def test_evaluation_policy_is_the_mean_propensity_normalised_per_position(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bts" / "men" / "men.csv"
    _write_log(
        path,
        [(0, 1, 0, 0.6), (0, 1, 1, 0.2), (2, 1, 0, 0.6), (1, 2, 0, 0.3), (2, 3, 0, 0.5)],
    )
    log = read_open_bandit_log(tmp_path, "bts", "men", n_items=3)
    policy = evaluation_policy_from_log(log, n_items=3)
    # Position 1: item 0 mean 0.4, item 2 0.6; position 2 only item 1; position 3 only item 2.
    np.testing.assert_allclose(policy, [[0.4, 0.0, 0.6], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([(0, 4, 0, 0.5)], "column position"),
        ([(0, 1, 2, 0.5)], "column click"),
        ([(0, 1, 0, 0.0)], "column propensity_score"),
        ([(5, 1, 0, 0.5)], "column item_id"),
    ],
)
def test_bad_open_bandit_logs_are_refused_naming_the_column(
    tmp_path: Path, rows: list[tuple[int, int, int, float]], message: str
) -> None:
    _write_log(tmp_path / "random" / "women" / "women.csv", rows)
    with pytest.raises(ValueError, match=message):
        read_open_bandit_log(tmp_path, "random", "women", n_items=3)


def test_missing_columns_and_campaigns_are_named(tmp_path: Path) -> None:
    path = tmp_path / "random" / "all" / "all.csv"
    path.parent.mkdir(parents=True)
    pd.DataFrame({"item_id": [0], "position": [1], "click": [0]}).to_csv(path)
    with pytest.raises(ValueError, match=r"missing column\(s\) propensity_score"):
        read_open_bandit_log(tmp_path, "random", "all", n_items=1)
    with pytest.raises(ValueError, match=r"^campaign: 'kids'"):
        read_open_bandit_log(tmp_path, "random", "kids", n_items=1)


# --- the CLI --------------------------------------------------------------------------------


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_cli_open_bandit_writes_report_and_prints_the_table(
    runner: CliRunner, open_bandit: Path, tmp_path: Path
) -> None:
    result = runner.invoke(
        ope_app,
        ["open-bandit", "--campaign", "men", "--bootstrap", "500", "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    assert "SNIPS" in result.output and "0.690%" in result.output
    document = json.loads((tmp_path / "ope_open_bandit.json").read_text())
    assert [c["campaign"] for c in document["campaigns"]] == ["men"]
    assert document["n_bootstrap"] == 500
    assert (tmp_path / "ope_open_bandit.png").read_bytes()[:8] == PNG_MAGIC


def test_cli_refuses_bad_input_in_one_line(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(ope_app, ["open-bandit", "--bootstrap", "10", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "bootstrap" in result.output
    result = runner.invoke(
        ope_app, ["open-bandit", "--source", str(tmp_path), "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert "Traceback" not in result.output


def test_cli_log_estimates_a_target_table_on_a_parquet_log(
    runner: CliRunner, bandit: SyntheticBandit, tmp_path: Path
) -> None:
    logged, _, types = bandit.log(4_000, seed=5)
    products = np.array([f"product_{a}" for a in range(8)])
    pd.DataFrame(
        {
            "product_id": products[logged.actions],
            "clicked": logged.rewards,
            "propensity": logged.propensities,
            "young": logged.context[:, 0],  # type: ignore[index]
            "urban": logged.context[:, 1],  # type: ignore[index]
        }
    ).to_parquet(tmp_path / "log.parquet")
    # A context-free candidate: always the type-averaged target distribution.
    candidate = bandit.target_policy.mean(axis=0)
    truth = float((bandit.click_probability @ candidate).mean())
    pd.DataFrame({"product_id": products, "probability": candidate}).to_csv(
        tmp_path / "target.csv", index=False
    )
    args = ["log", "--logged", str(tmp_path / "log.parquet"), "--target"]
    args += [str(tmp_path / "target.csv"), "--action-column", "product_id"]
    args += ["--reward-column", "clicked", "--context-column", "young", "--context-column"]
    args += ["urban", "--bootstrap", "500", "--out", str(tmp_path / "out")]
    result = runner.invoke(ope_app, args)
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "out" / "ope.json").read_text())
    assert document["n_rounds"] == 4_000
    assert [e["name"] for e in document["estimates"]] == ["ips", "snips", "dr"]
    for item in document["estimates"]:
        assert item["ci_low"] <= truth <= item["ci_high"], item
    assert (tmp_path / "out" / "ope.png").read_bytes()[:8] == PNG_MAGIC
    assert types.size == 4_000

    missing = runner.invoke(ope_app, [*args[:7], "--reward-column", "reward"])
    assert missing.exit_code == 2
    assert "missing column(s) reward" in missing.output
    assert "Traceback" not in missing.output
    (tmp_path / "target.txt").write_text("x")
    wrong = runner.invoke(
        ope_app,
        [
            "log",
            "--logged",
            str(tmp_path / "log.parquet"),
            "--target",
            str(tmp_path / "target.txt"),
        ],
    )
    assert wrong.exit_code == 2
    assert "--target" in wrong.output
