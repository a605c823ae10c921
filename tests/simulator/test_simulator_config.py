"""SimulationConfig: valid configs pass, bad ones fail naming the field."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pydantic
import pytest

from persona.simulator import DEFAULT_END_DATE, SimulationConfig


def test_defaults_and_window() -> None:
    cfg = SimulationConfig(customers=10, days=90, seed=3)
    assert cfg.end_date == DEFAULT_END_DATE == date(2026, 10, 31)
    assert cfg.start_date == date(2026, 8, 3)
    assert (cfg.end_date - cfg.start_date).days + 1 == 90
    assert cfg.chunk_size == 50_000 and cfg.slate_size == 3
    assert SimulationConfig(customers=120_001, days=1, seed=0).num_chunks == 3


@pytest.mark.parametrize(
    ("field", "overrides"),
    [
        ("customers", {"customers": 0}),
        ("days", {"days": 0}),
        ("days", {"days": 731}),
        ("seed", {"seed": -1}),
        ("chunk_size", {"chunk_size": 0}),
        ("corporate_share", {"corporate_share": 1.5}),
        ("slate_size", {"slate_size": 0}),
        ("end_date", {"end_date": datetime.now(UTC).date() + timedelta(days=2)}),
        ("colour", {"colour": "blue"}),
    ],
)
def test_bad_values_name_the_field(field: str, overrides: dict[str, object]) -> None:
    values: dict[str, object] = {"customers": 10, "days": 14, "seed": 1, **overrides}
    with pytest.raises(ValueError) as excinfo:
        SimulationConfig(**values)
    assert isinstance(excinfo.value, pydantic.ValidationError)
    assert field in {str(err["loc"][0]) for err in excinfo.value.errors()}


def test_config_is_immutable() -> None:
    cfg = SimulationConfig(customers=10, days=14, seed=1)
    with pytest.raises(pydantic.ValidationError):
        cfg.days = 20  # type: ignore[misc]
