"""The report folder: metrics.json, report.md and the plots."""

from __future__ import annotations

import json

import pytest

from training.evaluation.evaluate import EvaluationResult, GroupMetrics
from training.evaluation.metrics import calibration
from training.evaluation.report import load_results, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def result(model: str, protocol: str, ndcg: float, hr: float, **extra) -> EvaluationResult:
    metrics = {"ndcg@10": ndcg, "hr@10": hr, "mrr": ndcg / 2, "auc": 0.9}
    groups = {
        "app": {
            "retail": GroupMetrics(n=60, metrics=metrics),
            "card": GroupMetrics(n=40, metrics=dict(metrics, **{"ndcg@10": ndcg / 2})),
        },
        "segment": {"young": GroupMetrics(n=100, metrics=metrics)},
    }
    return EvaluationResult(
        model=model,
        protocol=protocol,
        split="test",
        k=10,
        n_examples=100,
        metrics=metrics,
        groups=groups,
        **extra,
    )


@pytest.fixture
def results():
    cal = calibration([0.1, 0.2, 0.7, 0.9], [0, 1, 1, 1], bins=2)
    return [
        result("popularity", "sampled", 0.40, 0.60),
        result("popularity", "full", 0.05, 0.10),
        result("sasrec", "sampled", 0.50, 0.75, calibration=cal),
        result("sasrec", "full", 0.06, 0.11, calibration=cal),
    ]


def test_report_writes_every_file_and_lists_every_model(tmp_path, results):
    reference = {"SASRec (paper)": {"ndcg@10": 0.536, "hr@10": 0.741}}
    paths = write_report(
        results, tmp_path / "report", "Toy", reference=reference, baseline_name="popularity"
    )
    assert [p.name for p in paths.files()] == [
        "metrics.json",
        "report.md",
        "metrics.png",
        "groups.png",
        "reliability.png",
    ]
    for png in (paths.metrics_plot, paths.groups_plot, paths.reliability_plot):
        assert png.read_bytes().startswith(PNG_MAGIC)

    markdown = paths.report_md.read_text()
    assert markdown.startswith("# Toy")
    for model, protocol in [("popularity", "sampled"), ("popularity", "full")]:
        assert f"| {model} | {protocol} | test | " in markdown
    assert "| sasrec | sampled | test | 0.5000 | 0.7500 | 0.2500 | 0.9000 | 100 |" in markdown
    assert "| SASRec (paper) | published/reference | — | 0.5360 | 0.7410 | — | — | — |" in markdown
    # Lift vs popularity, same protocol: NDCG 0.50/0.40 - 1 = +25%, HR 0.75/0.60 - 1 = +25%,
    # full NDCG 0.06/0.05 - 1 = +20%, HR 0.11/0.10 - 1 = +10%, AUC equal = +0%.
    assert "## Lift vs popularity" in markdown
    assert "| sasrec | sampled | test | +25.0% | +25.0% | +25.0% | +0.0% |" in markdown
    assert "| sasrec | full | test | +20.0% | +10.0% | +20.0% | +0.0% |" in markdown
    # Per-app table (two apps); no per-segment table (one segment).
    assert "## By app" in markdown
    assert "| card | sasrec | sampled | 0.2500 | 0.7500 | 0.2500 | 40 |" in markdown
    assert "## By segment" not in markdown
    assert "## Calibration" in markdown

    assert load_results(paths.metrics_json) == results
    document = json.loads(paths.metrics_json.read_text())
    assert document["reference"] == reference
    assert len(document["lifts"]) == 2


def test_report_without_groups_or_calibration_skips_those_plots(tmp_path):
    plain = result("popularity", "sampled", 0.4, 0.6).model_copy(update={"groups": {}})
    paths = write_report([plain], tmp_path, "Plain")
    assert paths.groups_plot is None
    assert paths.reliability_plot is None
    assert [p.name for p in paths.files()] == ["metrics.json", "report.md", "metrics.png"]
    assert "Lift" not in paths.report_md.read_text()


def test_report_refuses_unknown_baseline_and_duplicates(tmp_path, results):
    with pytest.raises(ValueError, match="baseline_name"):
        write_report(results, tmp_path, "Toy", baseline_name="bpr")
    with pytest.raises(ValueError, match="results"):
        write_report([*results, results[0]], tmp_path, "Toy")
    with pytest.raises(ValueError, match="results"):
        write_report([], tmp_path, "Toy")
