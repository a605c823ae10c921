"""Publish segments as the Feast ``customer_segment`` view: append offline rows, materialise.

Rows are appended to ``<data_dir>/features/customer_segment/data.parquet`` stamped with the
snapshot time the features were read at. Earlier rows stay, so a point-in-time join before
the snapshot still sees the segment in force then (the ``rules_v0`` placeholder or an older
version), and ``serving.priors.build_priors`` (latest row per customer) picks the new one up
on the next ``persona serve priors``. One row per customer and timestamp: republishing at the
same snapshot replaces the rows it would otherwise duplicate.

Note that ``persona features build`` rewrites this table from the placeholder rule; publish
again (``persona segment fit``) after rebuilding features.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel

from persona.features.build import feature_table_path
from persona.features.catalog import CUSTOMER_SEGMENT
from persona.features.store import OnlineStoreChoice, apply_definitions, open_store
from persona.settings import PersonaSettings


class PublishResult(BaseModel):
    table: str
    version: str
    event_timestamp: datetime
    rows_added: int
    #: Rows of other publications at the same (customer, timestamp), replaced by these.
    rows_replaced: int
    replaced_versions: list[str]
    rows_total: int


class MaterializeResult(BaseModel):
    view: str
    online_store: str
    entities: int
    seconds: float


def publish_segments(
    data_dir: Path, segment_ids: pd.Series, version: str, snapshot_at: datetime
) -> PublishResult:
    """Append one row per customer of ``segment_ids`` (index customer_id) to the offline view."""
    if not version:
        raise ValueError("version: must not be empty")
    if snapshot_at.tzinfo is None:
        raise ValueError("snapshot_at: give a timezone-aware time (UTC)")
    if segment_ids.isna().any():
        raise ValueError(f"segment_id: {int(segment_ids.isna().sum())} customer(s) without one")
    path = feature_table_path(data_dir, CUSTOMER_SEGMENT.name)
    if not path.exists():
        raise FileNotFoundError(
            f"data_dir: {path} missing; run `persona features build` before publishing segments"
        )
    existing = pq.read_table(path)
    schema = existing.schema
    stamp = pd.Timestamp(snapshot_at).tz_convert("UTC")
    new = pa.Table.from_pandas(
        pd.DataFrame(
            {
                "customer_id": segment_ids.index.to_numpy(dtype="int64"),
                "event_timestamp": pd.Series(
                    [stamp] * len(segment_ids), dtype="datetime64[us, UTC]"
                ),
                "segment_id": segment_ids.astype(str).to_numpy(),
                "segment_version": [version] * len(segment_ids),
            }
        ),
        preserve_index=False,
    ).cast(schema)
    collides = pc.and_(
        pc.is_in(existing.column("customer_id"), value_set=new.column("customer_id")),
        pc.equal(
            existing.column("event_timestamp"),
            pa.scalar(stamp, type=schema.field("event_timestamp").type),
        ),
    )
    replaced = existing.filter(collides)
    kept = existing.filter(pc.invert(collides))
    combined = pa.concat_tables([kept, new]).sort_by(
        [("customer_id", "ascending"), ("event_timestamp", "ascending")]
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(combined, tmp, compression="zstd")
    os.replace(tmp, path)  # readers (Feast, priors) see the old file or the new one, never half
    return PublishResult(
        table=str(path),
        version=version,
        event_timestamp=stamp.to_pydatetime(),
        rows_added=new.num_rows,
        rows_replaced=replaced.num_rows,
        replaced_versions=sorted(set(replaced.column("segment_version").to_pylist())),
        rows_total=combined.num_rows,
    )


def materialize_segments(
    settings: PersonaSettings,
    choice: OnlineStoreChoice | None = None,
    *,
    end: datetime | None = None,
) -> MaterializeResult:
    """Register the feature repo and load the latest ``customer_segment`` row per customer online.

    ``end`` defaults to now, or just after the newest published row if that lies later.
    """
    path = feature_table_path(settings.data_dir, CUSTOMER_SEGMENT.name)
    table = pq.read_table(path, columns=["customer_id", "event_timestamp"])
    newest = pc.max(table.column("event_timestamp")).as_py()
    end = end or max(datetime.now(UTC), newest + timedelta(seconds=1))
    store = open_store(settings, choice)
    apply_definitions(store, settings.data_dir)
    started = time.perf_counter()
    store.materialize(
        start_date=end - timedelta(days=CUSTOMER_SEGMENT.ttl_days),
        end_date=end,
        feature_views=[CUSTOMER_SEGMENT.name],
    )
    kind = type(store.config.online_store).__name__
    return MaterializeResult(
        view=CUSTOMER_SEGMENT.name,
        online_store=kind,
        entities=len(pc.unique(table.column("customer_id"))),
        seconds=round(time.perf_counter() - started, 3),
    )
