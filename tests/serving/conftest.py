"""The real serving stack for tests: a small simulated bank, a test-owned redis-server, Feast
applied and materialised into it, a registered transformer, and the Ray Serve graph over HTTP."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from persona.settings import PersonaSettings
from serving.priors import build_priors
from serving.scaffold import register_initialised_model
from serving.settings import Budgets, ServingArgs
from tests.banks import featured_bank
from training.examples import ExampleSet
from training.registry import ModelRegistry
from training.sets.impressions import build_impression_set

KEYS = {app: f"demo-{app}-key" for app in ("rib", "cib", "nli", "imobile")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server this test session owns (so stopping it harms nobody else)."""

    def __init__(self, port: int, workdir: Path):
        self.port, self.workdir = port, workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (apt install redis-server)")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@dataclass
class ServingStack:
    url: str
    args: ServingArgs
    redis: RedisServer
    data_dir: Path
    registry: ModelRegistry
    model_dir: Path


def register_model(
    data_dir: Path, examples: ExampleSet, registry: ModelRegistry, seed: int
) -> Path:
    """A real transformer of the example set's shape, registered as serving for every app."""
    model_dir = data_dir / f"model_seed{seed}"
    register_initialised_model(examples, registry, model_dir, seed=seed, d_model=16, n_blocks=1)
    return model_dir


@pytest.fixture(scope="module")
def serving_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingStack]:
    import ray

    from persona.features.store import (
        OnlineStoreChoice,
        apply_definitions,
        materialize_all,
        open_store,
    )
    from serving.runner import start_serving, stop_serving

    root = tmp_path_factory.mktemp("serving_bank")
    featured_bank(root, customers=400, days=40, seed=5)
    examples = ExampleSet(root / "examples")
    build_impression_set(
        root, examples.root, dataset="serving-test", max_len=10, valid_days=4, test_days=4, seed=1
    )
    build_priors(root).save(root / "serving")

    server = RedisServer(free_port(), root)
    server.start()
    settings = PersonaSettings(data_dir=root, online_store="redis", redis_url=server.url)
    store = open_store(settings, OnlineStoreChoice("redis", "test", server.url))
    apply_definitions(store, root)
    materialize_all(store, root)

    registry = ModelRegistry(root / "registry")
    model_dir = register_model(root, examples, registry, seed=0)
    config_dir = root / "serving_config"
    shutil.copytree(Path(__file__).resolve().parents[2] / "configs" / "serving", config_dir)
    args = ServingArgs(
        data_dir=root,
        config_dir=config_dir,
        online_store="redis",
        redis_url=server.url,
        feature_cache_ttl_s=30.0,
        budgets=Budgets(features_ms=200, ranking_ms=2000, total_ms=5000),
        flush_interval_s=0.5,
    )
    if not ray.is_initialized():
        ray.init(include_dashboard=False, num_cpus=3, configure_logging=False, log_to_driver=False)
    url = start_serving(args, port=free_port(), quiet=True)
    yield ServingStack(url, args, server, root, registry, model_dir)
    stop_serving()
    server.stop()
