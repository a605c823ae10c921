"""``persona examples build`` -> ``persona train --config`` -> ``persona evaluate``, for real:
a small simulated bank, Ray Train, baselines, report files and the MLflow registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from persona.cli import app
from training.registry import ModelRegistry

runner = CliRunner()


def _config(tmp_path: Path, examples: Path, **overrides: object) -> Path:
    config = {
        "run_name": "tiny",
        "examples": str(examples),
        "output_dir": str(tmp_path / "run"),
        "architecture": {"d_model": 16, "n_blocks": 1, "dropout": 0.1},
        "epochs": 2,
        "batch_size": 128,
        "eval_protocol": "candidates",
        "test_protocols": ["candidates", "full"],
        "lr_schedule": "cosine",
        "seed": 1,
        "scaling": {"cpus_per_worker": 1, "torch_threads": 1},
        "registry": {"root": str(tmp_path / "registry"), "serve_apps": ["rib", "imobile"]},
    } | overrides
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_build_train_evaluate_register_end_to_end(
    tiny_bank: Path, tmp_path: Path, ray_session: None
) -> None:
    examples = tmp_path / "examples"
    built = runner.invoke(
        app,
        ["examples", "build", "impressions", "--data-dir", str(tiny_bank), "--out", str(examples),
         "--max-len", "10", "--valid-days", "5", "--test-days", "5"],
    )  # fmt: skip
    assert built.exit_code == 0, built.output

    trained = runner.invoke(app, ["train", "--config", str(_config(tmp_path, examples))])
    assert trained.exit_code == 0, trained.output
    assert "transformer vs" in trained.output and "registered version 1" in trained.output

    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and len(summary["history"]) == 2
    assert summary["train_samples_per_second"] > 0 and summary["peak_rss_mb"] > 0
    models = {key.split("/")[0] for key in summary["test"]}
    assert models == {"transformer", "global_popularity", "segment_popularity", "lightgbm"}
    for name in ("metrics.json", "report.md", "metrics.png", "groups.png", "reliability.png"):
        assert (run / "report" / name).stat().st_size > 0, name
    assert "segment_popularity" in (run / "report" / "report.md").read_text()

    registry = ModelRegistry(tmp_path / "registry")
    serving = registry.serving_version("persona-ranker", "rib")
    assert serving is not None and serving.version == 1
    assert serving.feature_service == "ranker_v1"
    assert (
        serving.data_snapshot
        == json.loads((examples / "manifest.json").read_text())["data_snapshot"]
    )
    assert registry.serving_version("persona-ranker", "cib") is None
    assert (registry.load_dir("persona-ranker", 1) / "model.pt").exists()

    evaluated = runner.invoke(app, ["evaluate", "--run", str(run), "--protocol", "candidates"])
    assert evaluated.exit_code == 0, evaluated.output
    assert (run / "evaluation" / "report.md").exists()


def test_a_bad_config_field_is_named(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["train", "--config", str(_config(tmp_path, tmp_path, epochs=0, eval_protocol="x"))]
    )
    assert result.exit_code == 2
    assert "epochs" in result.output and "eval_protocol" in result.output


def test_a_missing_config_is_named(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "nope.yaml" in result.output
