"""Offline evaluation of Persona's rankers: metrics, candidate protocols, the evaluator, reports.

Typical use::

    result = evaluate(ranker, ExampleSet(root), split="test", protocol="sampled")
    write_report([result, ...], out_dir, "Next-item ranking", baseline_name="popularity")
"""

from training.evaluation.evaluate import (
    GROUPABLE,
    EvaluationResult,
    GroupMetrics,
    evaluate,
    evaluate_pointwise,
    per_example_frame,
    summarise,
    take_rows,
)
from training.evaluation.metrics import (
    CalibrationResult,
    RankCounts,
    ReliabilityPoint,
    calibration,
    metric_names,
    per_example_metrics,
    rank_counts,
    target_rank,
)
from training.evaluation.protocols import (
    PROTOCOLS,
    Candidates,
    ProtocolName,
    build_candidates,
    candidates,
    full,
    rankable,
    sampled,
)
from training.evaluation.report import (
    Lift,
    ReportDocument,
    ReportPaths,
    compute_lifts,
    load_results,
    render_markdown,
    write_report,
)

__all__ = [
    "GROUPABLE",
    "PROTOCOLS",
    "CalibrationResult",
    "Candidates",
    "EvaluationResult",
    "GroupMetrics",
    "Lift",
    "ProtocolName",
    "RankCounts",
    "ReliabilityPoint",
    "ReportDocument",
    "ReportPaths",
    "build_candidates",
    "calibration",
    "candidates",
    "compute_lifts",
    "evaluate",
    "evaluate_pointwise",
    "full",
    "load_results",
    "metric_names",
    "per_example_frame",
    "per_example_metrics",
    "rank_counts",
    "rankable",
    "render_markdown",
    "sampled",
    "summarise",
    "take_rows",
    "target_rank",
    "write_report",
]
