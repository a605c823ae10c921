"""The product catalogue as serving sees it: read once from the canonical ``products`` table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from persona import domain
from persona.layout import DataLayout, parquet_glob


@dataclass(frozen=True)
class ProductInfo:
    """One product's public facts: what eligibility, suitability and consent rules read."""

    product_id: str
    category: str
    name: str
    apps: frozenset[str]
    customer_types: frozenset[str]
    min_age: int
    min_income_index: int  # -1 = no minimum
    min_kyc_level: int
    risk_class: int
    is_marketing_offer: bool


@dataclass(frozen=True)
class Catalogue:
    products: dict[str, ProductInfo]

    def __contains__(self, product_id: object) -> bool:
        return product_id in self.products

    def __getitem__(self, product_id: str) -> ProductInfo:
        return self.products[product_id]

    def __len__(self) -> int:
        return len(self.products)

    def ids(self) -> list[str]:
        return sorted(self.products)

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> Catalogue:
        """Read ``clean/products``; refuses an empty or missing table with the path in the error."""
        folder = DataLayout(Path(data_dir)).clean_table("products")
        if not folder.exists():
            raise FileNotFoundError(
                f"catalogue: no products table at {folder}; run `persona data simulate` or a loader"
            )
        with duckdb.connect() as con:  # a private connection: the default one is shared
            rows = con.sql(
                "SELECT product_id, category, name, apps, customer_types, min_age, min_income_band, "
                f"min_kyc_level, risk_class, is_marketing_offer FROM read_parquet('{parquet_glob(folder)}')"
            ).fetchall()
        if not rows:
            raise ValueError(f"catalogue: the products table at {folder} is empty")
        products = {
            pid: ProductInfo(
                product_id=pid,
                category=category,
                name=name,
                apps=frozenset(apps),
                customer_types=frozenset(types),
                min_age=int(min_age),
                min_income_index=(
                    domain.INCOME_BANDS.index(min_income) if min_income is not None else -1
                ),
                min_kyc_level=int(min_kyc),
                risk_class=int(risk),
                is_marketing_offer=bool(marketing),
            )
            for pid, category, name, apps, types, min_age, min_income, min_kyc, risk, marketing in rows
        }
        return cls(products)
