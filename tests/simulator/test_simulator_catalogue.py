"""The fixed catalogue: size, categories, apps, customer types, eligibility."""

from __future__ import annotations

import numpy as np
import pytest

from persona import domain
from persona.schemas import PRODUCTS
from persona.simulator import PRODUCTS_CATALOGUE, Catalogue
from persona.simulator.catalogue import eligible

_PREFIX = {
    "card": "card_",
    "loan": "loan_",
    "deposit": "dep_",
    "insurance": "ins_",
    "investment": "inv_",
    "payment": "pay_",
}


def test_size_ids_and_categories() -> None:
    ids = [p.product_id for p in PRODUCTS_CATALOGUE]
    assert 30 <= len(ids) <= 60
    assert len(set(ids)) == len(ids)
    assert {p.category for p in PRODUCTS_CATALOGUE} == set(domain.BANK_CATEGORIES)
    for product in PRODUCTS_CATALOGUE:
        assert product.product_id.startswith(_PREFIX[product.category]), product.product_id
    for expected in ("card_gold", "loan_home", "ins_home", "dep_term_12m", "inv_equity_fund"):
        assert expected in ids
    assert "pay_fx_transfer" in ids


def test_apps_and_customer_types_make_sense() -> None:
    for product in PRODUCTS_CATALOGUE:
        assert set(product.apps) <= set(domain.APPS) and product.apps
        assert set(product.customer_types) <= set(domain.CUSTOMER_TYPES) and product.customer_types
        if product.customer_types == ("corporate",):
            assert "cib" in product.apps, product.product_id
        if "cib" in product.apps:
            assert "corporate" in product.customer_types, product.product_id
        assert 1 <= product.risk_class <= 5
        assert 0.0 <= product.margin_weight <= 10.0
    insurance = [p for p in PRODUCTS_CATALOGUE if p.category == "insurance"]
    in_nli_or_mobile = [p for p in insurance if {"nli", "imobile"} & set(p.apps)]
    assert len(in_nli_or_mobile) == len(insurance)
    assert sum("nli" in p.apps for p in insurance) == len(insurance)


def test_every_app_and_type_has_a_full_slate_to_show() -> None:
    cat = Catalogue()
    for t, ctype in enumerate(domain.CUSTOMER_TYPES):
        enrollable = ("cib", "imobile") if ctype == "corporate" else ("rib", "imobile", "nli")
        for app in enrollable:
            a = domain.APPS.index(app)
            assert (cat.app_allowed[a] & cat.type_allowed[t]).sum() >= 3, (ctype, app)


def test_products_table_conforms_and_is_fixed() -> None:
    first, second = Catalogue().to_arrow(), Catalogue().to_arrow()
    assert first.schema == PRODUCTS.arrow_schema()
    assert first.equals(second)
    assert first.num_rows == len(PRODUCTS_CATALOGUE)


def test_eligibility_rules() -> None:
    cat = Catalogue()
    idx = {pid: i for i, pid in enumerate(cat.product_ids)}
    ok = eligible(
        cat,
        is_corporate=np.array([False, False, True, False]),
        age=np.array([19.0, 45.0, np.nan, 45.0], dtype=np.float32),
        income_index=np.array([0, 4, 2, 4], dtype=np.int8),
        kyc_level=np.array([1, 3, 2, 3], dtype=np.int8),
        risk_index=np.array([0, 3, 1, 0], dtype=np.int8),
    )
    young_poor, rich_aggressive, company, rich_conservative = ok
    assert not young_poor[idx["loan_home"]]  # min age 25, min income middle
    assert young_poor[idx["card_student"]]
    assert rich_aggressive[idx["card_platinum"]] and rich_aggressive[idx["inv_emerging_markets"]]
    assert not rich_conservative[idx["inv_emerging_markets"]]  # risk class 5 > 0 + 2
    assert company[idx["loan_business_term"]] and not company[idx["loan_home"]]
    assert not rich_aggressive[idx["card_corporate"]]


def test_unknown_product_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="product_ids"):
        Catalogue().index_of(["card_gold", "card_unicorn"])
