"""Models: the transformer ranker and the baselines every report keeps beside it."""

from training.models.popularity import (
    GlobalPopularity,
    PopularityConfig,
    SegmentPopularity,
    SegmentPopularityConfig,
)
from training.models.tabular import TabularConfig, TabularRanker

__all__ = [
    "GlobalPopularity",
    "PopularityConfig",
    "SegmentPopularity",
    "SegmentPopularityConfig",
    "TabularConfig",
    "TabularRanker",
]
