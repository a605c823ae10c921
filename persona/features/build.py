"""Offline feature tables computed point-in-time correctly with DuckDB SQL over clean Parquet.

Point-in-time rule, for every table: a feature row stamped ``t`` is computed only from events
stamped strictly before ``t`` (daily snapshots stamped at 00:00 UTC count days before that
day), or, for state tables (holdings, sequence), from the change stamped ``t`` and earlier.
Feast's point-in-time join then picks, for a label at time ``T``, the latest row with
``t <= T``; so no feature ever sees an event after the label.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
from pydantic import BaseModel
from rich.progress import Progress

from persona import domain
from persona.features import catalog
from persona.layout import DataLayout, parquet_glob

SECONDS_PER_DAY = 86_400


class FeatureBuildSummary(BaseModel):
    rows: dict[str, int]
    seconds: dict[str, float]
    first_event_day: str | None
    last_event_day: str | None
    output_dir: str


class MissingCleanDataError(ValueError):
    """Features are built only from validated data."""


def build_features(
    root: Path, *, progress: bool = True, memory_limit: str = "4GB"
) -> FeatureBuildSummary:
    """Build every table of :mod:`persona.features.catalog` under ``DataLayout(root).features``."""
    layout = DataLayout(root)
    _require_clean(layout)
    layout.features.mkdir(parents=True, exist_ok=True)
    spill = layout.root / ".duckdb_tmp"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET temp_directory = '{spill}'")
    con.execute("SET preserve_insertion_order = false")
    _register_clean_tables(con, layout)

    bounds = con.execute(
        "SELECT MIN(day_number), MAX(day_number) FROM (SELECT "
        f"{_day_number('event_timestamp')} AS day_number FROM events)"
    ).fetchone()
    first_day, last_day = bounds or (None, None)
    builders: list[tuple[str, Callable[[], str]]] = [
        ("customer_profile", _customer_profile_sql),
        ("customer_segment", customer_segment_sql),
        ("customer_holdings", _customer_holdings_sql),
        ("customer_sequence", _customer_sequence_sql),
    ]
    if first_day is not None and last_day is not None:
        builders.append(("customer_behaviour", lambda: _customer_behaviour_sql(con, last_day)))
        builders.append(("product_stats", lambda: _product_stats_sql(first_day, last_day)))

    rows: dict[str, int] = {}
    seconds: dict[str, float] = {}
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("building feature tables", total=len(builders))
        for name, sql_for in builders:
            bar.update(task, description=f"building {name}")
            started = time.perf_counter()
            out = layout.feature_table(name)
            out.mkdir(parents=True, exist_ok=True)
            target = out / "data.parquet"
            con.execute(f"COPY ({sql_for()}) TO '{target}' (FORMAT parquet, COMPRESSION zstd)")
            rows[name] = _count_rows(con, target)
            seconds[name] = round(time.perf_counter() - started, 3)
            bar.advance(task)
    con.close()
    summary = FeatureBuildSummary(
        rows=rows,
        seconds=seconds,
        first_event_day=_iso_day(first_day),
        last_event_day=_iso_day(last_day),
        output_dir=str(layout.features),
    )
    (layout.features / "build_summary.json").write_text(json.dumps(summary.model_dump(), indent=2))
    return summary


def feature_table_path(root: Path, name: str) -> Path:
    """Where the offline table of feature view ``name`` is written."""
    return DataLayout(root).feature_table(name) / "data.parquet"


def _require_clean(layout: DataLayout) -> None:
    if not layout.validation_report.exists():
        raise MissingCleanDataError(
            f"no validation report at {layout.validation_report}: run "
            f"`persona data validate {layout.root}` first (features are built from clean data only)"
        )
    for table in ("customers", "products", "events"):
        if not any(layout.clean_table(table).rglob("*.parquet")):
            raise MissingCleanDataError(
                f"clean table {table!r} is empty or missing under {layout.clean}"
            )


def _register_clean_tables(con: duckdb.DuckDBPyConnection, layout: DataLayout) -> None:
    for table in ("customers", "products", "events"):
        glob = parquet_glob(layout.clean_table(table))
        con.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{glob}', hive_partitioning = false)"
        )
    holdings = layout.clean_table("holdings")
    if any(holdings.rglob("*.parquet")):
        con.execute(
            "CREATE VIEW holdings AS SELECT * FROM "
            f"read_parquet('{parquet_glob(holdings)}', hive_partitioning = false)"
        )
    else:
        con.execute(
            "CREATE VIEW holdings AS SELECT NULL::BIGINT AS customer_id, NULL::VARCHAR AS product_id, "
            "NULL::TIMESTAMPTZ AS opened_at, NULL::TIMESTAMPTZ AS closed_at WHERE false"
        )


def _day_number(column: str) -> str:
    """Whole days since 1970-01-01 UTC of a TIMESTAMPTZ column."""
    return f"CAST(floor(epoch({column}) / {SECONDS_PER_DAY}) AS INTEGER)"


def _day_start(day_number: str) -> str:
    return f"to_timestamp(CAST({day_number} AS BIGINT) * {SECONDS_PER_DAY})"


def _sql_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _customer_profile_sql() -> str:
    return f"""
        SELECT customer_id, created_at AS event_timestamp, customer_type, age_band, income_band,
               COALESCE(list_position({_sql_list(domain.INCOME_BANDS)}, income_band) - 1, -1)
                   AS income_band_index,
               city_tier, occupation, life_stage, risk_profile,
               CAST(kyc_level AS BIGINT) AS kyc_level, consent_marketing, consent_data_sharing,
               apps_enrolled
        FROM customers
    """


def customer_segment_sql() -> str:
    return """
        SELECT customer_id, created_at AS event_timestamp,
               customer_type || ':' || COALESCE(life_stage, 'unknown') AS segment_id,
               'rules_v0' AS segment_version
        FROM customers
    """


def _customer_holdings_sql() -> str:
    held = "h.opened_at <= cp.ts AND (h.closed_at IS NULL OR h.closed_at > cp.ts)"
    per_category = ",\n".join(
        f"CAST(count(*) FILTER (WHERE {held} AND p.category = '{c}') AS BIGINT) AS held_{c}"
        for c in domain.CATEGORIES
    )
    return f"""
        WITH change_points AS (
            SELECT customer_id, opened_at AS ts FROM holdings
            UNION
            SELECT customer_id, closed_at AS ts FROM holdings WHERE closed_at IS NOT NULL
        )
        SELECT cp.customer_id, cp.ts AS event_timestamp,
               COALESCE(list(h.product_id ORDER BY h.product_id) FILTER (WHERE {held}), [])
                   AS held_product_ids,
               CAST(count(*) FILTER (WHERE {held}) AS BIGINT) AS n_holdings,
               {per_category}
        FROM change_points cp
        JOIN holdings h ON h.customer_id = cp.customer_id
        JOIN products p ON p.product_id = h.product_id
        GROUP BY cp.customer_id, cp.ts
    """


def _customer_sequence_sql() -> str:
    n = catalog.SEQUENCE_LENGTH
    interactions = _sql_list(domain.PRODUCT_INTERACTIONS)
    return f"""
        SELECT customer_id, event_timestamp,
               list(product_id) OVER w AS seq_product_ids,
               list(event_type) OVER w AS seq_event_types,
               list(CAST(epoch(event_timestamp) AS BIGINT)) OVER w AS seq_timestamps,
               CAST(count(*) OVER w AS BIGINT) AS seq_length
        FROM events
        WHERE list_contains({interactions}, event_type)
        WINDOW w AS (PARTITION BY customer_id ORDER BY event_timestamp, event_id
                     ROWS BETWEEN {n - 1} PRECEDING AND CURRENT ROW)
        -- one row per instant: the last interaction at a timestamp carries the full sequence
        QUALIFY row_number() OVER (PARTITION BY customer_id, event_timestamp
                                   ORDER BY event_id DESC) = 1
    """


def _customer_behaviour_sql(con: duckdb.DuckDBPyConnection, last_day: int) -> str:
    positive = _sql_list(domain.POSITIVE_FEEDBACK)
    daily_counts = [
        *(
            f"count(*) FILTER (WHERE list_contains({positive}, e.event_type) "
            f"AND p.category = '{c}') AS {c}_interactions"
            for c in domain.CATEGORIES
        ),
        *(f"count(*) FILTER (WHERE e.app = '{a}') AS {a}_events" for a in domain.APPS),
        "count(*) FILTER (WHERE e.event_type = 'login') AS logins",
        "count(*) FILTER (WHERE e.event_type = 'impression') AS impressions",
        "count(*) FILTER (WHERE e.event_type = 'click') AS clicks",
        "count(*) FILTER (WHERE e.event_type = 'dismiss') AS dismissals",
        f"count(*) FILTER (WHERE list_contains({positive}, e.event_type)) AS interactions",
        "count(*) FILTER (WHERE e.event_type = 'txn') AS txns",
        "COALESCE(sum(e.amount) FILTER (WHERE e.event_type = 'txn' AND e.amount > 0), 0) AS amount_in",
        "COALESCE(-sum(e.amount) FILTER (WHERE e.event_type = 'txn' AND e.amount < 0), 0) AS amount_out",
        "1 AS active",
    ]
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE behaviour_daily AS
        SELECT e.customer_id, {_day_number("e.event_timestamp")} AS day_number,
               {", ".join(daily_counts)}
        FROM events e LEFT JOIN products p ON p.product_id = e.product_id
        GROUP BY ALL
        """
    )
    # A dense grid of (customer, day) from the customer's first active day to the day after the
    # last event, so every ROWS frame below spans exactly the calendar days it names.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE behaviour_grid AS
        WITH spans AS (
            SELECT customer_id, min(day_number) AS first_day, max(day_number) AS last_active
            FROM behaviour_daily GROUP BY customer_id
        ),
        grid AS (
            SELECT customer_id, last_active,
                   unnest(range(first_day, LEAST({last_day} + 1, last_active + 90) + 1)) AS day_number
            FROM spans
        )
        SELECT g.customer_id, g.day_number, d.* EXCLUDE (customer_id, day_number)
        FROM grid g LEFT JOIN behaviour_daily d
          ON d.customer_id = g.customer_id AND d.day_number = g.day_number
        """
    )

    def frame(days: int) -> str:
        return f"(PARTITION BY customer_id ORDER BY day_number ROWS BETWEEN {days} PRECEDING AND 1 PRECEDING)"

    def window_sum(column: str, days: int, cast: str = "BIGINT") -> str:
        return f"CAST(COALESCE(sum({column}) OVER {frame(days)}, 0) AS {cast})"

    selects = []
    for c in domain.CATEGORIES:
        for w in catalog.WINDOWS_DAYS:
            selects.append(f"{window_sum(f'{c}_interactions', w)} AS {c}_interactions_{w}d")
    for a in domain.APPS:
        for w in catalog.WINDOWS_DAYS:
            selects.append(f"{window_sum(f'{a}_events', w)} AS {a}_events_{w}d")
    selects += [
        f"{window_sum('logins', 30)} AS logins_30d",
        f"{window_sum('impressions', 30)} AS impressions_30d",
        f"{window_sum('clicks', 30)} AS clicks_30d",
        f"{window_sum('dismissals', 30)} AS dismissals_30d",
        f"{window_sum('active', 30)} AS active_days_30d",
        f"{window_sum('txns', 30)} AS txn_count_30d",
        f"{window_sum('txns', 90)} AS txn_count_90d",
        f"{window_sum('amount_in', 30, 'DOUBLE')} AS txn_amount_in_30d",
        f"{window_sum('amount_out', 30, 'DOUBLE')} AS txn_amount_out_30d",
        f"{window_sum('amount_in', 90, 'DOUBLE')} AS txn_amount_in_90d",
        f"{window_sum('amount_out', 90, 'DOUBLE')} AS txn_amount_out_90d",
        "CAST(day_number - max(CASE WHEN active = 1 THEN day_number END) OVER "
        "(PARTITION BY customer_id ORDER BY day_number ROWS BETWEEN UNBOUNDED PRECEDING "
        "AND 1 PRECEDING) AS BIGINT) AS days_since_last_event",
        "CAST(COALESCE(day_number - max(CASE WHEN interactions > 0 THEN day_number END) OVER "
        f"{frame(90)}, -1) AS BIGINT) AS days_since_last_interaction",
    ]
    columns = catalog.CUSTOMER_BEHAVIOUR.column_names
    return f"""
        SELECT customer_id, {_day_start("day_number")} AS event_timestamp, {", ".join(columns)}
        FROM (
            SELECT customer_id, day_number, {", ".join(selects)},
                   row_number() OVER (PARTITION BY customer_id ORDER BY day_number) AS nth_day
            FROM behaviour_grid
        )
        -- the first grid day is the first active day: its snapshot would count nothing yet
        WHERE nth_day > 1
    """


def _product_stats_sql(first_day: int, last_day: int) -> str:
    start = first_day
    prior_clicks = catalog.CTR_PRIOR_CLICKS
    prior_total = catalog.CTR_PRIOR_CLICKS + catalog.CTR_PRIOR_IMPRESSIONS
    return f"""
        WITH daily AS (
            SELECT product_id, {_day_number("event_timestamp")} AS day_number,
                   count(*) FILTER (WHERE event_type = 'impression') AS impressions,
                   count(*) FILTER (WHERE event_type = 'click') AS clicks,
                   count(*) FILTER (WHERE event_type = 'apply') AS applies,
                   count(*) FILTER (WHERE event_type = 'purchase') AS purchases
            FROM events WHERE product_id IS NOT NULL GROUP BY ALL
        ),
        holder_deltas AS (
            -- openings and closings before the grid start are folded onto its first row
            SELECT product_id, day_number, sum(delta) AS holder_delta FROM (
                SELECT product_id, GREATEST({_day_number("opened_at")}, {start} - 1) AS day_number,
                       1 AS delta FROM holdings
                UNION ALL
                SELECT product_id, GREATEST({_day_number("closed_at")}, {start} - 1), -1
                FROM holdings WHERE closed_at IS NOT NULL
            ) GROUP BY ALL
        ),
        grid AS (
            SELECT product_id, category, unnest(range({start} - 1, {last_day} + 2)) AS day_number
            FROM products
        ),
        dense AS (
            SELECT g.product_id, g.category, g.day_number,
                   COALESCE(d.impressions, 0) AS impressions, COALESCE(d.clicks, 0) AS clicks,
                   COALESCE(d.applies, 0) AS applies, COALESCE(d.purchases, 0) AS purchases,
                   COALESCE(h.holder_delta, 0) AS holder_delta
            FROM grid g
            LEFT JOIN daily d ON d.product_id = g.product_id AND d.day_number = g.day_number
            LEFT JOIN holder_deltas h ON h.product_id = g.product_id AND h.day_number = g.day_number
        ),
        windowed AS (
            SELECT product_id, category, day_number,
                   CAST(COALESCE(sum(impressions) OVER w7, 0) AS BIGINT) AS impressions_7d,
                   CAST(COALESCE(sum(clicks) OVER w7, 0) AS BIGINT) AS clicks_7d,
                   CAST(COALESCE(sum(impressions) OVER w30, 0) AS BIGINT) AS impressions_30d,
                   CAST(COALESCE(sum(clicks) OVER w30, 0) AS BIGINT) AS clicks_30d,
                   CAST(COALESCE(sum(applies) OVER w30, 0) AS BIGINT) AS applies_30d,
                   CAST(COALESCE(sum(purchases) OVER w30, 0) AS BIGINT) AS purchases_30d,
                   CAST(COALESCE(sum(purchases) OVER w90, 0) AS BIGINT) AS purchases_90d,
                   CAST(COALESCE(sum(holder_delta) OVER w_all, 0) AS BIGINT) AS active_holders
            FROM dense
            WINDOW w7 AS (PARTITION BY product_id ORDER BY day_number ROWS BETWEEN 7 PRECEDING AND 1 PRECEDING),
                   w30 AS (PARTITION BY product_id ORDER BY day_number ROWS BETWEEN 30 PRECEDING AND 1 PRECEDING),
                   w90 AS (PARTITION BY product_id ORDER BY day_number ROWS BETWEEN 90 PRECEDING AND 1 PRECEDING),
                   w_all AS (PARTITION BY product_id ORDER BY day_number
                             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
        )
        SELECT product_id, {_day_start("day_number")} AS event_timestamp, category,
               impressions_7d AS product_impressions_7d, clicks_7d AS product_clicks_7d,
               impressions_30d AS product_impressions_30d, clicks_30d AS product_clicks_30d,
               applies_30d AS product_applies_30d, purchases_30d AS product_purchases_30d,
               purchases_90d AS product_purchases_90d,
               (clicks_30d + {prior_clicks}) / (impressions_30d + {prior_total}) AS product_ctr_30d,
               CAST(rank() OVER (PARTITION BY day_number ORDER BY purchases_30d DESC, clicks_30d DESC)
                    AS BIGINT) AS product_popularity_rank_30d,
               active_holders AS product_active_holders
        FROM windowed
        WHERE day_number >= {start} + 1
    """


def _count_rows(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    result = con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()
    return int(result[0]) if result else 0


def _iso_day(day_number: int | None) -> str | None:
    if day_number is None:
        return None
    from datetime import date, timedelta

    return (date(1970, 1, 1) + timedelta(days=int(day_number))).isoformat()
