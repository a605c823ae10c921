"""The real serving stack for tests: a small simulated bank, a test-owned redis-server, Feast
applied and materialised into it, a registered transformer, and the Ray Serve graph over HTTP."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from serving.scaffold import register_initialised_model
from serving.settings import ServingArgs
from training.examples import ExampleSet
from training.registry import ModelRegistry

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

    def snapshot(self) -> None:
        """Write the data set to ``dump.rdb`` in the workdir: the next ``start`` loads it, so a
        stop/start pair is an outage that loses nothing, like a restarted production Redis."""
        redis.Redis(port=self.port).save()

    def pause(self) -> None:
        """SIGSTOP: the server hangs (connections open, no answers), a slow dependency."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

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

    from serving.runner import start_serving, stop_serving
    from tests.serving.stack_builders import build_served_bank

    root = tmp_path_factory.mktemp("serving_bank")
    server = RedisServer(free_port(), root)
    server.start()
    args = build_served_bank(root, server)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, num_cpus=3, configure_logging=False, log_to_driver=False)
    url = start_serving(args, port=free_port(), quiet=True)
    registry = ModelRegistry(root / "registry")
    yield ServingStack(url, args, server, root, registry, root / "model_seed0")
    stop_serving()
    server.stop()


if TYPE_CHECKING:  # the builders import this module: only the type, to avoid a cycle
    from tests.serving.stack_builders import LiveServer


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The single-process server (the same FastAPI app and service the Serve ingress runs) in a
    child process over a small real bank, with its own redis-server; shared by the bad-input
    tests and the schemathesis run."""
    from tests.serving.stack_builders import LiveServer, build_served_bank

    root = tmp_path_factory.mktemp("live_bank")
    server = RedisServer(free_port(), root)
    server.start()
    try:
        live = LiveServer.start(build_served_bank(root, server, customers=200, days=30), server)
        try:
            yield live
        finally:
            live.stop()
    finally:
        server.stop()
