"""Start and stop the live endpoints a traffic run calls: the experiment's server (one uvicorn
process, or the Ray Serve deployment) and the single-process shadow ranker."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import requests

from serving.settings import ServingArgs

ServerKind = Literal["single-process", "ray"]


def wait_ready(url: str, timeout_s: float, process: subprocess.Popen[bytes] | None) -> None:
    """Until ``/readyz`` answers 200; ``TimeoutError`` (or ``RuntimeError`` when the process
    died) with the last answer otherwise."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server at {url} exited with code {process.returncode}")
        try:
            answer = requests.get(f"{url}/readyz", timeout=5)
            if answer.status_code == 200:
                return
            last = f"{answer.status_code} {answer.text[:300]}"
        except requests.RequestException as error:
            last = repr(error)
        time.sleep(0.5)
    raise TimeoutError(f"server at {url} not ready after {timeout_s:.0f} s: {last}")


@contextmanager
def single_process_server(
    args: ServingArgs, port: int, log_file: Path, ready_timeout_s: float = 180.0
) -> Iterator[str]:
    """``persona serve --single-process`` in a child process; yields its base URL."""
    from serving.single_process import single_process_command

    url = f"http://127.0.0.1:{port}"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            single_process_command(args, "127.0.0.1", port),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
        try:
            wait_ready(url, ready_timeout_s, process)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def ray_server(args: ServingArgs, port: int) -> Iterator[str]:
    """The Ray Serve deployment (the production graph) on a local Ray; yields its base URL."""
    from serving.runner import start_serving, stop_serving

    url = start_serving(args, port=port, quiet=True)
    try:
        yield url
    finally:
        stop_serving()


@contextmanager
def live_server(kind: ServerKind, args: ServingArgs, port: int, log_file: Path) -> Iterator[str]:
    if kind == "ray":
        with ray_server(args, port) as url:
            yield url
    else:
        with single_process_server(args, port, log_file) as url:
            yield url
