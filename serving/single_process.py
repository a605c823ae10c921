"""The whole serving pipeline in one uvicorn process, no Ray: the reference the Serve
deployment is measured against (``persona serve --single-process``), and a way to run serving
where Ray is not wanted. Same service, same routes, same engines; ranking still batches
(``serve.batch`` works in any asyncio loop)."""

from __future__ import annotations

from fastapi import FastAPI

from serving.settings import ServingArgs


def create_single_process_app(args: ServingArgs) -> FastAPI:
    from serving.app import check_config
    from serving.http_api import create_api
    from serving.placement import local_stages
    from serving.service import RecommendationService, tune_collector

    check_config(args)
    api = create_api(RecommendationService(args, local_stages(args)))
    tune_collector(freeze=True)  # as the Serve replicas: the same collector settings
    return api


def run_single_process(
    args: ServingArgs, host: str, port: int, quiet: bool = False, log_level: str | None = None
) -> None:
    """Serve until interrupted (blocks). Logs go to stderr at ``log_level`` (default: INFO,
    WARNING when ``quiet``), Persona's own lines included (``persona.access``: one a request,
    customers as pseudonyms)."""
    import logging

    import uvicorn

    level = (log_level or ("WARNING" if quiet else "INFO")).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_single_process_app(args),
        host=host,
        port=port,
        access_log=not quiet,
        log_level=level.lower(),
    )


def single_process_command(
    args: ServingArgs, host: str, port: int, log_level: str = "WARNING"
) -> list[str]:
    """The command line that serves ``args`` in a child process (benchmarks and tests); quiet
    (no per-request lines) unless ``log_level`` is INFO or DEBUG."""
    import sys

    code = (
        "import sys; from serving.settings import ServingArgs; "
        "from serving.single_process import run_single_process; "
        "run_single_process(ServingArgs.model_validate_json(sys.argv[1]), sys.argv[2], "
        "int(sys.argv[3]), quiet=sys.argv[4] not in ('INFO', 'DEBUG'), log_level=sys.argv[4])"
    )
    return [sys.executable, "-c", code, args.model_dump_json(), host, str(port), log_level]
