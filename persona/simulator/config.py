"""What a simulation run is asked to do, and what it reports back."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Fixed default end of the simulated window, so default output is deterministic and past.
DEFAULT_END_DATE = date(2026, 10, 31)


class SimulationConfig(BaseModel):
    """Size, seed and window of a simulated bank. Invalid values raise ``pydantic.ValidationError``
    (a ``ValueError``) naming the field.

    The window is the ``days`` calendar days ending with ``end_date`` (inclusive). Output is a
    pure function of the whole config: the same config gives byte-identical tables, and
    ``chunk_size`` is part of it (customers of a chunk share one random stream).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    customers: int = Field(ge=1, le=100_000_000, description="Number of customers to simulate.")
    days: int = Field(ge=1, le=730, description="Length of the simulated window in days.")
    seed: int = Field(ge=0, description="Root seed; every random stream derives from it.")
    end_date: date = Field(
        default=DEFAULT_END_DATE, description="Last simulated day (inclusive), not in the future."
    )
    chunk_size: int = Field(
        default=50_000, ge=1, le=1_000_000, description="Customers simulated (and held) at once."
    )
    corporate_share: float = Field(
        default=0.08, ge=0.0, le=1.0, description="Share of customers that are corporate clients."
    )
    slate_size: int = Field(
        default=3, ge=1, le=10, description="Products shown per login (impressions per slate)."
    )

    @field_validator("end_date")
    @classmethod
    def _not_in_future(cls, value: date) -> date:
        today = datetime.now(UTC).date()
        if value > today:
            raise ValueError(f"end_date {value} is in the future (today is {today} UTC)")
        return value

    @property
    def start_date(self) -> date:
        """First simulated day."""
        return self.end_date - timedelta(days=self.days - 1)

    @property
    def num_chunks(self) -> int:
        return -(-self.customers // self.chunk_size)


class SimulationSummary(BaseModel):
    """What a run wrote and what it cost."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    out_dir: Path
    customers: int
    days: int
    seed: int
    start_date: date
    end_date: date
    rows: dict[str, int] = Field(description="Rows written per canonical table.")
    wall_seconds: float = Field(description="Wall-clock time of the run, seconds.")
    peak_rss_bytes: int = Field(
        description="Peak resident set size of this process (and waited-for children), bytes."
    )

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())
