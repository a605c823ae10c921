"""Write a source's canonical tables under ``<out_dir>/raw/`` after checking keys and references."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from persona.layout import DataLayout, write_table
from persona.loaders.errors import LoaderError
from persona.loaders.summary import LoadSummary
from persona.schemas import TABLES


def id_map_path(out_dir: Path) -> Path:
    """Where the external-id -> customer_id map of the last load lives."""
    return DataLayout(out_dir).root / "id_map" / "customers.parquet"


def summary_path(out_dir: Path) -> Path:
    return DataLayout(out_dir).root / "load_summary.json"


def write_load(
    *,
    source: str,
    input_path: Path,
    out_dir: Path,
    tables: Mapping[str, pa.Table],
    notes: list[str],
    id_map: pa.Table | None = None,
) -> LoadSummary:
    """Check and write ``tables`` (canonical name -> table) and return the load's summary.

    Tables of ``persona.schemas.TABLES`` this source does not have are removed from ``raw/``
    if an earlier load left them there, so the folder never mixes two sources.
    """
    _check_keys_and_references(tables)
    layout = DataLayout(out_dir)
    rows: dict[str, int] = {}
    notes = list(notes)
    for name, schema in TABLES.items():
        target = layout.raw_table(name)
        if name in tables:
            rows[name] = write_table(target, tables[name], schema)
        elif target.exists():
            shutil.rmtree(target)
            notes.append(f"removed raw/{name} left by an earlier load (this source has no {name})")
    extra: dict[str, Path] = {}
    map_path = id_map_path(out_dir)
    if id_map is not None:
        map_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(id_map, map_path, compression="zstd")
        extra["id_map"] = map_path
    elif map_path.exists():
        map_path.unlink()
        notes.append("removed id_map/customers.parquet left by an earlier load")
    summary = LoadSummary(
        source=source,
        input_path=input_path,
        out_dir=layout.root,
        rows=rows,
        notes=notes,
        extra_files=extra,
    )
    summary_path(out_dir).write_text(summary.model_dump_json(indent=2) + "\n")
    return summary


def _check_keys_and_references(tables: Mapping[str, pa.Table]) -> None:
    """Refuse to write duplicate primary keys or dangling references: a loader bug or a source
    the loader does not understand, never something to leave to downstream validation."""
    for name, table in tables.items():
        schema = TABLES[name]
        keys = list(schema.primary_key)
        counts = table.group_by(keys).aggregate([([], "count_all")])
        duplicated = counts.filter(pc.greater(counts.column("count_all"), 1))
        if duplicated.num_rows:
            example = duplicated.slice(0, 1).to_pylist()[0]
            raise LoaderError(
                f"{name}: {duplicated.num_rows} duplicated primary key(s), e.g. {example}"
            )
        for fk in schema.foreign_keys:
            if fk.table not in tables:
                raise LoaderError(f"{name} refers to {fk.table}, which this source did not build")
            values = table.column(fk.column)
            known = tables[fk.table].column(fk.ref_column)
            dangling = pc.invert(pc.is_in(values, value_set=known.combine_chunks()))
            # Null references (e.g. a login without product) are not dangling.
            dangling = pc.and_kleene(dangling, pc.is_valid(values))
            missing = pc.sum(dangling.cast(pa.int64())).as_py() or 0
            if missing:
                example = values.filter(dangling)[0].as_py()
                raise LoaderError(
                    f"{name}.{fk.column}: {missing} row(s) refer to no {fk.table}.{fk.ref_column}, "
                    f"e.g. {example!r}"
                )
