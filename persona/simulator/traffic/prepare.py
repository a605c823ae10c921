"""Everything a live endpoint needs for a simulated bank, through the platform's normal path:
simulate → validate → DuckDB features → feast apply → materialise (Redis) → impression
examples → Ray Train fit + baselines + test report → MLflow registry (serving every app) →
serving priors. The same steps as ``persona demo``, at a size and model of the caller's choice.
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from persona.settings import PersonaSettings


class BankSpec(BaseModel):
    """The simulated bank and the model trained on its logs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customers: int = Field(30_000, ge=50)
    days: int = Field(90, ge=14)
    seed: int = Field(42, ge=0)
    end_date: date | None = Field(None, description="Last simulated day (default: simulator's).")
    epochs: int = Field(5, ge=1)
    d_model: int = Field(64, ge=8)
    n_blocks: int = Field(2, ge=1)
    n_heads: int = Field(2, ge=1)
    train: bool = Field(
        True, description="Train with Ray Train; False registers an initialised model (tests)."
    )


class PreparedBank(BaseModel):
    data_dir: Path
    seconds: dict[str, float]
    run_summary: dict[str, Any] | None = None
    registered_version: int | None = None


def prepare_bank(
    spec: BankSpec, data_dir: Path, settings: PersonaSettings, progress: bool = True
) -> PreparedBank:
    """Build ``data_dir`` for serving; Redis (``settings.redis_url``) holds its online features."""
    from persona.features.build import build_features
    from persona.features.store import (
        OnlineStoreChoice,
        apply_definitions,
        materialize_all,
        open_store,
    )
    from persona.simulator import SimulationConfig, simulate_bank
    from persona.validation import validate_dataset
    from serving.priors import build_priors
    from training.sets.impressions import build_impression_set

    seconds: dict[str, float] = {}
    started = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal started
        seconds[name] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()

    sim = {"customers": spec.customers, "days": spec.days, "seed": spec.seed}
    if spec.end_date is not None:
        sim["end_date"] = spec.end_date
    simulate_bank(SimulationConfig(**sim), data_dir, progress=progress)
    lap("simulate")
    report = validate_dataset(data_dir, progress=progress)
    if not report.passed:
        raise ValueError(f"data-dir: validation failed, see {data_dir / 'validation_report.json'}")
    lap("validate")
    build_features(data_dir, progress=progress)
    lap("features_build")
    choice = OnlineStoreChoice("redis", "traffic run", settings.redis_url)
    store = open_store(settings, choice)
    apply_definitions(store, data_dir)
    materialize_all(store, data_dir, progress=progress)
    lap("feast_apply_materialize")
    examples = data_dir / "examples"
    build_impression_set(data_dir, examples, dataset="simulated_bank", max_len=20, seed=spec.seed)
    lap("examples")
    result = PreparedBank(data_dir=data_dir, seconds=seconds)
    if spec.train:
        from training.config import TrainConfig
        from training.pipeline import run_training

        config = TrainConfig(
            run_name="ab",
            examples=examples,
            output_dir=data_dir / "runs" / "ab",
            architecture={
                "d_model": spec.d_model,
                "n_blocks": spec.n_blocks,
                "n_heads": spec.n_heads,
                "dropout": 0.2,
            },
            epochs=spec.epochs,
            batch_size=256,
            learning_rate=0.002,
            lr_schedule="cosine",
            warmup_epochs=0.5,
            bce_weight=1.0,
            patience=3,
            eval_protocol="candidates",
            test_protocols=["candidates"],
            seed=spec.seed,
            registry={
                "root": data_dir / "registry",
                "serve_apps": ["rib", "cib", "nli", "imobile"],
            },
        )
        summary = run_training(config, progress=progress)
        result.run_summary = summary.model_dump()
        result.registered_version = summary.registered_version
        lap("train_evaluate_register")
    else:
        from serving.scaffold import register_initialised_model
        from training.examples import ExampleSet
        from training.registry import ModelRegistry

        result.registered_version = register_initialised_model(
            ExampleSet(examples),
            ModelRegistry(data_dir / "registry"),
            data_dir / "runs" / "initialised",
            seed=spec.seed,
            d_model=spec.d_model,
            n_blocks=spec.n_blocks,
        )
        lap("register_initialised")
    build_priors(data_dir).save(data_dir / "serving")
    lap("priors")
    (data_dir / "prepared.json").write_text(result.model_dump_json(indent=2))
    return result
