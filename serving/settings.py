"""The serving graph's arguments: one typed object every deployment is built from."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from persona.settings import PersonaSettings
from serving.config import DEFAULT_CONFIG_DIR


class Budgets(BaseModel):
    """Time budgets (milliseconds). A stage over budget answers from its fallback."""

    model_config = ConfigDict(extra="forbid")

    features_ms: float = Field(50.0, gt=0)
    ranking_ms: float = Field(150.0, gt=0)
    total_ms: float = Field(500.0, gt=0)


class ServingArgs(BaseModel):
    """Arguments of :func:`serving.app.build_app` (also the ``args:`` block of serve_config.yaml)."""

    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(description="The data dir the features, catalogue and priors come from.")
    config_dir: Path = Field(
        DEFAULT_CONFIG_DIR, description="apps.yaml, rules.yaml, experiments.yaml"
    )
    online_store: Literal["redis", "sqlite"] = "redis"
    redis_url: str = "redis://127.0.0.1:6379/0"
    feast_project: str = Field("persona", pattern=r"^[a-z][a-z0-9_]*$")
    registry_root: Path | None = Field(
        None, description="MLflow registry (default: <data_dir>/registry)"
    )
    model_name: str = "persona-ranker"
    placement: Literal["colocated", "fused", "graph"] = Field(
        "colocated",
        description="colocated: every request stage in each ingress replica; fused: the model "
        "in its own batched deployment; graph: every stage its own deployment "
        "(serving.placement).",
    )
    feature_cache_ttl_s: float = Field(5.0, ge=0)
    max_candidates: int = Field(200, ge=1)
    max_batch_size: int = Field(16, ge=1, le=256)
    batch_wait_timeout_s: float = Field(
        0.003, ge=0, le=0.1, description="RankingStage's @serve.batch wait (fused and graph)."
    )
    colocated_batch_wait_s: float = Field(
        0.0,
        ge=0,
        le=0.1,
        description="The in-process model's batch wait (colocated, single process); 0 batches "
        "whatever is queued on the loop's next turn.",
    )
    budgets: Budgets = Field(default_factory=lambda: Budgets())
    flush_interval_s: float = Field(
        2.0, gt=0, description="How often events go to the Parquet log."
    )

    @property
    def apps_file(self) -> Path:
        return self.config_dir / "apps.yaml"

    @property
    def rules_file(self) -> Path:
        return self.config_dir / "rules.yaml"

    @property
    def experiments_file(self) -> Path:
        return self.config_dir / "experiments.yaml"

    @property
    def registry(self) -> Path:
        return self.registry_root or self.data_dir / "registry"

    @property
    def serving_dir(self) -> Path:
        """What serving writes: priors, the write-ahead log, the live event log, audit spill."""
        return self.data_dir / "serving"

    @property
    def live_event_log(self) -> Path:
        return self.serving_dir / "events"

    def persona_settings(self) -> PersonaSettings:
        return PersonaSettings(
            data_dir=self.data_dir,
            online_store=self.online_store,
            redis_url=self.redis_url,
            feast_project=self.feast_project,
        )
