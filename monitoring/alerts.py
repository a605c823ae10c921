"""Alerts as structured events: one pydantic model every detector emits, stored as JSON lines.

The :class:`Alert` model is a contract shared by the drift monitor, the behaviour anomaly scorer
and the KPI anomaly detector; add optional fields only, never rename or remove one. What
``observed``, ``expected`` and ``score`` hold per kind:

* ``drift``: observed = the feature's mean now, expected = its reference mean (same units),
  score = PSI (unitless); ``subject`` is ``feature:<name>`` or ``score``.
* ``kpi_anomaly``: observed = the KPI in the window, expected = its forecast or baseline,
  score = the detector's statistic; ``subject`` is ``kpi:<name>``.
* ``behaviour_anomaly``: observed = the customer's anomaly score (0..1), expected = the median
  score of all customers scored, score = the customer's anomaly score; ``subject`` is
  ``customer:<id>``.

``alert_id`` is derived from what was detected (kind, subject, app, segment, window), not from
when, so re-running a detector over the same window gives the same ids and consumers can
de-duplicate. ``write_alerts`` appends, one JSON object per line; ``read_alerts`` reads them back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

AlertKind = Literal["drift", "kpi_anomaly", "behaviour_anomaly"]
Severity = Literal["watch", "alert"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime (a naive one is taken to be UTC already)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def alert_id_for(
    kind: str,
    subject: str,
    app: str | None,
    segment: str | None,
    window_start: datetime,
    window_end: datetime,
) -> str:
    """A stable id (24 hex characters) for what was detected: same inputs, same id."""
    key = "|".join(
        [
            kind,
            subject,
            app or "",
            segment or "",
            as_utc(window_start).isoformat(),
            as_utc(window_end).isoformat(),
        ]
    )
    return hashlib.sha256(key.encode()).hexdigest()[:24]


class Alert(BaseModel):
    """One detected problem, with enough context to act on it without re-running the detector."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alert_id: str = Field(min_length=1, description="stable id of what was detected")
    kind: AlertKind
    subject: str = Field(
        min_length=1,
        description="what is affected: 'feature:<name>', 'score', 'customer:<id>', 'kpi:<name>'",
    )
    app: str | None = Field(default=None, description="rib, cib, nli, imobile; None = all apps")
    segment: str | None = Field(default=None, description="customer segment; None = all")
    window_start: datetime = Field(description="start of the period the evidence covers (UTC)")
    window_end: datetime = Field(description="end of the period the evidence covers (UTC)")
    # Finite only: NaN would be written as null and the line could not be read back.
    observed: float = Field(
        allow_inf_nan=False, description="the monitored quantity as observed (see module doc)"
    )
    expected: float | None = Field(
        default=None, allow_inf_nan=False, description="what it was expected to be"
    )
    score: float = Field(
        allow_inf_nan=False, description="the detector's statistic compared with its threshold"
    )
    severity: Severity
    detected_at: datetime = Field(default_factory=_utc_now, description="when (UTC)")
    details: dict[str, Any] = Field(default_factory=dict, description="detector-specific context")

    @field_validator("window_start", "window_end", "detected_at")
    @classmethod
    def _utc(cls, moment: datetime) -> datetime:
        return as_utc(moment)

    @model_validator(mode="after")
    def _window_in_order(self) -> Self:
        if self.window_end < self.window_start:
            raise ValueError(
                f"window_end ({self.window_end.isoformat()}) is before "
                f"window_start ({self.window_start.isoformat()})"
            )
        return self

    @classmethod
    def create(
        cls,
        *,
        kind: AlertKind,
        subject: str,
        window_start: datetime,
        window_end: datetime,
        observed: float,
        score: float,
        severity: Severity,
        expected: float | None = None,
        app: str | None = None,
        segment: str | None = None,
        details: dict[str, Any] | None = None,
        detected_at: datetime | None = None,
    ) -> Alert:
        """An alert whose ``alert_id`` is derived from kind, subject, app, segment and window."""
        return cls(
            alert_id=alert_id_for(kind, subject, app, segment, window_start, window_end),
            kind=kind,
            subject=subject,
            app=app,
            segment=segment,
            window_start=window_start,
            window_end=window_end,
            observed=observed,
            expected=expected,
            score=score,
            severity=severity,
            detected_at=detected_at or _utc_now(),
            details=details or {},
        )


def write_alerts(path: Path, alerts: Iterable[Alert]) -> int:
    """Append ``alerts`` to the JSON-lines file ``path`` (created with its folder); returns count."""
    path = Path(path)
    lines = [alert.model_dump_json() + "\n" for alert in alerts]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as sink:
        sink.writelines(lines)
    return len(lines)


def read_alerts(path: Path) -> list[Alert]:
    """Every alert in the JSON-lines file ``path``; a bad line is an error naming its number."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"alerts: no file at {path}")
    alerts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            alerts.append(Alert.model_validate_json(line))
        except ValueError as error:
            raise ValueError(f"alerts: {path} line {number}: {error}") from error
    return alerts
