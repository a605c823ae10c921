"""Start the serving graph on a local Ray (``persona serve``, the demo and the tests)."""

from __future__ import annotations

import time
from typing import Final

import requests

from serving.settings import ServingArgs

APP_NAME: Final = "persona"


def start_serving(
    args: ServingArgs,
    host: str = "127.0.0.1",
    port: int = 8000,
    ready_timeout_s: float = 240.0,
    quiet: bool = False,
) -> str:
    """Deploy the graph (starting Ray and Serve if needed); returns the base URL once
    ``/readyz`` answers 200. Raises ``TimeoutError`` with the last readiness answer otherwise.
    ``quiet`` turns off Serve's per-request access log (the demo and tests)."""
    import ray
    from ray import serve

    from serving.app import build_app

    if not ray.is_initialized():
        ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
    logging = {"enable_access_log": not quiet, "log_level": "WARNING" if quiet else "INFO"}
    serve.start(http_options={"host": host, "port": port}, logging_config=logging)
    serve.run(
        build_app(args), name=APP_NAME, route_prefix="/", blocking=False, logging_config=logging
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
