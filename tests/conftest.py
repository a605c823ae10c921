"""Session-wide hooks: the figures reliability tests record (see tests/figures.py)."""

from __future__ import annotations

import pytest

from tests.figures import FIGURES, summary_lines, write_figures


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("measured by the reliability tests")
    for line in summary_lines():
        terminalreporter.write_line(line)
    path = write_figures()
    if path is not None:
        terminalreporter.write_line(f"written to {path}")
