"""Where experiment data comes from: the served-impression log or any CSV/Parquet export.

Both sources end in the same :class:`ExperimentUnits`: one row per randomisation unit (and per
app where the source knows the app), its variant, summed outcome counts and covariates. The
statistics in :mod:`monitoring.experiments.readout` never see raw events.

Served-impression log (``<data_dir>/serving/events/event_date=*/*.parquet``, canonical EVENTS):

* a customer is *exposed* in an app from their first impression there whose ``variant`` is one
  of the experiment's arms (and inside ``[start, end)``); customers seen in several arms are
  left out and counted in the notes (assignment is sticky, so that is a data problem);
* outcomes are the customer's clicks, applies and purchases in that app from the first exposure
  on that carry a ``request_id`` (so they join back to a served slate), divided by the exposed
  impressions: CTR, apply rate and purchase rate per impression;
* with ``start``, the same counts before ``start`` are the CUPED covariates of each rate;
* segments: the latest ``segment_id`` per customer of ``features/customer_segment``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import duckdb
import pandas as pd

from persona.layout import DataLayout, parquet_glob

#: Column names of :attr:`ExperimentUnits.frame` (what the source called them is kept aside).
UNIT: Final = "unit"
VARIANT: Final = "variant"
APP: Final = "app"
SEGMENT: Final = "segment"
_RESERVED: Final = (UNIT, VARIANT, APP, SEGMENT)

#: Served-log outcomes: metric name -> (event type, count column, pre-period count column).
SERVED_OUTCOMES: Final[dict[str, tuple[str, str, str]]] = {
    "ctr": ("click", "clicks", "pre_clicks"),
    "apply_rate": ("apply", "applies", "pre_applies"),
    "purchase_rate": ("purchase", "purchases", "pre_purchases"),
}
_SERVED_DENOMINATOR: Final = "impressions"
_PRE_DENOMINATOR: Final = "pre_impressions"
_EVENT_COLUMNS: Final = ("customer_id", "app", "event_type", "event_timestamp", "request_id")


@dataclass(frozen=True)
class Metric:
    """A per-unit outcome: ``sum(numerator) / sum(denominator)`` over the units of an arm
    (a ratio metric such as CTR), or the mean of ``numerator`` per unit without a denominator.
    ``covariates`` are pre-experiment columns used for CUPED."""

    name: str
    numerator: str
    denominator: str | None = None
    covariates: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """How the metric reads in a report, e.g. ``clicks / impressions``."""
        return (
            self.numerator if self.denominator is None else f"{self.numerator} / {self.denominator}"
        )


@dataclass(frozen=True)
class ExperimentUnits:
    """Per-unit experiment data: the one input of every readout.

    ``frame`` has one row per unit (per unit and app when it has an ``app`` column) with the
    columns ``unit``, ``variant``, optionally ``app`` and ``segment``, and the numeric columns
    the metrics name. Numerators, denominators and served-log covariates are counts that add up
    across apps; columns in ``unit_constant_columns`` hold one value per unit (not summed).
    """

    frame: pd.DataFrame
    metrics: tuple[Metric, ...]
    source: str
    unit_name: str
    expected_split: dict[str, float] | None = None
    experiment: str | None = None
    default_control: str | None = None
    unit_constant_columns: tuple[str, ...] = ()
    window: dict[str, str | None] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def has_apps(self) -> bool:
        return APP in self.frame.columns

    @property
    def has_segments(self) -> bool:
        return SEGMENT in self.frame.columns

    def per_unit(self) -> pd.DataFrame:
        """One row per unit: counts summed over apps, unit-level columns taken once."""
        if not self.has_apps:
            return self.frame
        numeric = sorted(
            {c for m in self.metrics for c in (m.numerator, m.denominator, *m.covariates) if c}
            - set(self.unit_constant_columns)
        )
        how: dict[str, str] = {VARIANT: "first", **{c: "sum" for c in numeric}}
        for column in (SEGMENT, *self.unit_constant_columns):
            if column in self.frame.columns:
                how[column] = "first"
        return self.frame.groupby(UNIT, sort=True).agg(how).reset_index()


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet file (or a folder of Parquet files) into pandas."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"table: {path} does not exist")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix in (".csv", ".txt"):
        return pd.read_csv(path)
    raise ValueError(f"table: {path.name} is neither .csv nor .parquet")


def require_columns(
    available: Sequence[str], wanted: Iterable[tuple[str, str]], where: str
) -> None:
    """ValueError naming the option and the first column of ``wanted`` ((option, column)
    pairs) that ``available`` lacks, listing what exists."""
    for option, column in wanted:
        if column not in available:
            raise ValueError(
                f"{option}: column {column!r} not found in {where}; "
                f"columns are: {', '.join(map(str, available))}"
            )


def units_from_table(
    path: Path,
    *,
    unit: str,
    variant: str,
    outcomes: Sequence[str],
    denominator: str | None = None,
    covariates: Sequence[str] = (),
    segment_column: str | None = None,
    app_column: str | None = None,
    expected_split: Mapping[str, float] | None = None,
) -> ExperimentUnits:
    """Per-unit data from a table with a unit id, a variant and outcome columns (one row per
    unit, or many rows per unit that are summed: e.g. one row per impression). Each outcome
    becomes a metric over ``denominator`` (or per unit); every covariate (one value per unit)
    adjusts every metric with CUPED."""
    if not outcomes:
        raise ValueError("outcome: name at least one outcome column")
    table = read_table(path)
    wanted = [("unit", unit), ("variant", variant), *(("outcome", c) for c in outcomes)]
    wanted += [("denominator", denominator)] if denominator else []
    wanted += [("covariate", c) for c in covariates]
    wanted += [("segment-column", segment_column)] if segment_column else []
    wanted += [("app-column", app_column)] if app_column else []
    require_columns(list(table.columns), wanted, path.name)
    both = sorted(set(covariates) & {*outcomes, denominator})
    if both:
        raise ValueError(f"covariate: {both[0]!r} is also an outcome or the denominator")
    numeric = list(dict.fromkeys([*outcomes, *([denominator] if denominator else []), *covariates]))
    clash = sorted(set(numeric) & set(_RESERVED))
    if clash:
        raise ValueError(f"outcome: column name(s) {clash} clash with {list(_RESERVED)}; rename")
    for column in [unit, variant, *numeric, *filter(None, [segment_column, app_column])]:
        nulls = int(table[column].isna().sum())
        if nulls:
            raise ValueError(f"{column}: {nulls} empty value(s); fill or drop those rows first")
    for column in numeric:
        if not (
            pd.api.types.is_numeric_dtype(table[column])
            or pd.api.types.is_bool_dtype(table[column])
        ):
            raise ValueError(f"{column}: must be numeric, got {table[column].dtype}")

    frame = pd.DataFrame({UNIT: table[unit], VARIANT: table[variant].astype(str)})
    for column in numeric:
        frame[column] = table[column].astype(float)
    if segment_column:
        frame[SEGMENT] = table[segment_column].astype(str)
    if app_column:
        frame[APP] = table[app_column].astype(str)
    for column in [*covariates, *([SEGMENT] if segment_column else [])]:
        spread = frame.groupby(UNIT)[column].nunique()
        if (spread > 1).any():
            bad = spread.index[spread > 1][0]
            name = segment_column if column == SEGMENT else column
            raise ValueError(f"{name}: varies within unit {bad!r}; give one value per unit")

    notes: list[str] = []
    frame, dropped = _drop_units_in_several_variants(frame)
    if dropped:
        notes.append(f"{dropped} unit(s) appear in several variants and were left out")
    keys = [UNIT, APP] if app_column else [UNIT]
    sums = {c: "sum" for c in [*outcomes, *([denominator] if denominator else [])]}
    firsts = {c: "first" for c in [VARIANT, *covariates, *([SEGMENT] if segment_column else [])]}
    frame = frame.groupby(keys, sort=True).agg(firsts | sums).reset_index()
    metrics = tuple(Metric(o, o, denominator, tuple(covariates)) for o in outcomes)
    return ExperimentUnits(
        frame=frame,
        metrics=metrics,
        source=str(path),
        unit_name=unit,
        expected_split=dict(expected_split) if expected_split else None,
        default_control="control",
        unit_constant_columns=tuple(covariates),
        notes=tuple(notes),
    )


def _drop_units_in_several_variants(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    counts = frame.groupby(UNIT)[VARIANT].nunique()
    several = counts.index[counts > 1]
    if len(several) == 0:
        return frame, 0
    return frame[~frame[UNIT].isin(several)], len(several)


def experiment_arms(experiments_file: Path, experiment: str | None) -> tuple[str, dict[str, float]]:
    """The experiment's name and the expected share of customers per arm (holdout included),
    from ``experiments.yaml``; with one experiment defined, ``experiment`` may be omitted."""
    from serving.config import load_experiments

    config = load_experiments(Path(experiments_file))
    defined = sorted(config.experiments)
    if experiment is None:
        if len(defined) != 1:
            raise ValueError(
                f"experiment: {experiments_file} defines {len(defined)} experiments "
                f"({', '.join(defined) or 'none'}); name one with --experiment"
            )
        experiment = defined[0]
    if experiment not in config.experiments:
        raise ValueError(
            f"experiment: {experiment!r} is not in {experiments_file} (have {', '.join(defined)})"
        )
    spec = config.experiments[experiment]
    split: dict[str, float] = {}
    if spec.holdout > 0 and spec.holdout_variant is not None:
        split[spec.holdout_variant.name] = spec.holdout
    total = sum(v.weight for v in spec.variants)
    for v in spec.variants:
        split[v.name] = split.get(v.name, 0.0) + (1.0 - spec.holdout) * v.weight / total
    return experiment, split


def units_from_event_log(
    data_dir: Path,
    *,
    experiments_file: Path,
    experiment: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> ExperimentUnits:
    """Per (customer, app) exposure and outcome counts of one experiment from the served log
    under ``data_dir/serving/events`` (see the module docstring for the rules); ``start`` and
    ``end`` bound the experiment window (UTC; naive times are taken as UTC)."""
    data_dir = Path(data_dir)
    log_dir = data_dir / "serving" / "events"
    if not any(log_dir.rglob("*.parquet")):
        raise FileNotFoundError(f"data-dir: no served-impression log (Parquet) under {log_dir}")
    name, split = experiment_arms(experiments_file, experiment)
    start, end = _utc(start), _utc(end)
    if start is not None and end is not None and end <= start:
        raise ValueError(f"end: {end.isoformat()} is not after start {start.isoformat()}")

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        glob = parquet_glob(log_dir)
        con.execute(
            f"CREATE TEMP VIEW ev AS SELECT * FROM read_parquet('{glob}', hive_partitioning = false)"
        )
        columns = [row[0] for row in con.execute("DESCRIBE ev").fetchall()]
        require_columns(columns, [(c, c) for c in (*_EVENT_COLUMNS, VARIANT)], str(log_dir))
        frame, several = _served_counts(con, list(split), start, end)
        segments = _latest_segments(con, DataLayout(data_dir))
    finally:
        con.close()

    notes: list[str] = []
    if several:
        notes.append(f"{several} customer(s) were served several arms and were left out")
    if frame.empty:
        raise ValueError(
            f"data-dir: no impressions of experiment {name!r} (arms {', '.join(split)}) "
            f"in {log_dir}" + (f" from {start.isoformat()}" if start else "")
        )
    if segments is None:
        notes.append("no features/customer_segment table: per-segment readouts skipped")
    else:
        frame = frame.merge(segments, on=UNIT, how="left")
        missing = int(frame[SEGMENT].isna().sum())
        if missing:
            notes.append(f"{missing} exposed (customer, app) row(s) have no segment: 'unknown'")
        frame[SEGMENT] = frame[SEGMENT].fillna("unknown")
    if start is None:
        notes.append("no --start: no pre-period, so no CUPED adjustment")
    metrics = tuple(
        Metric(
            metric,
            count,
            _SERVED_DENOMINATOR,
            (pre, _PRE_DENOMINATOR) if start is not None else (),
        )
        for metric, (_, count, pre) in SERVED_OUTCOMES.items()
    )
    return ExperimentUnits(
        frame=frame,
        metrics=metrics,
        source=str(log_dir),
        unit_name="customer_id",
        expected_split=split,
        experiment=name,
        default_control="control",
        window={
            "start": start.isoformat() if start else None,
            "end": end.isoformat() if end else None,
        },
        notes=tuple(notes),
    )


def _served_counts(
    con: duckdb.DuckDBPyConnection,
    arms: list[str],
    start: datetime | None,
    end: datetime | None,
) -> tuple[pd.DataFrame, int]:
    """Exposure and outcome counts per (customer, app); customers in several arms dropped."""
    params: dict[str, object] = {"arms": arms}
    window = ["TRUE"]
    if start is not None:
        params["start"] = start
        window.append("e.event_timestamp >= $start")
    if end is not None:
        params["end"] = end
        window.append("e.event_timestamp < $end")
    con.execute(
        f"""CREATE TEMP TABLE exposed AS
            SELECT e.customer_id, e.app, e.variant, min(e.event_timestamp) AS first_exposure,
                   count(*)::DOUBLE AS {_SERVED_DENOMINATOR}
            FROM ev e
            WHERE e.event_type = 'impression' AND list_contains($arms, e.variant)
              AND {" AND ".join(window)}
            GROUP BY e.customer_id, e.app, e.variant""",
        params,
    )
    con.execute(
        """CREATE TEMP TABLE several AS SELECT customer_id FROM exposed
           GROUP BY customer_id HAVING count(DISTINCT variant) > 1"""
    )
    several = con.execute("SELECT count(*) FROM several").fetchone()
    counts = ",\n".join(
        f"count(*) FILTER (WHERE e.event_type = '{event}')::DOUBLE AS {column}"
        for event, column, _ in SERVED_OUTCOMES.values()
    )
    outcome_types = ", ".join(f"'{event}'" for event, _, _ in SERVED_OUTCOMES.values())
    outcome_columns = [c for _, c, _ in SERVED_OUTCOMES.values()]
    select = [f"COALESCE(o.{c}, 0) AS {c}" for c in outcome_columns]
    pre = ""
    pre_join = ""
    if start is not None:
        pre_counts = ",\n".join(
            f"count(*) FILTER (WHERE e.event_type = '{event}')::DOUBLE AS {column}"
            for event, _, column in SERVED_OUTCOMES.values()
        )
        pre = f""", pre AS (
            SELECT e.customer_id, e.app,
                   count(*) FILTER (WHERE e.event_type = 'impression')::DOUBLE
                       AS {_PRE_DENOMINATOR},
                   {pre_counts}
            FROM ev e WHERE e.event_timestamp < $start AND e.request_id IS NOT NULL
            GROUP BY e.customer_id, e.app)"""
        pre_join = "LEFT JOIN pre p USING (customer_id, app)"
        select += [
            f"COALESCE(p.{c}, 0) AS {c}"
            for c in (_PRE_DENOMINATOR, *(pre for _, _, pre in SERVED_OUTCOMES.values()))
        ]
    outcome_window = " AND ".join(w for w in window if "$start" not in w)
    sql = f"""
        WITH kept AS (SELECT * FROM exposed ANTI JOIN several USING (customer_id)),
        outcomes AS (
            SELECT e.customer_id, e.app, {counts}
            FROM ev e JOIN kept k USING (customer_id, app)
            WHERE e.event_type IN ({outcome_types}) AND e.request_id IS NOT NULL
              AND e.event_timestamp >= k.first_exposure AND {outcome_window}
            GROUP BY e.customer_id, e.app
        ){pre}
        SELECT k.customer_id AS {UNIT}, k.app AS {APP}, k.variant AS {VARIANT},
               k.{_SERVED_DENOMINATOR}, {", ".join(select)}
        FROM kept k LEFT JOIN outcomes o USING (customer_id, app) {pre_join}
        ORDER BY {UNIT}, {APP}
    """
    frame = con.execute(sql, _used(params, sql)).df()
    return frame, int(several[0]) if several else 0


def _used(params: dict[str, object], sql: str) -> dict[str, object]:
    """The named parameters ``sql`` refers to (DuckDB refuses unused ones)."""
    return {name: value for name, value in params.items() if f"${name}" in sql}


def _latest_segments(con: duckdb.DuckDBPyConnection, layout: DataLayout) -> pd.DataFrame | None:
    """Latest ``segment_id`` per customer, or None when no segment table exists."""
    path = layout.feature_table("customer_segment") / "data.parquet"
    if not path.exists():
        return None
    columns = [
        r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()
    ]
    require_columns(
        columns, [(c, c) for c in ("customer_id", "segment_id", "event_timestamp")], str(path)
    )
    return con.execute(
        f"""SELECT customer_id AS {UNIT}, arg_max(segment_id, event_timestamp) AS {SEGMENT}
            FROM read_parquet('{path}') GROUP BY customer_id"""
    ).df()


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
