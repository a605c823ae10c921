"""After a traffic run: does everything add up, and what did the experiment show?

* accounting: requests sent = answered + counted errors; events sent = acknowledged = rows
  in the served Parquet log; every served impression in the log carries its arm;
* the online readout (the same code as ``persona experiment analyze --data-dir``): CTR per
  arm, lift with 95% intervals overall, per app and per segment, sample-ratio mismatch;
* relevance: NDCG@10 of each arm's ranking of the eligible products against the hidden truth,
  and the offline test NDCG@10 of the trained model and its baselines (training report);
* off-policy: the transformer arm's CTR estimated from the baseline arm's log alone
  (:mod:`monitoring.ope.slates`) next to the CTR it really had;
* guardrails per arm (:mod:`persona.simulator.traffic.guardrails`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from pydantic import BaseModel
from scipy import stats

from monitoring.experiments.readout import ExperimentReadout, SliceReadout, experiment_readout
from monitoring.experiments.report import write_readout
from monitoring.experiments.sources import units_from_event_log
from monitoring.ope.slates import SlateOpe, slate_ope
from persona.layout import parquet_glob
from persona.simulator.traffic.guardrails import ArmGuardrails, check_guardrails
from persona.simulator.traffic.population import Population
from persona.simulator.traffic.run import (
    BASELINE_ARM,
    ITEMS_FILE,
    REQUESTS_FILE,
    TrafficSummary,
)
from serving.config import load_experiments, read_yaml
from serving.rules import RuleSet

TREATMENT_ARM = "transformer"


class Accounting(BaseModel):
    requests_sent: int
    responses: int
    request_errors: int
    requests_add_up: bool
    events_sent: int
    events_acknowledged: int
    events_in_log: int
    events_add_up: bool
    impressions_in_log: int
    impressions_without_arm: int
    retries_429: int
    shadow_requests: int
    shadow_errors: int


class ArmRelevance(BaseModel):
    variant: str
    requests: int
    ndcg10: float
    ci_low: float
    ci_high: float


class Lift(BaseModel):
    slice: str
    variant: str
    control_rate: float
    variant_rate: float
    relative: float
    ci_low: float
    ci_high: float
    p_value: float
    units: dict[str, int]
    srm_p_value: float


class OpeCheck(BaseModel):
    estimator: str
    estimate: float
    ci_low: float
    ci_high: float
    observed_ctr: float
    observed_inside: bool


class AbReport(BaseModel):
    experiment: str
    accounting: Accounting
    ctr: dict[str, dict[str, float]]  # variant -> rate, ci_low, ci_high, impressions, clicks
    lifts: list[Lift]
    srm_p_value: float
    srm_mismatch: bool
    relevance: list[ArmRelevance]
    relevance_lift: float | None
    offline_ndcg10: dict[str, float]
    offline_lift_vs_segment_popularity: float | None
    ope: list[OpeCheck]
    ope_details: dict[str, Any]
    guardrails: list[ArmGuardrails]
    guardrails_held: bool
    readout: dict[str, str]
    notes: list[str]


def count_event_log(data_dir: Path) -> tuple[int, int, int]:
    """(events, impressions, impressions without a variant) in the served Parquet log."""
    log = data_dir / "serving" / "events"
    if not any(log.rglob("*.parquet")):
        return 0, 0, 0
    with duckdb.connect() as con:
        row = con.execute(
            f"""SELECT count(*), count(*) FILTER (WHERE event_type = 'impression'),
                       count(*) FILTER (WHERE event_type = 'impression' AND variant IS NULL)
                FROM read_parquet('{parquet_glob(log)}', hive_partitioning = false)"""
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _lifts(slice_: SliceReadout) -> list[Lift]:
    out = []
    for metric in slice_.metrics:
        if metric.metric != "ctr":
            continue
        rates = {r.variant: r.rate for r in metric.variants}
        for lift in metric.lifts:
            est = lift.primary
            out.append(
                Lift(
                    slice=slice_.name,
                    variant=lift.variant,
                    control_rate=rates.get(lift.control, float("nan")),
                    variant_rate=rates.get(lift.variant, float("nan")),
                    relative=est.relative,
                    ci_low=est.relative_ci_low,
                    ci_high=est.relative_ci_high,
                    p_value=est.p_value,
                    units=slice_.units,
                    srm_p_value=slice_.srm.p_value,
                )
            )
    return out


def _relevance(requests: pd.DataFrame) -> list[ArmRelevance]:
    out = []
    for variant, arm in requests.groupby("variant", sort=True):
        values = arm["truth_ndcg10"].dropna().to_numpy()
        if len(values) < 2:
            continue
        mean = float(values.mean())
        half = float(stats.sem(values) * stats.t.ppf(0.975, len(values) - 1))
        out.append(
            ArmRelevance(
                variant=str(variant),
                requests=len(values),
                ndcg10=mean,
                ci_low=mean - half,
                ci_high=mean + half,
            )
        )
    return out


def _control_log(data_dir: Path) -> pd.DataFrame:
    """The baseline arm's served impressions with their clicks (served log only)."""
    glob = parquet_glob(data_dir / "serving" / "events")
    with duckdb.connect() as con:
        return con.execute(
            f"""WITH ev AS (SELECT * FROM read_parquet('{glob}', hive_partitioning = false)),
                imp AS (SELECT request_id, product_id, position, propensity FROM ev
                        WHERE event_type = 'impression' AND variant = $arm),
                clk AS (SELECT DISTINCT request_id, product_id FROM ev WHERE event_type = 'click')
                SELECT imp.*, (clk.request_id IS NOT NULL)::INT AS reward
                FROM imp LEFT JOIN clk USING (request_id, product_id)""",
            {"arm": BASELINE_ARM},
        ).df()


