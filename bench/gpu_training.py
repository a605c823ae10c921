"""GPU check of the training path: the Amazon Games transformer with ``scaling.use_gpu: true``.

    python bench/gpu_training.py --out training_gpu.json                 # Ray Train on the GPU

It runs :func:`training.trainer.fit` unchanged, i.e. Ray Train's
``TorchTrainer`` over Ray Data, with ``configs/amazon_games.yaml`` as is except
``scaling.use_gpu: true`` (plus ``--epochs`` and the example/output folders when given). The best
checkpoint is then evaluated on the test split (sampled and full protocols) with
:func:`training.evaluation.evaluate`, on the GPU.

The JSON records the device, library versions, per-epoch seconds and samples/s, peak GPU memory
(NVML, sampled), test NDCG@10/HR@10 and the CPU run in ``bench/results/training_amazon_games.json``
for comparison. ``--max-rows N`` trains on a small copy of the example set (a smoke test on CPU:
``--max-rows 512 --epochs 1 --cpu``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CONFIG = REPO / "configs" / "amazon_games.yaml"
CPU_RESULTS = REPO / "bench" / "results" / "training_amazon_games.json"
#: The CPU figures quoted for the CPU benchmark (2 cores) when its results file is absent.
CPU_FALLBACK = {"seconds_per_epoch": 85.0, "samples_per_second": 341.0, "test_ndcg@10": 0.5451}


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------


def _stub_missing_lightgbm(scratch: Path) -> bool:
    """``training.models`` imports LightGBM (the tabular baseline) at module level; this run never
    fits that baseline. Where LightGBM is not installed, put a stub on the path of this process
    and of Ray's workers (through PYTHONPATH). Returns True when the stub was used."""
    try:
        import lightgbm  # noqa: F401

        return False
    except ImportError:
        pass
    folder = scratch / "stubs" / "lightgbm"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "__init__.py").write_text(
        "def __getattr__(name):\n"
        "    raise ImportError(f'lightgbm is not installed here (stub; asked for {name})')\n"
    )
    sys.path.insert(0, str(folder.parent))
    _prepend_pythonpath(str(folder.parent))
    return True


def _prepend_pythonpath(entry: str) -> None:
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if entry not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([entry, *parts])


