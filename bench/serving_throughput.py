"""Full-graph ``POST /v1/recommendations`` throughput and latency, three ways, in one run:

- ``production``: Ray Serve as ``serve_config.yaml`` ships it: placement ``colocated`` (every
  stage in each ingress replica: features from Redis, retrieval, the transformer micro-batched,
  rules), two ingress replicas, throughput-optimised mode behind HAProxy (``mode=haproxy``;
  ``throughput`` when there is no haproxy binary).
- ``fused``: the same, with the model in its own ``RankingStage`` deployment (one hop).
- ``naive_serve`` (reference a): every stage its own deployment, awaited in turn, Serve's
  defaults (``max_ongoing_requests`` 5, Python HTTP proxy).
- ``single_process`` (reference b): the same service, stages and batching in one uvicorn
  process, no Ray.

Each runs in its own process on the same data (a simulated bank, its features materialised into
Redis db 3, a catalogue grown with offer variants so each request ranks >= 100 candidates, a
transformer of production shape: initialised, since cost depends on shape, not weights). Load:
``wrk`` closed loop at 1, 4, 16 and 64 connections. A py-spy profile of the production ingress
and ranking replicas is recorded under load, and their resident memory after the run.

    python bench/serving_throughput.py            # ~6 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
RESULTS = BENCH / "results"
PROFILES = RESULTS / "profiles"
SETUPS = ("production", "fused", "naive_serve", "single_process")
#: Concurrent clients per setup: the production figure at every level the issue names plus 8;
#: the fused alternative where it peaks.
LEVELS = {
    "production": [1, 4, 8, 16, 64],
    "fused": [4, 16],
    "naive_serve": [1, 4, 16, 64],
    "single_process": [1, 4, 16, 64],
}


# -- data ------------------------------------------------------------------------------------


def prepare(a: argparse.Namespace) -> Any:
    """Bank, features in Redis, priors, a registered model; returns the ServingArgs."""
    from offer_catalogue import expand_catalogue

    from persona.features.build import build_features
    from persona.features.store import (
        OnlineStoreChoice,
        apply_definitions,
        materialize_all,
        open_store,
    )
    from persona.settings import PersonaSettings
    from persona.simulator import SimulationConfig, simulate_bank
    from persona.validation import validate_dataset
    from serving.priors import build_priors
    from serving.scaffold import register_initialised_model
    from training.examples import ExampleSet
    from training.registry import ModelRegistry
    from training.sets.impressions import build_impression_set

    data_dir = a.data_dir.resolve()
    if not (data_dir / "examples" / "manifest.json").exists():
        simulate_bank(SimulationConfig(customers=a.customers, days=a.days, seed=a.seed), data_dir)
        expand_catalogue(data_dir, a.catalogue, a.seed)
        validate_dataset(data_dir)
        build_features(data_dir)
        build_impression_set(
            data_dir,
            data_dir / "examples",
            dataset="bench-serving",
            max_len=50,
            valid_days=3,
            test_days=3,
            seed=a.seed,
        )
    build_priors(data_dir).save(data_dir / "serving")
    settings = PersonaSettings(data_dir=data_dir, online_store="redis", redis_url=a.redis_url)
    store = open_store(settings, OnlineStoreChoice("redis", "bench", a.redis_url))
    apply_definitions(store, data_dir)
    materialize_all(store, data_dir)
    registry = ModelRegistry(data_dir / "registry")
    if (
        "persona-ranker" not in registry.models()
        or registry.serving_version("persona-ranker", "rib") is None
    ):
        register_initialised_model(
            ExampleSet(data_dir / "examples"),
            registry,
            data_dir / "model",
            seed=a.seed,
            d_model=64,
            n_blocks=2,
            n_heads=2,
        )
    return serving_args(a)


def serving_args(a: argparse.Namespace) -> Any:
    """What every setup serves. Features come from Redis on every request (no in-process
    cache): the figure is the full pipeline's, not a cache's."""
    from serving.settings import Budgets, ServingArgs

    return ServingArgs(
        data_dir=a.data_dir.resolve(),
        online_store="redis",
        redis_url=a.redis_url,
        feature_cache_ttl_s=0,
        budgets=Budgets(features_ms=200, ranking_ms=1000, total_ms=3000),
    )


def customers_and_candidates(args: Any) -> tuple[list[tuple[int, str]], dict[str, float]]:
    """(customer, app) pairs to request, and the mean number of candidates each app ranks."""
    import duckdb

    from persona.layout import DataLayout
    from serving.catalogue import Catalogue
    from serving.config import load_apps
    from serving.customer import CustomerView
    from serving.priors import Priors
    from serving.retrieval import Retriever

    glob = DataLayout(args.data_dir).clean_table("customers") / "**" / "*.parquet"
    with duckdb.connect() as con:
        rows = con.sql(f"SELECT customer_id, customer_type FROM read_parquet('{glob}')").fetchall()
    pairs = [
        (cid, app)
        for cid, kind in rows
        for app in (("rib", "imobile", "nli") if kind == "retail" else ("cib",))
    ]
    apps = load_apps(args.apps_file).apps
    retriever = Retriever(
        Catalogue.from_data_dir(args.data_dir), Priors.load(args.serving_dir), args.max_candidates
    )
    candidates = {
        app: len(retriever.retrieve(CustomerView.unknown(1), app, apps[app]).candidates)
        for app in apps
    }
    return pairs, candidates


# -- one setup, in its own process -------------------------------------------------------------


def stage_means(url: str) -> dict[str, tuple[float, float]]:
    """stage -> (sum seconds, count) over all apps, from /metrics (one replica's view)."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    out: dict[str, list[float]] = {}
    for kind in ("sum", "count"):
        for stage, value in re.findall(
            rf'^persona_stage_seconds_{kind}{{app="[a-z]+",stage="([a-z_]+)"}} ([0-9.e+-]+)$',
            text,
            re.M,
        ):
            out.setdefault(stage, [0.0, 0.0])[0 if kind == "sum" else 1] += float(value)
    return {k: (v[0], v[1]) for k, v in out.items()}


def serving_processes(setup: str, server_pid: int | None) -> dict[str, list[int]]:
    """The processes of the setup, by role (Serve replicas by deployment name)."""
    import psutil

    roles: dict[str, list[int]] = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if setup == "single_process":
            if p.info["pid"] == server_pid:
                roles.setdefault("uvicorn", []).append(p.info["pid"])
            continue
        found = re.search(r"ServeReplica:persona:([A-Za-z]+)", cmd)
        if found:
            roles.setdefault(found.group(1), []).append(p.info["pid"])
        elif "ProxyActor" in cmd:
            roles.setdefault("serve_proxy", []).append(p.info["pid"])
        elif "haproxy" in cmd.split(" ")[0]:
            roles.setdefault("haproxy", []).append(p.info["pid"])
    return roles


def rss_mb(roles: dict[str, list[int]]) -> dict[str, float]:
    import psutil

    out = {}
    for role, pids in roles.items():
        total = 0
        for pid in pids:
            try:
                total += psutil.Process(pid).memory_info().rss
            except psutil.NoSuchProcess:
                continue
        out[role] = round(total / 2**20, 1)
    return out


def profile(pids: dict[str, int], seconds: int, out: Path) -> dict[str, Any]:
    """py-spy (sampling, non-blocking) on each pid for ``seconds``; collapsed stacks and an
    SVG flame graph per role, and the top self-time frames."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        return {"skipped": "py-spy not installed"}
    out.mkdir(parents=True, exist_ok=True)
    running = {}
    for role, pid in pids.items():
        base = out / role
        running[role] = (
            subprocess.Popen(
                [
                    str(spy),
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(seconds),
                    "--rate",
                    "200",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "-o",
                    f"{base}.txt",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            ),
            base,
        )
    summary: dict[str, Any] = {}
    for role, (process, base) in running.items():
        _, err = process.communicate(timeout=seconds + 60)
        collapsed = Path(f"{base}.txt")
        if process.returncode != 0 or not collapsed.exists():
            summary[role] = {"error": err.decode()[-300:]}
            continue
        summary[role] = top_frames(collapsed.read_text())
        summary[role]["collapsed_stacks"] = str(collapsed.relative_to(BENCH.parent))
    return summary


#: How a sampled stack is attributed: the first of these found in it, from the leaf up.
LAYERS = (
    ("torch (model forward)", ("torch/", "sequence_ranker")),
    ("feature read (Redis/Feast)", ("persona/features/", "feast/", "serving/features.py")),
    ("redis client", ("redis/",)),
    ("rules + audit", ("serving/rules.py", "serving/audit.py", "serving/contact_policy.py")),
    ("retrieval", ("serving/retrieval.py",)),
    ("pydantic / JSON", ("pydantic", "json/", "orjson")),
    ("HTTP (uvicorn/starlette/fastapi)", ("uvicorn/", "starlette/", "fastapi/", "h11")),
    ("Ray Serve / Ray core", ("ray/",)),
    ("asyncio / other", ("",)),
)


def top_frames(collapsed: str) -> dict[str, Any]:
    """Share of samples per layer (leaf-most match) and the top self-time frames."""
    layers: dict[str, int] = {}
    leaves: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaves[frames[-1]] = leaves.get(frames[-1], 0) + count
        for name, markers in LAYERS:
            if any(m in f for f in reversed(frames) for m in markers):
                layers[name] = layers.get(name, 0) + count
                break
    share = {k: round(v / max(total, 1), 3) for k, v in sorted(layers.items(), key=lambda x: -x[1])}
    top = sorted(leaves.items(), key=lambda x: -x[1])[:12]
    return {
        "samples": total,
        "share_by_layer": share,
        "top_self_frames": [{"frame": f[:160], "share": round(c / total, 3)} for f, c in top],
    }


def start_setup(setup: str, args: Any, port: int) -> tuple[str, subprocess.Popen[bytes] | None]:
    if setup == "single_process":
        from serving.single_process import single_process_command

        server = subprocess.Popen(single_process_command(args, "127.0.0.1", port))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                    return url, server
            except requests.RequestException:
                pass
            time.sleep(0.5)
        server.kill()
        raise TimeoutError("single-process server not ready")
    import shutil

    from serving.runner import start_serving

    mode = "haproxy" if shutil.which("haproxy") else "throughput"
    if setup == "production":
        options = shipped_options()
        return start_serving(
            args, port=port, quiet=True, mode=mode, deployment_options=options
        ), None
    if setup == "fused":
        options = shipped_options()
        options["RankingStage"] = {
            "max_ongoing_requests": 64,
            "ray_actor_options": {"num_cpus": 0.2},
            "user_config": options["Ingress"].pop("user_config"),
        }
        fused = args.model_copy(update={"placement": "fused"})
        return start_serving(
            fused, port=port, quiet=True, mode=mode, deployment_options=options
        ), None
    graph = args.model_copy(update={"placement": "graph"})
    defaults = {
        name: {"max_ongoing_requests": 5}
        for name in ("Ingress", "FeaturesStage", "RetrievalStage", "RankingStage", "RulesStage")
    }
    return start_serving(graph, port=port, quiet=True, deployment_options=defaults), None


def shipped_options() -> dict[str, dict[str, Any]]:
    """Deployment options as ``serve_config.yaml`` ships them (replicas, autoscaling, CPUs)."""
    import yaml

    config = yaml.safe_load((BENCH.parent / "serve_config.yaml").read_text())
    (application,) = config["applications"]
    return {d.pop("name"): d for d in application["deployments"]}


def run_setup(setup: str, a: argparse.Namespace, args: Any, out: Path) -> None:
    from wrk_load import run_wrk, write_script

    pairs, candidates = customers_and_candidates(args)
    script = write_script(out.with_suffix(".lua"), pairs, a.seed)
    url, server = start_setup(setup, args, a.port)
    result: dict[str, Any] = {"setup": setup, "url": url, "candidates_per_app": candidates}
    try:
        run_wrk(url, script, 8, a.warmup)  # warm-up: connections, batchers, allocator
        levels = []
        for clients in a.levels or LEVELS[setup]:
            before = stage_means(url)
            level = run_wrk(url, script, clients, a.duration)
            after = stage_means(url)
            level["stage_mean_ms"] = {
                s: round(
                    (after[s][0] - before.get(s, (0, 0))[0])
                    * 1e3
                    / max(after[s][1] - before.get(s, (0, 0))[1], 1),
                    3,
                )
                for s in after
            }
            levels.append(level)
            print(
                f"  {setup:15s} c={clients:3d} {level['req_per_s']:8.1f} req/s "
                f"p50 {level['p50_ms']:7.1f} p99 {level['p99_ms']:7.1f} ms "
                f"non200 {level['non200']} degraded {level['degraded']}",
                flush=True,
            )
        result["levels"] = levels
        roles = serving_processes(setup, server.pid if server else None)
        if setup in ("production", "fused") and a.profile_seconds > 0:
            import threading

            load = threading.Thread(
                target=run_wrk, args=(url, script, a.profile_clients, a.profile_seconds + 4)
            )
            load.start()
            time.sleep(2)
            targets = {r: roles[r][0] for r in ("Ingress", "RankingStage") if r in roles}
            result["profile"] = profile(targets, a.profile_seconds, PROFILES / setup)
            load.join()
        result["rss_mb"] = rss_mb(roles)
        result["placement"] = requests.get(f"{url}/readyz", timeout=10).json().get("placement")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        else:
            from serving.runner import stop_serving

            stop_serving()
    out.write_text(json.dumps(result, indent=2))


# -- the comparison --------------------------------------------------------------------------


def best_under(levels: list[dict[str, Any]], p99_ms: float) -> dict[str, Any] | None:
    ok = [lv for lv in levels if lv["p99_ms"] <= p99_ms and lv["non200"] == 0]
    return max(ok, key=lambda lv: lv["req_per_s"]) if ok else None


def summarise(runs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for setup, run in runs.items():
        at50 = best_under(run["levels"], 50.0)
        at100 = best_under(run["levels"], 100.0)
        out[setup] = {
            "best_req_per_s_p99_le_50ms": at50["req_per_s"] if at50 else 0.0,
            "clients_at_best_50": at50["clients"] if at50 else None,
            "best_req_per_s_p99_le_100ms": at100["req_per_s"] if at100 else 0.0,
            "min_req_per_s_over_levels": min(lv["req_per_s"] for lv in run["levels"]),
        }
    prod = out.get("production")
    if prod:
        for ref in ("naive_serve", "single_process"):
            if ref in out and out[ref]["best_req_per_s_p99_le_100ms"]:
                prod[f"ratio_vs_{ref}_p99_le_100ms"] = round(
                    prod["best_req_per_s_p99_le_100ms"] / out[ref]["best_req_per_s_p99_le_100ms"],
                    2,
                )
            if ref in out:
                mine = {lv["clients"]: lv["req_per_s"] for lv in runs["production"]["levels"]}
                prod[f"ratio_vs_{ref}_by_clients"] = {
                    lv["clients"]: round(mine[lv["clients"]] / max(lv["req_per_s"], 1e-9), 2)
                    for lv in runs[ref]["levels"]
                    if lv["clients"] in mine
                }
        levels = runs["production"]["levels"]
        prod["target_300_req_s_p99_50ms_met"] = prod["best_req_per_s_p99_le_50ms"] >= 300
        prod["never_below_120_req_s"] = all(lv["req_per_s"] >= 120 for lv in levels)
        prod["p99_le_100ms_up_to_clients"] = max(
            (lv["clients"] for lv in levels if lv["p99_ms"] <= 100), default=0
        )
        # A closed loop of c clients at r req/s waits c / r on average (Little's law): past
        # saturation only shedding load could keep p99 under 100 ms.
        prod["littles_law_mean_ms_by_clients"] = {
            lv["clients"]: round(lv["clients"] / lv["req_per_s"] * 1e3, 1) for lv in levels
        }
    return out


def machine() -> dict[str, Any]:
    import ray

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "platform": platform.platform(),
        "load_generator": "wrk 4.1 (1 thread, keep-alive, closed loop, loopback)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--catalogue", type=int, default=300, help="products incl. offers")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument(
        "--levels", type=int, nargs="+", default=None, help="clients (default: per setup)"
    )
    parser.add_argument("--setups", nargs="+", default=list(SETUPS), choices=SETUPS)
    parser.add_argument("--profile-seconds", type=int, default=8)
    parser.add_argument("--profile-clients", type=int, default=16)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/3")
    parser.add_argument("--data-dir", type=Path, default=Path("data/bench_serving"))
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--out", type=Path, default=RESULTS / "serving_throughput.json")
    parser.add_argument("--child", choices=SETUPS, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    a = parser.parse_args()
    started = time.perf_counter()
    if a.child:  # the parent prepared the data, the features in Redis and the model
        run_setup(a.child, a, serving_args(a), a.child_out)
        return
    prepare(a)
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for setup in a.setups:
            child_out = Path(tmp) / f"{setup}.json"
            command = [
                sys.executable,
                __file__,
                *sys.argv[1:],
                "--child",
                setup,
                "--child-out",
                str(child_out),
            ]
            env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}
            # Throughput-optimised replicas drain 30 s at shutdown by default; nothing is in
            # flight when a setup stops here.
            env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = "1"
            subprocess.run(command, env=env, check=True)
            runs[setup] = json.loads(child_out.read_text())
    result = {
        "benchmark": "serving_throughput",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "customers": a.customers,
        "catalogue_items": a.catalogue,
        "model": "transformer d_model 64, 2 blocks, 2 heads, max_len 50 (initialised)",
        "features": "Redis via the online reader on every request (in-process cache off)",
        "seconds_per_level": a.duration,
        "summary": summarise(runs),
        "runs": runs,
        "machine": machine(),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["summary"], indent=2))
    print(f"→ {a.out}")


if __name__ == "__main__":
    main()
