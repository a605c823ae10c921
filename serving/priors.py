"""Segment priors and co-interest neighbours: what retrieval uses for candidates and what every
stage falls back on when a customer is new or the model is unavailable.

Built offline from the canonical events and the ``customer_segment`` feature table with DuckDB,
written as one JSON file that serving loads at start (no store round trip on the hot path).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import duckdb
from pydantic import BaseModel, Field

from persona import domain
from persona.features.build import feature_table_path
from persona.layout import DataLayout, parquet_glob

PRIORS_FILE: Final = "priors.json"
#: Pseudo-interactions that pull a small segment's shares towards the global ones.
SEGMENT_SMOOTHING: Final = 20.0


class Priors(BaseModel):
    """Scores in [0, 1] per product: the share of recent positive interactions it received."""

    built_at: datetime
    window_days: int
    global_scores: dict[str, float]
    segment_scores: dict[str, dict[str, float]]
    co_interest: dict[str, list[tuple[str, float]]] = Field(
        description="product -> products the same customers also engaged with, best first"
    )

    def scores_for(self, segment: str) -> tuple[dict[str, float], str]:
        """The segment's scores when known, else the global ones; the second value says which."""
        if segment in self.segment_scores:
            return self.segment_scores[segment], "segment_prior"
        return self.global_scores, "global_prior"

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / PRIORS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json())
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, folder: Path) -> Priors:
        path = Path(folder) / PRIORS_FILE
        if not path.exists():
            raise FileNotFoundError(
                f"priors: no {PRIORS_FILE} in {folder}; run `persona serve priors`"
            )
        return cls.model_validate_json(path.read_text())


def build_priors(
    data_dir: Path, window_days: int = 90, neighbours: int = 20, now: datetime | None = None
) -> Priors:
    """Positive interactions (click, apply, purchase) of the last ``window_days`` before the last
    event, by product overall and by each customer's latest segment; co-interest pairs."""
    layout = DataLayout(Path(data_dir))
    events = parquet_glob(layout.clean_table("events"))
    segments = feature_table_path(layout.root, "customer_segment")
    if not segments.exists():
        raise FileNotFoundError(f"priors: {segments} missing; run `persona features build` first")
    positive = ", ".join(f"'{t}'" for t in domain.POSITIVE_FEEDBACK)
    con = duckdb.connect()
    con.execute(
        f"""
        CREATE TEMP TABLE recent AS
        WITH bounds AS (SELECT max(event_timestamp) AS last FROM read_parquet('{events}'))
        SELECT e.customer_id, e.product_id
        FROM read_parquet('{events}') e, bounds
        WHERE e.event_type IN ({positive}) AND e.product_id IS NOT NULL
          AND e.event_timestamp > bounds.last - INTERVAL {int(window_days)} DAY
        """
    )
    con.execute(
        f"""
        CREATE TEMP TABLE latest_segment AS
        SELECT customer_id, arg_max(segment_id, event_timestamp) AS segment_id
        FROM read_parquet('{segments}') GROUP BY customer_id
        """
    )
    total = con.execute("SELECT count(*) FROM recent").fetchone()
    n_total = int(total[0]) if total else 0
    global_counts = dict(
        con.execute("SELECT product_id, count(*) FROM recent GROUP BY 1").fetchall()
    )
    global_scores = {p: c / max(n_total, 1) for p, c in global_counts.items()}
    segment_rows = con.execute(
        """
        SELECT s.segment_id, r.product_id, count(*) AS n,
               sum(count(*)) OVER (PARTITION BY s.segment_id) AS segment_total
        FROM recent r JOIN latest_segment s USING (customer_id)
        GROUP BY 1, 2
        """
    ).fetchall()
    segment_scores: dict[str, dict[str, float]] = {}
    segment_totals: dict[str, float] = {}
    for segment, product, n, segment_total in segment_rows:
        segment_totals[segment] = float(segment_total)
        segment_scores.setdefault(segment, {})[product] = float(n)
    for segment, counts in segment_scores.items():
        n_segment = segment_totals[segment]
        segment_scores[segment] = {
            p: (counts.get(p, 0.0) + SEGMENT_SMOOTHING * share) / (n_segment + SEGMENT_SMOOTHING)
            for p, share in global_scores.items()
        }
    pairs = con.execute(
        f"""
        WITH customer_products AS (SELECT DISTINCT customer_id, product_id FROM recent)
        SELECT a.product_id, b.product_id, count(*) AS n
        FROM customer_products a JOIN customer_products b
          ON a.customer_id = b.customer_id AND a.product_id <> b.product_id
        GROUP BY 1, 2
        QUALIFY row_number() OVER (PARTITION BY a.product_id ORDER BY n DESC, b.product_id) <= {int(neighbours)}
        ORDER BY 1, 3 DESC, 2
        """
    ).fetchall()
    reach = dict(
        con.execute(
            "SELECT product_id, count(DISTINCT customer_id) FROM recent GROUP BY 1"
        ).fetchall()
    )
    co_interest: dict[str, list[tuple[str, float]]] = {}
    for a, b, n in pairs:
        co_interest.setdefault(a, []).append((b, float(n) / max(reach.get(a, 1), 1)))
    return Priors(
        built_at=now or datetime.now(UTC),
        window_days=window_days,
        global_scores=global_scores,
        segment_scores=segment_scores,
        co_interest=co_interest,
    )


def priors_summary(priors: Priors) -> dict[str, object]:
    top = sorted(priors.global_scores.items(), key=lambda kv: -kv[1])[:5]
    return {
        "segments": len(priors.segment_scores),
        "products": len(priors.global_scores),
        "top_global": [p for p, _ in top],
        "built_at": priors.built_at.isoformat(),
    }


__all__ = ["Priors", "build_priors", "priors_summary"]
