"""What a segmentation run may be told: k range, representation, seeds, stability bar."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SegmentationParams(BaseModel):
    """Parameters of one segmentation fit; part of its version hash."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k_min: int = Field(
        default=3, ge=2, description="Smallest number of segments per customer type."
    )
    k_max: int = Field(
        default=10, ge=2, description="Largest number of segments per customer type."
    )
    components: int = Field(
        default=4, ge=1, le=21, description="Principal components k-means clusters in."
    )
    seed: int = Field(default=0, ge=0, description="Seed of k-means, samples and bootstraps.")
    n_init: int = Field(default=10, ge=1, description="k-means restarts; the best inertia is kept.")
    sample_size: int = Field(
        default=20_000,
        ge=200,
        description="Customers per type (seeded sample) for silhouette, BIC and stability.",
    )
    min_segment_customers: int = Field(
        default=100,
        ge=1,
        description=(
            "Caps k at customers // this; a type below 2× gets one segment. Serving smooths "
            "segment priors with 20 pseudo-interactions, so a segment of a few dozen customers "
            "(a few interactions each per quarter) would mostly echo its type's priors anyway."
        ),
    )
    near_best_silhouette: float = Field(
        default=0.03, ge=0.0, le=1.0, description="Silhouette tolerance of the 'near-best' k."
    )
    selection_bootstraps: int = Field(
        default=10, ge=2, description="Bootstrap refits per candidate k during model selection."
    )
    selection_margin: float = Field(
        default=0.05,
        ge=0.0,
        le=0.5,
        description=(
            "Model selection asks for mean ARI ≥ min_ari + margin, so the independent check "
            "of the chosen k does not fall below min_ari by bootstrap noise alone."
        ),
    )
    bootstraps: int = Field(default=10, ge=2, description="Bootstrap refits of the chosen model.")
    min_ari: float = Field(
        default=0.8,
        ge=0.0,
        le=1.0,
        description="Mean adjusted Rand index a stable segmentation needs.",
    )

    @model_validator(mode="after")
    def _k_range(self) -> SegmentationParams:
        if self.k_max < self.k_min:
            raise ValueError(f"k_max ({self.k_max}) must be ≥ k_min ({self.k_min})")
        return self
