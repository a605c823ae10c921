"""Reusable pieces of the real serving stack for tests that want it outside Ray: a served bank
(the same steps as the ``serving_stack`` fixture) and the single-process server in a child
process over real HTTP."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import requests

from persona.layout import DataLayout, parquet_glob
from persona.settings import PersonaSettings
from serving.catalogue import Catalogue
from serving.priors import build_priors
from serving.settings import Budgets, ServingArgs
from serving.single_process import single_process_command
from tests.banks import featured_bank
from tests.serving.conftest import RedisServer, free_port, register_model
from training.examples import ExampleSet
from training.registry import ModelRegistry
from training.sets.impressions import build_impression_set

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "serving"


def build_served_bank(
    root: Path, redis: RedisServer, *, customers: int = 400, days: int = 40, seed: int = 5
) -> ServingArgs:
    """Simulate a bank into ``root``, apply and materialise Feast into ``redis``, register a
    small transformer for every app and copy the shipped serving config; returns the
    arguments that serve it."""
    from persona.features.store import (
        OnlineStoreChoice,
        apply_definitions,
        materialize_all,
        open_store,
    )

    featured_bank(root, customers=customers, days=days, seed=seed)
    examples = ExampleSet(root / "examples")
    build_impression_set(
        root, examples.root, dataset="serving-test", max_len=10, valid_days=4, test_days=4, seed=1
    )
    build_priors(root).save(root / "serving")
    settings = PersonaSettings(data_dir=root, online_store="redis", redis_url=redis.url)
    store = open_store(settings, OnlineStoreChoice("redis", "test", redis.url))
    apply_definitions(store, root)
    materialize_all(store, root)
    register_model(root, examples, ModelRegistry(root / "registry"), seed=0)
    config_dir = root / "serving_config"
    shutil.copytree(CONFIG_DIR, config_dir)
    return ServingArgs(
        data_dir=root,
        config_dir=config_dir,
        online_store="redis",
        redis_url=redis.url,
        feature_cache_ttl_s=30.0,
        budgets=Budgets(features_ms=200, ranking_ms=2000, total_ms=5000),
        flush_interval_s=0.5,
    )


def customers_where(data_dir: Path, where: str = "TRUE", limit: int | None = None) -> list[int]:
    """Ids of the bank's customers matching the SQL condition ``where``, ascending."""
    glob = parquet_glob(DataLayout(data_dir).clean_table("customers"))
    cap = "" if limit is None else f" LIMIT {limit}"
    with duckdb.connect() as con:
        rows = con.sql(
            f"SELECT customer_id FROM read_parquet('{glob}') WHERE {where} "
            f"ORDER BY customer_id{cap}"
        ).fetchall()
    return [int(r[0]) for r in rows]


def customer_ids(data_dir: Path) -> list[int]:
    """Every customer id of the bank, ascending."""
    return customers_where(data_dir)


@dataclass
class LiveServer:
    """``persona serve --single-process`` in a child process, and what the bank holds."""

    url: str
    args: ServingArgs
    redis: RedisServer
    process: subprocess.Popen[bytes]
    customer_ids: list[int]
    product_ids: list[str]

    @classmethod
    def start(cls, args: ServingArgs, redis: RedisServer, timeout_s: float = 120.0) -> LiveServer:
        port = free_port()
        process = subprocess.Popen(single_process_command(args, "127.0.0.1", port))
        url = f"http://127.0.0.1:{port}"
        server = cls(
            url,
            args,
            redis,
            process,
            customer_ids(args.data_dir),
            Catalogue.from_data_dir(args.data_dir).ids(),
        )
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the single-process server exited with {process.returncode}")
            try:
                if requests.get(f"{url}/readyz", timeout=5).status_code == 200:
                    return server
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"the single-process server at {url} never became ready")
            time.sleep(0.25)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
