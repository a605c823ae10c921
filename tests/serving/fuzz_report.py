"""The tally of one schemathesis run: cases per operation and status, what failed. The test
records its figures with ``tests.figures`` (printed at the end of the pytest run) and, where
``PERSONA_FUZZ_REPORT`` names a path, writes the whole tally there as JSON, so the README's
figure is reproducible with one command."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The env var naming where the JSON summary goes (nothing is written when unset).
REPORT_ENV = "PERSONA_FUZZ_REPORT"


@dataclass
class FuzzReport:
    seed: str
    operations: dict[str, Counter[int]] = field(default_factory=dict)
    by_mode: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def record(self, operation: str, mode: str, status: int) -> None:
        self.operations.setdefault(operation, Counter())[status] += 1
        self.by_mode[mode] += 1

    @property
    def cases(self) -> int:
        return sum(sum(c.values()) for c in self.operations.values())

    @property
    def statuses(self) -> Counter[int]:
        total: Counter[int] = Counter()
        for counts in self.operations.values():
            total.update(counts)
        return total

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def summary_line(self) -> str:
        statuses = ", ".join(f"{s}: {n:,}" for s, n in sorted(self.statuses.items()))
        return (
            f"schemathesis: {self.cases:,} cases over {len(self.operations)} operations, "
            f"5xx: {self.server_errors}, statuses {{{statuses}}}, "
            f"failed checks: {len(self.failures)} ({self.wall_s:.0f} s)"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "summary": self.summary_line(),
            "cases": self.cases,
            "server_errors": self.server_errors,
            "statuses": {str(s): n for s, n in sorted(self.statuses.items())},
            "operations": {
                op: {
                    "cases": sum(counts.values()),
                    "statuses": {str(s): n for s, n in sorted(counts.items())},
                }
                for op, counts in self.operations.items()
            },
            "cases_by_generation_mode": dict(self.by_mode),
            "failures": self.failures,
            "seed": self.seed,
            "wall_s": round(self.wall_s, 1),
        }

    def write_if_asked(self) -> Path | None:
        target = os.environ.get(REPORT_ENV)
        if not target:
            return None
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n")
        return path
