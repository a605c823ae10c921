"""A registered transformer of an example set's exact shape, initialised (seeded) but not trained.

For tests and latency benchmarks: serving cost and behaviour depend on the model's shape, not
on its weights, and training is the training suite's business. Never used by ``persona demo``,
which trains and registers a real model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from training.examples import ExampleSet
from training.models.sequence_ranker import SequenceRanker, SequenceRankerConfig
from training.registry import ModelRegistry


def register_initialised_model(
    examples: ExampleSet,
    registry: ModelRegistry,
    out_dir: Path,
    *,
    seed: int,
    apps: tuple[str, ...] = ("rib", "cib", "nli", "imobile"),
    model_name: str = "persona-ranker",
    **architecture: object,
) -> int:
    """Save, register and alias as serving for ``apps``; returns the registered version."""
    torch.manual_seed(seed)
    manifest = examples.manifest()
    model = SequenceRanker(SequenceRankerConfig.for_manifest(manifest, **architecture))
    model.save(out_dir)
    shutil.copy2(examples.manifest_path, out_dir / "manifest.json")
    shutil.copy2(examples.vocabulary_path, out_dir / "vocabulary.json")
    registered = registry.register_run(
        model_name=model_name,
        model_dir=out_dir,
        config={"seed": seed, "trained": False, **architecture},
        metrics={},
        feature_service=manifest.feature_service or "none",
        feature_service_version=manifest.feature_service_version or "none",
        data_snapshot=manifest.data_snapshot,
        seed=seed,
        dataset=manifest.dataset,
    )
    for app in apps:
        registry.mark_serving(model_name, registered.version, app)
    return registered.version
