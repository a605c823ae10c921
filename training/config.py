"""One typed config per training run (YAML on disk, validated by pydantic)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from persona import domain

Protocol = Literal["sampled", "full", "candidates"]


class ArchitectureConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    d_model: int = Field(64, ge=8)
    n_blocks: int = Field(2, ge=1)
    n_heads: int = Field(1, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    use_context: bool = True


class ScalingSettings(BaseModel):
    """Ray Train scaling: the same config trains on a laptop or a GPU cluster."""

    model_config = ConfigDict(extra="forbid")

    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(2.0, gt=0)
    torch_threads: int | None = Field(None, ge=1)


class RegistrySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: Path | None = Field(None, description="registry folder; None = don't register")
    model_name: str = "persona-ranker"
    serve_apps: list[str] = Field(default_factory=list, description="mark this version serving")

    @field_validator("serve_apps")
    @classmethod
    def _known_apps(cls, apps: list[str]) -> list[str]:
        unknown = [a for a in apps if a not in domain.APPS]
        if unknown:
            raise ValueError(f"unknown app(s) {unknown}; apps are {', '.join(domain.APPS)}")
        return apps

    @field_validator("root")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        return path.expanduser().resolve() if path is not None else None


class TrainConfig(BaseModel):
    """Everything one run needs; ``persona train --config run.yaml`` reads this."""

    model_config = ConfigDict(extra="forbid")

    run_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    examples: Path = Field(description="example set folder (persona train build-set ...)")
    output_dir: Path
    architecture: ArchitectureConfig = Field(default_factory=ArchitectureConfig)
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="cosine: linear warm-up, then cosine decay to 0 at the last epoch"
    )
    warmup_epochs: float = Field(0.5, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    bce_weight: float = Field(1.0, ge=0, description="weight of the click loss on shown items")
    patience: int = Field(3, ge=1, description="epochs without validation gain before stopping")
    eval_protocol: Protocol = "sampled"
    eval_k: int = Field(10, ge=1)
    seed: int = 0
    scaling: ScalingSettings = Field(default_factory=ScalingSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    baselines: list[Literal["global_popularity", "segment_popularity", "tabular"]] = Field(
        default_factory=lambda: ["global_popularity", "segment_popularity", "tabular"]
    )
    test_protocols: list[Protocol] = Field(default_factory=lambda: ["sampled", "full"])

    @field_validator("examples", "output_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        """Ray workers run elsewhere: every path is made absolute against the caller's cwd."""
        return path.expanduser().resolve()

    @classmethod
    def from_yaml(cls, path: Path, **overrides: object) -> TrainConfig:
        if not path.exists():
            raise FileNotFoundError(f"config: {path} does not exist")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"config: {path} must hold a mapping")
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(raw)