class GpuMonitor:
    """Samples NVML every ``interval`` s: device memory in use, utilisation, per-process memory."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.peak_used_mb = 0.0
        self.baseline_used_mb: float | None = None
        self.util: list[int] = []
        self.process_peak_mb: dict[int, float] = {}
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.baseline_used_mb = pynvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20
        except Exception as exc:  # noqa: BLE001 - no NVML (CPU machine): the monitor stays empty
            self.error = f"{type(exc).__name__}: {exc}"

    def _sample(self) -> None:
        nv = self._nvml
        self.peak_used_mb = max(
            self.peak_used_mb, nv.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20
        )
        self.util.append(int(nv.nvmlDeviceGetUtilizationRates(self._handle).gpu))
        try:
            for proc in nv.nvmlDeviceGetComputeRunningProcesses(self._handle):
                used = (proc.usedGpuMemory or 0) / 2**20
                self.process_peak_mb[proc.pid] = max(self.process_peak_mb.get(proc.pid, 0.0), used)
        except Exception:  # noqa: BLE001 - per-process accounting is optional (virtualised GPUs)
            pass

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sample()
            except Exception as exc:  # noqa: BLE001
                self.error = f"{type(exc).__name__}: {exc}"
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> GpuMonitor:
        if self._handle is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def summary(self) -> dict[str, Any]:
        busy = [u for u in self.util if u > 0]
        return {
            "source": f"NVML, whole device, sampled every {self.interval:.1f} s",
            "device_memory_used_before_mb": _round(self.baseline_used_mb),
            "peak_device_memory_used_mb": _round(self.peak_used_mb) if self.util else None,
            "peak_process_memory_mb": {str(k): _round(v) for k, v in self.process_peak_mb.items()},
            "mean_gpu_utilisation_pct": _round(statistics.mean(self.util)) if self.util else None,
            "samples": len(self.util),
            "samples_with_gpu_busy": len(busy),
            "error": self.error,
        }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(float(value), digits)


def environment() -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "host_cpus": os.cpu_count(),
    }
    try:
        import ray

        env["ray"] = ray.__version__
    except Exception as exc:  # noqa: BLE001
        env["ray"] = None
        env["ray_import_error"] = f"{type(exc).__name__}: {exc}"
    return env


# --------------------------------------------------------------------------------------------
# Config and data
# --------------------------------------------------------------------------------------------


def load_config(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """configs/amazon_games.yaml with scaling.use_gpu set; the overrides are returned too."""
    import yaml

    from training.config import TrainConfig

    raw = yaml.safe_load(CONFIG.read_text())
    overrides: dict[str, Any] = {
        "scaling": {**raw.get("scaling", {}), "use_gpu": not args.cpu},
        "examples": str(args.examples),
        "output_dir": str(args.output_dir),
    }
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    return TrainConfig.from_yaml(CONFIG, **overrides), overrides


def subset_examples(source: Path, target: Path, max_rows: int) -> Path:
    """A copy of an example set with the first ``max_rows`` rows of each split (smoke tests)."""
    import pyarrow.parquet as pq

    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    manifest = json.loads((source / "manifest.json").read_text())
    for split in ("train", "valid", "test"):
        table = pq.read_table(source / f"{split}.parquet").slice(0, max_rows)
        pq.write_table(table, target / f"{split}.parquet")
        manifest["rows"][split] = table.num_rows
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    shutil.copy2(source / "vocabulary.json", target / "vocabulary.json")
    return target


# --------------------------------------------------------------------------------------------
# Training: Ray Train (the project's path) or one torch process (fallback)
# --------------------------------------------------------------------------------------------


def train_ray(
    config: Any, model_config: dict[str, Any]
) -> tuple[Path, list[dict[str, Any]], dict[str, Any]]:
    """:func:`training.trainer.fit` as the pipeline calls it; also what Ray saw of the machine."""
    import ray

    from training.trainer import fit

    model_dir, history = fit(config, model_config)
    info = {
        "cluster_resources": {k: v for k, v in ray.cluster_resources().items() if "node:" not in k},
        "ray_train_v2": os.environ.get("RAY_TRAIN_V2_ENABLED", "default"),
    }
    ray.shutdown()
    return model_dir, history, info


def evaluate_test(model_dir: Path, config: Any, device_name: str) -> dict[str, Any]:
    import torch

    from training.evaluation import evaluate
    from training.examples import ExampleSet
    from training.models.sequence_ranker import SequenceRanker, TransformerRanker

    device = torch.device(device_name)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    ranker = TransformerRanker(SequenceRanker.load(model_dir).to(device))
    example_set = ExampleSet(config.examples)
    out: dict[str, Any] = {}
    for protocol in config.test_protocols:
        started = time.perf_counter()
        result = evaluate(
            ranker,
            example_set,
            split="test",
            protocol=protocol,
            k=config.eval_k,
            batch_size=256,
            group_by=("app", "segment"),
        )
        out[f"transformer/{protocol}"] = {
            **{k: v for k, v in result.metrics.items()},
            "n_examples": result.n_examples,
            "seconds": round(time.perf_counter() - started, 2),
        }
    if device.type == "cuda":
        out["eval_peak_torch_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def cpu_reference() -> dict[str, Any]:
    if not CPU_RESULTS.exists():
        return {"source": "figures quoted for the CPU run", **CPU_FALLBACK}
    data = json.loads(CPU_RESULTS.read_text())
    epochs = [h["epoch_seconds"] for h in data.get("history", [])]
    return {
        "source": str(CPU_RESULTS.relative_to(REPO)),
        "machine": "2 CPU cores (cpus_per_worker: 2), Ray Train, use_gpu: false",
        "epochs_run": data.get("epochs_run"),
        "seconds_per_epoch_mean": _round(statistics.mean(epochs), 2) if epochs else None,
        "seconds_per_epoch_median": _round(statistics.median(epochs), 2) if epochs else None,
        "seconds_per_epoch_quoted": CPU_FALLBACK["seconds_per_epoch"],
        "samples_per_second": _round(data.get("train_samples_per_second"), 1),
        "train_seconds": data.get("train_seconds"),
        "test_ndcg@10": _round(data["test"]["transformer/sampled"]["ndcg@10"], 4),
        "test_hr@10": _round(data["test"]["transformer/sampled"]["hr@10"], 4),
    }


def summarise(
    history: list[dict[str, Any]], train_seconds: float, cpu: dict[str, Any]
) -> dict[str, Any]:
    seconds = [float(h["epoch_seconds"]) for h in history]
    rates = [float(h["samples_per_second"]) for h in history]
    later = seconds[1:] or seconds
    out: dict[str, Any] = {
        "epochs_run": len(history),
        "train_wall_seconds": round(train_seconds, 2),
        "seconds_per_epoch_mean": _round(statistics.mean(seconds), 3) if seconds else None,
        "seconds_per_epoch_first": _round(seconds[0], 3) if seconds else None,
        "seconds_per_epoch_mean_after_first": _round(statistics.mean(later), 3) if later else None,
        "samples_per_second_mean": _round(statistics.mean(rates), 1) if rates else None,
        "samples_per_second_mean_after_first": _round(statistics.mean(rates[1:] or rates), 1)
        if rates
        else None,
        "validation_and_overhead_seconds_per_epoch": _round(
            (train_seconds - sum(seconds)) / len(seconds), 3
        )
        if seconds
        else None,
    }
    valid = [h for h in history if h.get("valid_ndcg@10") is not None]
    if valid:
        best = max(valid, key=lambda h: h["valid_ndcg@10"])
        out["best_epoch"] = int(best["epoch"])
        out["best_valid_ndcg@10"] = _round(best["valid_ndcg@10"], 4)
    cpu_epoch = cpu.get("seconds_per_epoch_median") or cpu.get("seconds_per_epoch")
    cpu_rate = cpu.get("samples_per_second")
    if seconds and cpu_epoch:
        out["speedup_vs_cpu_epoch_seconds"] = _round(cpu_epoch / statistics.mean(later), 1)
    if rates and cpu_rate:
        out["speedup_vs_cpu_samples_per_second"] = _round(
            statistics.mean(rates[1:] or rates) / cpu_rate, 1
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's (16)")
    parser.add_argument("--examples", type=Path, default=REPO / "data/bench/amazon_games/examples")
    parser.add_argument(
        "--output-dir", type=Path, default=Path(tempfile.gettempdir()) / "persona_gpu_run"
    )
    parser.add_argument(
        "--max-rows", type=int, default=None, help="smoke test: first N rows per split"
    )
    parser.add_argument("--cpu", action="store_true", help="smoke test on a machine without a GPU")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    wall_started = time.perf_counter()

    def on_sigterm(signum: int, frame: object) -> None:
        raise TimeoutError("stopped by SIGTERM (the run's timeout)")

    signal.signal(signal.SIGTERM, on_sigterm)
    scratch = Path(tempfile.mkdtemp(prefix="persona_gpu_"))
    _prepend_pythonpath(str(REPO))  # Ray's workers import training.* from the checkout
    lightgbm_stubbed = _stub_missing_lightgbm(scratch)
    if args.max_rows:
        args.examples = subset_examples(args.examples, scratch / "examples", args.max_rows)
    args.output_dir.mkdir(parents=True, exist_ok=True)

    env = environment()
    print(json.dumps(env), flush=True)
    config, overrides = load_config(args)
    from training.examples import ExampleSet
    from training.models.sequence_ranker import SequenceRankerConfig

    manifest = ExampleSet(config.examples).manifest()
    model_config = SequenceRankerConfig.for_manifest(manifest, **config.architecture.model_dump())
    device_name = "cpu" if args.cpu else "cuda"
    report: dict[str, Any] = {
        "what": "Amazon Games transformer (SASRec protocol), configs/amazon_games.yaml with scaling.use_gpu=true",
        "command": " ".join(["python", "bench/gpu_training.py", *sys.argv[1:]]),
        "mode": "ray",
        "ray_train": True,
        "use_gpu": config.scaling.use_gpu,
        "environment": env,
        "config": {
            "file": str(CONFIG.relative_to(REPO)),
            "overrides": {
                **overrides,
                "examples": str(args.examples),
                "output_dir": str(args.output_dir),
            },
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "scaling": config.scaling.model_dump(),
            "architecture": config.architecture.model_dump(),
        },
        "example_set_rows": manifest.rows,
        "n_items": manifest.n_items,
        "lightgbm_stubbed": lightgbm_stubbed,
        "cpu_reference": cpu_reference(),
    }
    if args.max_rows:
        report["smoke_test_max_rows"] = args.max_rows

    def write() -> None:
        report["total_wall_seconds"] = round(time.perf_counter() - wall_started, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str))

    try:
        with GpuMonitor() as monitor:
            started = time.perf_counter()
            model_dir, history, info = train_ray(config, model_config.model_dump(mode="json"))
            report["ray"] = info
            train_seconds = time.perf_counter() - started
        report["training"] = summarise(history, train_seconds, report["cpu_reference"])
        report["gpu_memory_training"] = monitor.summary()
        report["gpu_memory_training"]["driver_pid"] = os.getpid()
        report["history"] = history
        report["status"] = "trained"
        write()
        with GpuMonitor() as eval_monitor:
            report["test"] = evaluate_test(model_dir, config, device_name)
        report["gpu_memory_test_eval"] = eval_monitor.summary()
        sampled = report["test"].get("transformer/sampled", {})
        report["headline"] = {
            "device": env["device_name"],
            "ray_train": report["ray_train"],
            "use_gpu": config.scaling.use_gpu,
            "epochs_run": report["training"]["epochs_run"],
            "seconds_per_epoch": report["training"]["seconds_per_epoch_mean_after_first"],
            "samples_per_second": report["training"]["samples_per_second_mean_after_first"],
            "peak_gpu_memory_used_mb": report["gpu_memory_training"]["peak_device_memory_used_mb"],
            "test_ndcg@10": _round(sampled.get("ndcg@10"), 4),
            "test_hr@10": _round(sampled.get("hr@10"), 4),
            "cpu_seconds_per_epoch": report["cpu_reference"].get("seconds_per_epoch_median"),
            "cpu_samples_per_second": report["cpu_reference"].get("samples_per_second"),
            "cpu_test_ndcg@10": report["cpu_reference"].get("test_ndcg@10"),
        }
        report["status"] = "ok"
    except BaseException as exc:  # noqa: BLE001 - record any failure (timeouts too), then exit 1
        report["status"] = "failed"
        report["error"] = f"{type(exc).__name__}: {exc}"
        report["traceback"] = traceback.format_exc()[-4000:]
        write()
        print(report["traceback"], file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    write()
    print(json.dumps(report.get("headline", {}), indent=2), flush=True)


if __name__ == "__main__":
    main()
