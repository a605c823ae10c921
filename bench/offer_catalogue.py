"""A bigger catalogue for scale benchmarks: the simulated bank's 50 products plus priced offer
variants of them (a real bank's offer book: the same card or loan under several campaigns and
price tiers). Variants keep their base product's category, apps, eligibility and risk class, so
retrieval, the model and every rule see them as real products; they get no ground truth, which
benchmarks of cost do not need (the model is initialised, not trained).

Applied to ``raw/products`` after simulation and before validation, so the clean table, the
features, the training vocabulary and serving's catalogue all carry the same items.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from persona.layout import DataLayout, conform, write_table
from persona.schemas import PRODUCTS


def expand_catalogue(data_dir: Path, total_items: int, seed: int) -> int:
    """Grow ``raw/products`` to ``total_items`` rows (no-op when already that big); returns the
    number of products now in the catalogue."""
    import duckdb

    folder = DataLayout(Path(data_dir)).raw_table("products")
    with duckdb.connect() as con:
        base = con.sql(f"SELECT * FROM read_parquet('{folder}/**/*.parquet')").to_arrow_table()
    originals = base.filter(pc.invert(pc.match_substring(base["product_id"], "__")))
    if base.num_rows >= total_items:
        return base.num_rows
    n_base = originals.num_rows
    extra = total_items - n_base
    rng = np.random.default_rng(seed)
    source = np.arange(extra) % n_base
    variants = originals.take(pa.array(source))
    number = np.arange(extra) // n_base + 1
    ids = [
        f"{pid}__offer{k:03d}"
        for pid, k in zip(variants["product_id"].to_pylist(), number, strict=True)
    ]
    names = [
        f"{name} (offer {k})" for name, k in zip(variants["name"].to_pylist(), number, strict=True)
    ]
    margin = np.clip(variants["margin_weight"].to_numpy() * rng.uniform(0.8, 1.2, extra), 0, 10)
    variants = (
        variants.set_column(variants.schema.get_field_index("product_id"), "product_id", [ids])
        .set_column(variants.schema.get_field_index("name"), "name", [names])
        .set_column(
            variants.schema.get_field_index("margin_weight"), "margin_weight", [margin.tolist()]
        )
    )
    table = pa.concat_tables([conform(originals, PRODUCTS), conform(variants, PRODUCTS)])
    write_table(folder, table, PRODUCTS)
    return table.num_rows