def analyse(
    data_dir: Path,
    out_dir: Path,
    *,
    pop: Population,
    config_dir: Path,
    experiment: str,
    summary: TrafficSummary,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> AbReport:
    """Everything the issue asks for, from the ledger and the served log; writes the readout
    (HTML, JSON, PNG) under ``out_dir/readout`` and returns the report."""
    notes: list[str] = []
    items = pd.read_parquet(out_dir / ITEMS_FILE)
    requests = pd.read_parquet(out_dir / REQUESTS_FILE)
    events_in_log, impressions_in_log, without_arm = count_event_log(data_dir)
    rec = summary.recommendations
    accounting = Accounting(
        requests_sent=rec.sent,
        responses=rec.ok,
        request_errors=rec.failed,
        requests_add_up=rec.sent == rec.ok + rec.failed,
        events_sent=summary.events_sent,
        events_acknowledged=summary.events_acknowledged,
        events_in_log=events_in_log,
        events_add_up=summary.events_sent == summary.events_acknowledged == events_in_log,
        impressions_in_log=impressions_in_log,
        impressions_without_arm=without_arm,
        retries_429=rec.retries_429 + summary.events.retries_429 + summary.shadow.retries_429,
        shadow_requests=summary.shadow.sent,
        shadow_errors=summary.shadow.failed,
    )
    experiments_file = config_dir / "experiments.yaml"
    units = units_from_event_log(data_dir, experiments_file=experiments_file, experiment=experiment)
    readout: ExperimentReadout = experiment_readout(units, control=BASELINE_ARM)
    paths = write_readout(readout, out_dir / "readout")
    overall = readout.overall
    ctr: dict[str, dict[str, float]] = {}
    for metric in overall.metrics:
        if metric.metric == "ctr":
            for r in metric.variants:
                ctr[r.variant] = {
                    "rate": r.rate,
                    "ci_low": r.ci_low,
                    "ci_high": r.ci_high,
                    "impressions": r.denominator,
                    "clicks": r.numerator,
                    "customers": r.units,
                }
    lifts = [x for s in (overall, *readout.by_app, *readout.by_segment) for x in _lifts(s)]

    relevance = _relevance(requests)
    by_arm = {r.variant: r.ndcg10 for r in relevance}
    relevance_lift = (
        by_arm[TREATMENT_ARM] / by_arm[BASELINE_ARM] - 1
        if TREATMENT_ARM in by_arm and BASELINE_ARM in by_arm
        else None
    )
    offline, offline_lift = _offline(data_dir)

    spec = load_experiments(experiments_file).experiments[experiment]
    epsilon = {v.name: v.exploration for v in spec.variants}
    rules = read_yaml(config_dir / "rules.yaml", RuleSet)
    assert isinstance(rules, RuleSet)
    control_requests = requests.loc[requests["variant"] == BASELINE_ARM].rename(
        columns={"shadow_ranked": "target_ranked"}
    )
    ope_checks: list[OpeCheck] = []
    ope_details: dict[str, Any] = {}
    observed = ctr.get(TREATMENT_ARM, {}).get("rate")
    try:
        result: SlateOpe = slate_ope(
            _control_log(data_dir),
            control_requests,
            category={p.product_id: p.category for p in pop.catalogue.products},
            diversity_cap=rules.diversity.max_per_category,
            logging_epsilon=epsilon[BASELINE_ARM],
            target_epsilon=epsilon[TREATMENT_ARM],
            n_bootstrap=n_bootstrap,
            seed=seed,
        )
        ope_details = result.model_dump(exclude={"estimates"})
        for e in result.estimates:
            ope_checks.append(
                OpeCheck(
                    estimator=e.name,
                    estimate=e.value,
                    ci_low=e.ci_low,
                    ci_high=e.ci_high,
                    observed_ctr=float(observed) if observed is not None else float("nan"),
                    observed_inside=observed is not None and e.covers(float(observed)),
                )
            )
    except ValueError as error:
        notes.append(f"off-policy estimate not computed: {error}")

    guardrails = check_guardrails(items, pop, config_dir)
    notes += list(readout.notes)
    return AbReport(
        experiment=experiment,
        accounting=accounting,
        ctr=ctr,
        lifts=lifts,
        srm_p_value=overall.srm.p_value,
        srm_mismatch=overall.srm.mismatch,
        relevance=relevance,
        relevance_lift=relevance_lift,
        offline_ndcg10=offline,
        offline_lift_vs_segment_popularity=offline_lift,
        ope=ope_checks,
        ope_details=ope_details,
        guardrails=guardrails,
        guardrails_held=all(g.held for g in guardrails),
        readout={"html": str(paths.html), "json": str(paths.json), "png": str(paths.png)},
        notes=notes,
    )


def _offline(data_dir: Path) -> tuple[dict[str, float], float | None]:
    """Test NDCG@10 (candidates protocol) of the model and baselines from the training run."""
    prepared = data_dir / "prepared.json"
    if not prepared.exists():
        return {}, None
    summary = json.loads(prepared.read_text()).get("run_summary") or {}
    test = summary.get("test", {})
    out = {
        name.split("/")[0]: float(m["ndcg@10"])
        for name, m in test.items()
        if name.endswith("/candidates") and m.get("ndcg@10") is not None
    }
    lift = None
    if "transformer" in out and out.get("segment_popularity"):
        lift = out["transformer"] / out["segment_popularity"] - 1
    return out, lift
