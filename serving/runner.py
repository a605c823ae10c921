"""Start the serving graph on a local Ray (``persona serve``, the demo and the tests)."""

from __future__ import annotations

import os
import shutil
import time
from typing import Final, Literal

import requests

from serving.settings import ServingArgs

APP_NAME: Final = "persona"
ServeMode = Literal["proxy", "throughput", "haproxy"]
SERVE_MODES: Final = ("proxy", "throughput", "haproxy")


def serve_mode_environment(mode: ServeMode) -> dict[str, str]:
    """Environment Ray must start with for ``mode``. ``throughput`` is Serve's throughput-
    optimised mode (gRPC between deployments, user code on the replica's loop, per-replica
    HTTP ports); ``haproxy`` puts HAProxy in front of those ports instead of Serve's Python
    proxy, which measured as the per-request floor on this machine (docs/performance.md)."""
    if mode == "proxy":
        return {}
    env = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
    if mode == "haproxy":
        binary = shutil.which("haproxy")
        if binary is None:
            raise RuntimeError("mode haproxy: no haproxy binary on PATH (apt-get install haproxy)")
        env |= {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_HAPROXY_BINARY_PATH": binary}
    return env


def start_serving(
    args: ServingArgs,
    host: str = "127.0.0.1",
    port: int = 8000,
    ready_timeout_s: float = 240.0,
    quiet: bool = False,
    mode: ServeMode = "proxy",
    deployment_options: dict[str, dict[str, object]] | None = None,
) -> str:
    """Deploy the graph (starting Ray and Serve if needed); returns the base URL once
    ``/readyz`` answers 200. Raises ``TimeoutError`` with the last readiness answer otherwise.
    ``quiet`` turns off Serve's per-request access log (the demo and tests). ``mode`` needs
    Ray to start here (its processes inherit the environment it sets)."""
    import ray
    from ray import serve

    from serving.app import build_app

    environment = serve_mode_environment(mode)
    if not ray.is_initialized():
        os.environ.update(environment)
        ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
    elif any(os.environ.get(k) != v for k, v in environment.items()):
        raise RuntimeError(f"mode {mode}: Ray is already running without {environment}")
    logging = {"enable_access_log": not quiet, "log_level": "WARNING" if quiet else "INFO"}
    serve.start(http_options={"host": host, "port": port}, logging_config=logging)
    serve.run(
        build_app(args, deployment_options),
        name=APP_NAME,
        route_prefix="/",
        blocking=False,
        logging_config=logging,
    )
    base = f"http://{host}:{port}"
    deadline = time.monotonic() + ready_timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            answer = requests.get(f"{base}/readyz", timeout=5)
            if answer.status_code == 200:
                return base
            last = f"{answer.status_code} {answer.text[:300]}"
        except requests.RequestException as error:
            last = repr(error)
        time.sleep(0.5)
    raise TimeoutError(f"serving not ready after {ready_timeout_s:.0f} s: {last}")


def stop_serving() -> None:
    from ray import serve

    serve.shutdown()
