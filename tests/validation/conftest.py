"""Fixtures of the validation tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from persona.validation import ValidationReport, validate_dataset
from tests.validation.datasets import NOW


@pytest.fixture
def validate() -> Callable[[Path], ValidationReport]:
    """``validate(root)``: the validator at the fixed test time, without printing."""

    def run(root: Path) -> ValidationReport:
        return validate_dataset(root, now=NOW, progress=False)

    return run
