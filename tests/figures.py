"""Figures the reliability tests measure (requests during an outage, events acked vs stored,
fuzz cases run): printed at the end of the pytest run and, when ``PERSONA_TEST_FIGURES`` names a
file, written there as JSON (the README's reliability table is made from it)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FIGURES: dict[str, dict[str, Any]] = {}
ENV_VAR = "PERSONA_TEST_FIGURES"


def record_figure(name: str, **values: Any) -> None:
    FIGURES[name] = values


def summary_lines() -> list[str]:
    return [
        f"{name}: " + ", ".join(f"{key}={value}" for key, value in values.items())
        for name, values in sorted(FIGURES.items())
    ]


def write_figures() -> Path | None:
    target = os.environ.get(ENV_VAR)
    if not target or not FIGURES:
        return None
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(FIGURES, indent=2, sort_keys=True, default=str) + "\n")
    return path
