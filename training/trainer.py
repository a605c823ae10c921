"""Ray Train: the transformer fitted by ``TorchTrainer`` over Ray Data reading the example set.

Rank 0 evaluates on the validation split after every epoch (NDCG@k under the run's protocol),
saves a checkpoint only when validation improves, and stops the run after ``patience`` epochs
without improvement; so the run's last checkpoint is its best. Seeds: torch, numpy and Ray
Data's shuffle all derive from ``config.seed``. :func:`train_epoch` and :func:`validate` are
the per-epoch steps, so an in-process loop (``bench/training_throughput.py``) runs the same code.
"""

from __future__ import annotations

import math
import resource
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.config import TrainConfig
from training.examples import ExampleSet

#: Columns the training loop reads (ragged ``shown*`` only for the click loss).
TRAIN_COLUMNS = (
    "history",
    "history_types",
    "targets",
    "context_dense",
    "app",
    "segment",
    "device",
    "request_hour",
    "request_day_of_week",
    "shown",
    "shown_labels",
)


def _padded(values: np.ndarray, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ragged object array of 1-D arrays -> (B, W) int64 padded with 0, and a validity mask."""
    lengths = np.array([len(v) for v in values])
    w = int(lengths.max()) if width is None and len(values) else (width or 0)
    out = np.zeros((len(values), max(w, 1)), dtype=np.int64)
    valid = np.zeros_like(out, dtype=bool)
    for i, v in enumerate(values):
        out[i, : len(v)] = v
        valid[i, : len(v)] = True
    return out, valid


def shuffle_buffer_size(config: TrainConfig) -> int:
    """Rows in the local shuffle buffer each worker draws its batches from."""
    return max(config.batch_size * 20, 1000)


def shuffle_seed(config: TrainConfig, epoch: int) -> int:
    """Seed of the local shuffle in ``epoch`` (0-based): a different order every epoch."""
    return config.seed * 1000 + epoch


def learning_rate_factor(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate at each optimiser step."""
    total = max(config.epochs * steps_per_epoch, 1)
    warmup = config.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if config.lr_schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def batch_loss(
    core: Any,
    hidden: Any,
    inputs: dict[str, Any],
    columns: dict[str, np.ndarray],
    config: TrainConfig,
) -> Any:
    """Cross-entropy over the catalogue at every position with a target, plus the click loss
    (binary cross-entropy of the logged slate's items against their clicks) where slates exist."""
    import torch
    import torch.nn.functional as F

    targets = inputs["targets"]
    mask = targets > 0
    loss = torch.zeros((), device=hidden.device)
    if bool(mask.any()):
        logits = core.catalogue_logits(hidden[mask])
        loss = loss + F.cross_entropy(
            logits, targets[mask] - 1, label_smoothing=config.label_smoothing
        )
    if config.bce_weight > 0 and any(len(s) for s in columns["shown"]):
        shown, valid = _padded(columns["shown"])
        labels, _ = _padded(columns["shown_labels"], shown.shape[1])
        scores = core.item_scores(hidden[:, -1, :], torch.as_tensor(shown, device=hidden.device))
        valid_t = torch.as_tensor(valid, device=hidden.device)
        clicked = torch.as_tensor(labels, device=hidden.device, dtype=torch.float32)
        loss = loss + config.bce_weight * F.binary_cross_entropy_with_logits(
            scores[valid_t], clicked[valid_t]
        )
    return loss


@dataclass(frozen=True)
class EpochTraining:
    """One pass over a worker's training rows: mean batch loss, rows seen, wall seconds, and when
    the pass began (unix seconds, so a driver can place it on its own clock)."""

    loss: float
    samples: int
    seconds: float
    started_at: float


def seed_worker(seed: int) -> None:
    """Seed torch and numpy for one worker (rank r uses ``config.seed + r``)."""
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)


def torch_threads(config: TrainConfig) -> int:
    """Intra-op threads per worker: ``scaling.torch_threads`` or the worker's CPUs."""
    return config.scaling.torch_threads or max(int(config.scaling.cpus_per_worker), 1)


def make_optimiser(model: Any, config: TrainConfig, rows: int, world: int) -> tuple[Any, Any]:
    """Adam over ``model``'s parameters and the per-step learning-rate schedule for ``rows``
    training rows split over ``world`` workers."""
    import torch

    optimiser = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    steps_per_epoch = max(math.ceil(rows / world / config.batch_size), 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, learning_rate_factor(config, steps_per_epoch)
    )
    return optimiser, scheduler


def train_epoch(
    model: Any,
    core: Any,
    encoder: Any,
    optimiser: Any,
    scheduler: Any,
    batches: Iterable[dict[str, np.ndarray]],
    config: TrainConfig,
    device: Any,
) -> EpochTraining:
    """One optimiser step per batch of numpy columns (:data:`TRAIN_COLUMNS`); ``model`` may be
    the DDP wrapper of ``core``. Ray Train's workers and any in-process loop share it."""
    model.train()
    started_at, started = time.time(), time.perf_counter()
    losses: list[float] = []
    samples = 0
    for columns in batches:
        inputs = encoder.encode(columns, device)
        hidden = model(inputs)
        loss = batch_loss(core, hidden, inputs, columns, config)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        samples += len(columns["targets"])
    return EpochTraining(
        loss=float(np.mean(losses)) if losses else float("nan"),
        samples=samples,
        seconds=time.perf_counter() - started,
        started_at=started_at,
    )


