"""Segment profiles (size, traits, top products, app mix, consent) and names made from traits.

A trait is a feature whose segment mean departs from its customer type's mean, measured in
z-units (population standard deviations) on the scale the model sees: log1p of counts and
amounts, shares as they are. Names are the customer type plus the strongest labelled traits,
e.g. ``retail · high-txn · card-heavy · mobile``: deterministic, and made unique by adding
the next trait where two segments would otherwise share a name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import duckdb
import numpy as np
import pandas as pd
from pydantic import BaseModel

from persona import domain
from persona.layout import DataLayout, parquet_glob
from segmentation.features import (
    FEATURE_NAMES,
    LOG_COMPRESSED_GROUPS,
    SegmentationMatrix,
    feature_spec,
)

#: A feature counts as a trait when the segment mean departs by at least this many z-units.
TRAIT_MIN_Z: Final = 0.3
#: Traits in a name before any are added to tell two segments apart.
NAME_TRAITS: Final = 3
TOP_PRODUCTS: Final = 5
#: Engagement window of the top engaged products (the behaviour features' longest window).
ENGAGED_WINDOW_DAYS: Final = 90


class Trait(BaseModel):
    feature: str
    z: float
    label: str | None
    segment_mean: float
    population_mean: float


class ProductShare(BaseModel):
    product_id: str
    #: Share of the segment's customers (0..1).
    share: float


class SegmentProfile(BaseModel):
    segment_id: str
    name: str
    customer_type: str
    customers: int
    share: float
    share_of_type: float
    #: Every feature, strongest departure first.
    traits: list[Trait]
    top_products_held: list[ProductShare]
    top_products_engaged: list[ProductShare]
    #: Share of the segment's 90-day events per app.
    app_mix: dict[str, float]
    consent_marketing_share: float

    def named_traits(self) -> list[Trait]:
        """Traits strong enough to name, with a label for their direction."""
        return [t for t in self.traits if t.label is not None and abs(t.z) >= TRAIT_MIN_Z]


def model_scale(features: pd.DataFrame) -> pd.DataFrame:
    """Features on the scale the model sees before standardising (log1p for counts, amounts)."""
    out = features[list(FEATURE_NAMES)].copy()
    for name in FEATURE_NAMES:
        if feature_spec(name).group in LOG_COMPRESSED_GROUPS:
            out[name] = np.log1p(out[name])
    return out


def segment_traits(features: pd.DataFrame, in_segment: pd.Series) -> list[Trait]:
    """z-unit departures of the rows ``in_segment`` from all rows of ``features`` (one type)."""
    scaled = model_scale(features)
    raw_pop = features.mean()
    raw_seg = features[in_segment].mean()
    pop_mean = scaled.mean()
    pop_std = scaled.std(ddof=0)
    seg_mean = scaled[in_segment].mean()
    traits = []
    for name in FEATURE_NAMES:
        std = float(pop_std[name])
        z = 0.0 if std <= 1e-12 else float((seg_mean[name] - pop_mean[name]) / std)
        spec = feature_spec(name)
        label = spec.high if z > 0 else spec.low if z < 0 else None
        traits.append(
            Trait(
                feature=name,
                z=round(z, 3),
                label=label,
                segment_mean=round(float(raw_seg[name]), 4),
                population_mean=round(float(raw_pop[name]), 4),
            )
        )
    return sorted(traits, key=lambda t: (-abs(t.z), t.feature))


def name_segments(profiles: list[SegmentProfile]) -> dict[str, str]:
    """A unique name per segment id from its customer type and strongest labelled traits."""
    per_type = pd.Series([p.customer_type for p in profiles]).value_counts().to_dict()
    labels = {p.segment_id: [t.label for t in p.named_traits() if t.label] for p in profiles}
    used = {p.segment_id: min(NAME_TRAITS, len(labels[p.segment_id])) for p in profiles}

    def name_of(p: SegmentProfile) -> str:
        if per_type[p.customer_type] == 1:
            return f"{p.customer_type} · all"
        words = labels[p.segment_id][: used[p.segment_id]] or ["typical"]
        return " · ".join([p.customer_type, *words])

    while True:
        names = {p.segment_id: name_of(p) for p in profiles}
        clashes = pd.Series(names).duplicated(keep=False)
        grown = False
        for segment_id in clashes[clashes].index:
            if used[segment_id] < len(labels[segment_id]):
                used[segment_id] += 1
                grown = True
        if not grown:
            break
    # Still equal after every trait: the segment number tells them apart.
    clashes = pd.Series(names).duplicated(keep=False)
    for segment_id in clashes[clashes].index:
        names[segment_id] = f"{names[segment_id]} #{segment_id.rsplit('-', 1)[-1]}"
    return names


def _top_products(
    data_dir: Path, assignments: pd.DataFrame, matrix: SegmentationMatrix
) -> tuple[dict[str, list[ProductShare]], dict[str, list[ProductShare]]]:
    layout = DataLayout(data_dir)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("assigned", assignments.reset_index()[["customer_id", "segment_id"]])
    at = matrix.snapshot_at
    queries = {}
    if any(layout.clean_table("holdings").rglob("*.parquet")):
        queries["held"] = f"""
            SELECT DISTINCT h.customer_id, h.product_id
            FROM read_parquet('{parquet_glob(layout.clean_table("holdings"))}',
                              hive_partitioning = false) h
            WHERE h.opened_at <= $at AND (h.closed_at IS NULL OR h.closed_at > $at)
        """
    if any(layout.clean_table("events").rglob("*.parquet")):
        positive = ", ".join(f"'{t}'" for t in domain.POSITIVE_FEEDBACK)
        queries["engaged"] = f"""
            SELECT DISTINCT e.customer_id, e.product_id
            FROM read_parquet('{parquet_glob(layout.clean_table("events"))}',
                              hive_partitioning = false) e
            WHERE e.event_type IN ({positive}) AND e.product_id IS NOT NULL
              AND e.event_timestamp < $at
              AND e.event_timestamp >= $at - INTERVAL {ENGAGED_WINDOW_DAYS} DAY
        """
    found: dict[str, dict[str, list[ProductShare]]] = {"held": {}, "engaged": {}}
    for kind, sql in queries.items():
        rows = con.execute(
            f"""
            WITH pairs AS ({sql}),
            sizes AS (SELECT segment_id, count(*) AS n FROM assigned GROUP BY 1)
            SELECT a.segment_id, p.product_id, count(*) / any_value(s.n) AS share
            FROM pairs p JOIN assigned a USING (customer_id) JOIN sizes s USING (segment_id)
            GROUP BY 1, 2
            QUALIFY row_number() OVER (PARTITION BY a.segment_id
                                       ORDER BY share DESC, p.product_id) <= {TOP_PRODUCTS}
            ORDER BY 1, 3 DESC, 2
            """,
            {"at": at},
        ).fetchall()
        for segment_id, product_id, share in rows:
            found[kind].setdefault(segment_id, []).append(
                ProductShare(product_id=product_id, share=round(float(share), 4))
            )
    con.close()
    return found["held"], found["engaged"]


def profile_segments(
    data_dir: Path, matrix: SegmentationMatrix, segment_ids: pd.Series
) -> list[SegmentProfile]:
    """Profile and name every segment of ``segment_ids`` (index customer_id, as the matrix)."""
    if not segment_ids.index.equals(matrix.features.index):
        raise ValueError("segment_ids: must be indexed by the matrix's customer_id, in order")
    assignments = pd.DataFrame({"segment_id": segment_ids.astype(str)})
    held, engaged = _top_products(data_dir, assignments, matrix)
    total = len(segment_ids)
    profiles = []
    order = sorted(
        segment_ids.unique(),
        key=lambda s: (s.rsplit("-", 1)[0], int(s.rsplit("-", 1)[-1])),
    )
    for segment_id in order:
        in_segment = segment_ids == segment_id
        customer_type = str(matrix.customers.loc[in_segment, "customer_type"].iloc[0])
        of_type = matrix.customers["customer_type"] == customer_type
        events = matrix.app_events[in_segment].sum()
        event_total = float(events.sum())
        profiles.append(
            SegmentProfile(
                segment_id=segment_id,
                name="",
                customer_type=customer_type,
                customers=int(in_segment.sum()),
                share=round(float(in_segment.sum()) / total, 4),
                share_of_type=round(float(in_segment.sum()) / float(of_type.sum()), 4),
                traits=segment_traits(matrix.features[of_type], in_segment[of_type]),
                top_products_held=held.get(segment_id, []),
                top_products_engaged=engaged.get(segment_id, []),
                app_mix={
                    app: round(float(events[app]) / event_total, 4) if event_total else 0.0
                    for app in matrix.app_events.columns
                },
                consent_marketing_share=round(
                    float(matrix.customers.loc[in_segment, "consent_marketing"].mean()), 4
                ),
            )
        )
    names = name_segments(profiles)
    return [p.model_copy(update={"name": names[p.segment_id]}) for p in profiles]
