"""Experiment analysis: per-variant rates, lifts with confidence intervals, p-values,
sample-ratio mismatch, CUPED, per-app and per-segment readouts (``persona experiment analyze``).

``sources`` turns the served-impression log or any CSV/Parquet table into per-unit data,
``readout`` does the statistics, ``report`` writes JSON, PNG and HTML.
"""

from monitoring.experiments.readout import (
    ExperimentReadout,
    Lift,
    LiftEstimate,
    MetricReadout,
    SampleRatioCheck,
    SliceReadout,
    VariantRate,
    compare_variants,
    experiment_readout,
    readout_slice,
    sample_ratio_mismatch,
)
from monitoring.experiments.report import ReadoutPaths, write_readout
from monitoring.experiments.sources import (
    ExperimentUnits,
    Metric,
    experiment_arms,
    units_from_event_log,
    units_from_table,
)

__all__ = [
    "ExperimentReadout",
    "ExperimentUnits",
    "Lift",
    "LiftEstimate",
    "Metric",
    "MetricReadout",
    "ReadoutPaths",
    "SampleRatioCheck",
    "SliceReadout",
    "VariantRate",
    "compare_variants",
    "experiment_arms",
    "experiment_readout",
    "readout_slice",
    "sample_ratio_mismatch",
    "units_from_event_log",
    "units_from_table",
    "write_readout",
]