def validate(core: Any, example_set: ExampleSet, config: TrainConfig) -> dict[str, float]:
    """NDCG@k and HR@k on the validation split under the run's protocol, the seconds it took,
    and when it finished (unix seconds)."""
    from training.evaluation import evaluate
    from training.models.sequence_ranker import TransformerRanker

    started = time.perf_counter()
    core.eval()
    result = evaluate(
        TransformerRanker(core),
        example_set,
        split="valid",
        protocol=config.eval_protocol,
        k=config.eval_k,
        batch_size=512,
        group_by=(),
    )
    return {
        f"valid_ndcg@{config.eval_k}": float(result.metrics[f"ndcg@{config.eval_k}"]),
        f"valid_hr@{config.eval_k}": float(result.metrics[f"hr@{config.eval_k}"]),
        "valid_seconds": time.perf_counter() - started,
        "validated_at": time.time(),
    }


def train_loop_per_worker(loop_config: dict[str, Any]) -> list[dict[str, float]] | None:
    """What each Ray Train worker runs (the config arrives as a plain dict)."""
    import ray.train
    import torch
    from ray.train import Checkpoint
    from ray.train.torch import get_device, prepare_model

    from training.models.sequence_ranker import BatchEncoder, SequenceRanker, SequenceRankerConfig

    config = TrainConfig.model_validate(loop_config["train"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    seed_worker(config.seed + rank)
    torch.set_num_threads(torch_threads(config))
    device = get_device()

    model_config = SequenceRankerConfig.model_validate(loop_config["model"])
    model = SequenceRanker(model_config)
    encoder = BatchEncoder(model_config)
    model = prepare_model(model)
    core: SequenceRanker = model.module if hasattr(model, "module") else model  # type: ignore[assignment]
    shard = ray.train.get_dataset_shard("train")
    example_set = ExampleSet(config.examples)
    rows = example_set.manifest().rows.get("train", 0)
    optimiser, scheduler = make_optimiser(model, config, rows, world)
    best, since_best, stop = -1.0, 0, False
    ndcg_key = f"valid_ndcg@{config.eval_k}"
    history: list[dict[str, float]] = []
    for epoch in range(config.epochs):
        batches = shard.iter_batches(
            batch_size=config.batch_size,
            batch_format="numpy",
            local_shuffle_buffer_size=shuffle_buffer_size(config),
            local_shuffle_seed=shuffle_seed(config, epoch),
        )
        trained = train_epoch(model, core, encoder, optimiser, scheduler, batches, config, device)

        metrics: dict[str, float] = {
            "epoch": epoch + 1,
            "train_loss": trained.loss,
            "epoch_seconds": trained.seconds,
            "epoch_started_at": trained.started_at,
            "samples_per_second": trained.samples * world / max(trained.seconds, 1e-9),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        checkpoint = None
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:
                metrics |= validate(core, example_set, config)
                score = metrics[ndcg_key]
                if score > best:
                    best, since_best = score, 0
                    core.save(Path(tmp))
                    checkpoint = Checkpoint.from_directory(tmp)
                else:
                    since_best += 1
                stop = since_best >= config.patience
                metrics["best_valid_ndcg"] = best
            if world > 1:
                import torch.distributed as dist

                flag = torch.tensor([int(stop)], device=device)
                dist.broadcast(flag, src=0)
                stop = bool(flag.item())
            ray.train.report(metrics, checkpoint=checkpoint)
        if rank == 0:
            print(  # forwarded to the driver's console as this worker's progress
                f"epoch {epoch + 1}/{config.epochs}: loss {metrics['train_loss']:.4f}, "
                f"valid NDCG@{config.eval_k} {metrics[ndcg_key]:.4f} "
                f"(best {best:.4f}), {trained.seconds:.0f} s, "
                f"{metrics['samples_per_second']:.0f} samples/s",
                flush=True,
            )
        history.append(metrics)
        if stop:
            break
    return history if rank == 0 else None


def fit(config: TrainConfig, model_config: dict[str, Any]) -> tuple[Path, list[dict[str, Any]]]:
    """Run the Ray Train job; returns (best checkpoint folder copied under output_dir, history)."""
    import shutil

    import ray
    import ray.data
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        ray.init(
            include_dashboard=False,
            # Without the dashboard, Ray Train's placement-group cleaner warns every few seconds
            # that the state API is unavailable; rank 0 prints each epoch itself (see above).
            logging_config=ray.LoggingConfig(log_level="ERROR"),
            num_cpus=max(int(config.scaling.cpus_per_worker * config.scaling.num_workers), 1) + 1,
            log_to_driver=True,
            configure_logging=False,
        )
    data_context = ray.data.DataContext.get_current()
    data_context.execution_options.preserve_order = True
    data_context.enable_progress_bars = False
    example_set = ExampleSet(config.examples)
    train_ds = ray.data.read_parquet(str(example_set.split_path("train"))).select_columns(
        list(TRAIN_COLUMNS)
    )
    storage = (config.output_dir / "ray").resolve()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train": config.model_dump(mode="json"), "model": model_config},
        scaling_config=ScalingConfig(
            num_workers=config.scaling.num_workers,
            use_gpu=config.scaling.use_gpu,
            resources_per_worker={"CPU": config.scaling.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=config.run_name,
            storage_path=str(storage),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
        datasets={"train": train_ds},
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError("training: the run produced no checkpoint")
    best_dir = config.output_dir / "model"
    if best_dir.exists():
        shutil.rmtree(best_dir)
    with result.checkpoint.as_directory() as folder:
        shutil.copytree(folder, best_dir)
    history = list(result.return_value or [])
    return best_dir, history
