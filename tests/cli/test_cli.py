"""The `persona` CLI: the demo end to end, and bad input refused with a message, not a trace."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from persona.cli import app
from persona.settings import get_settings


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Settings read from the environment of this test only."""
    monkeypatch.setenv("PERSONA_FEAST_PROJECT", f"cli_{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("PERSONA_DATA_ROOTS", json.dumps([str(tmp_path)]))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_bad_option_value_names_the_field(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "simulate", "--customers", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "customers" in result.output
    assert "Traceback" not in result.output


def test_validate_without_raw_data_says_what_is_missing(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "validate", str(tmp_path)])
    assert result.exit_code == 2
    assert "customers" in result.output
    assert "Traceback" not in result.output


def test_features_build_refuses_unvalidated_data(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["features", "build", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "persona data validate" in result.output


def test_loader_refuses_a_path_outside_the_data_roots(
    runner: CliRunner, tmp_path: Path, isolated_settings: None
) -> None:
    outside = tmp_path.parent / f"elsewhere_{uuid.uuid4().hex[:6]}.csv"
    outside.write_text("u,i,t\n1,2,2026-01-01\n")
    try:
        result = runner.invoke(
            app,
            [
                "data", "load", "csv", str(outside), "--user", "u", "--item", "i",
                "--timestamp", "t", "--default-app", "rib", "--out", str(tmp_path / "out"),
            ],
        )  # fmt: skip
    finally:
        outside.unlink()
    assert result.exit_code == 2
    assert "outside" in result.output.lower()


@pytest.mark.slow
@pytest.mark.parametrize("online_store", ["sqlite", "redis"])
def test_demo_runs_end_to_end_and_prints_an_online_vector(
    runner: CliRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    isolated_settings: None,
    online_store: str,
) -> None:
    monkeypatch.setenv("PERSONA_ONLINE_STORE", online_store)
    get_settings.cache_clear()
    result = runner.invoke(
        app,
        ["demo", "--customers", "300", "--days", "21", "--seed", "3", "--data-dir", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    assert f"online store: {online_store}" in result.output
    assert "online features" in result.output
    assert "seq_product_ids" in result.output
    assert "where to look" in result.output
    assert (tmp_path / "validation_report.json").exists()
    assert (tmp_path / "features" / "customer_sequence" / "data.parquet").exists()
    assert "POST /v1/recommendations" in result.output
    served = json.loads((tmp_path / "serving" / "demo_responses.json").read_text())
    assert {r["app"] for r in served} == {"rib", "cib", "nli", "imobile"}
    assert all(r["items"] for r in served if r["app"] != "cib"), served
    if online_store == "redis":
        assert not any(r["degraded"] for r in served), served
    assert "dashboard" in result.output
    page = (tmp_path / "dashboard" / "index.html").read_text()
    for panel in ("panel-kpi-app", "panel-drift", "panel-segments", "panel-anomalies"):
        assert f'id="{panel}"' in page


def test_bad_setting_in_the_environment_names_the_variable(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERSONA_ONLINE_STORE", "bogus")
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["features", "show", "--customer-id", "1"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "online_store" in result.output
    assert "Traceback" not in result.output
