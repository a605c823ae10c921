"""Feast around Persona's data dir: online store choice, apply, materialise, online reads."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import redis
from feast import FeatureStore, RepoConfig
from feast.infra.offline_stores.duckdb import DuckDBOfflineStoreConfig
from feast.infra.online_stores.redis import RedisOnlineStoreConfig
from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig

from persona.features import catalog
from persona.layout import DataLayout
from persona.settings import PersonaSettings

REDIS_PING_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class OnlineStoreChoice:
    kind: Literal["redis", "sqlite"]
    reason: str
    location: str


def redis_answers(redis_url: str, timeout_s: float = REDIS_PING_TIMEOUT_S) -> bool:
    """True when a Redis server at ``redis_url`` answers PING within ``timeout_s``."""
    client = redis.Redis.from_url(
        redis_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
    )
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


def choose_online_store(settings: PersonaSettings) -> OnlineStoreChoice:
    """Redis when configured or reachable, SQLite otherwise; the reason says which and why."""
    if settings.online_store == "sqlite":
        return OnlineStoreChoice(
            "sqlite", "PERSONA_ONLINE_STORE=sqlite", str(settings.sqlite_online_path)
        )
    answers = redis_answers(settings.redis_url)
    if settings.online_store == "redis":
        if not answers:
            raise ConnectionError(
                f"PERSONA_ONLINE_STORE=redis but Redis at {settings.redis_url} does not answer"
            )
        return OnlineStoreChoice("redis", "PERSONA_ONLINE_STORE=redis", settings.redis_url)
    if answers:
        return OnlineStoreChoice(
            "redis", f"Redis answered at {settings.redis_url}", settings.redis_url
        )
    return OnlineStoreChoice(
        "sqlite",
        f"Redis did not answer at {settings.redis_url}; using the embedded SQLite store",
        str(settings.sqlite_online_path),
    )


def feast_redis_connection_string(redis_url: str) -> str:
    """``redis://host:port/db`` → Feast's ``host:port,db=N`` form."""
    parsed = urlparse(redis_url)
    if parsed.scheme not in ("redis", "rediss"):
        raise ValueError(f"redis_url: expected redis://host:port/db, got {redis_url!r}")
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or 6379
    db = (parsed.path or "/0").lstrip("/") or "0"
    parts = [f"{host}:{port}", f"db={db}"]
    if parsed.password:
        parts.append(f"password={parsed.password}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def repo_config(settings: PersonaSettings, choice: OnlineStoreChoice) -> RepoConfig:
    """The Feast config for ``settings``: DuckDB offline, Redis or SQLite online."""
    online: RedisOnlineStoreConfig | SqliteOnlineStoreConfig
    if choice.kind == "redis":
        online = RedisOnlineStoreConfig(
            connection_string=feast_redis_connection_string(settings.redis_url)
        )
    else:
        online = SqliteOnlineStoreConfig(path=str(settings.sqlite_online_path))
    settings.feast_registry_path.parent.mkdir(parents=True, exist_ok=True)
    return RepoConfig(
        project=settings.feast_project,
        provider="local",
        registry=str(settings.feast_registry_path),
        offline_store=DuckDBOfflineStoreConfig(),
        online_store=online,
        entity_key_serialization_version=3,
        repo_path=str(settings.feature_repo),
    )


def open_store(settings: PersonaSettings, choice: OnlineStoreChoice | None = None) -> FeatureStore:
    choice = choice or choose_online_store(settings)
    return FeatureStore(config=repo_config(settings, choice))


def apply_definitions(store: FeatureStore, data_dir: Path) -> list[str]:
    """Register every definition of ``feature_repo/`` over the offline tables of ``data_dir``."""
    from feature_repo.definitions import build_feature_repo

    features_dir = DataLayout(data_dir).features
    missing = [
        t for t in catalog.FEATURE_TABLES if not (features_dir / t / "data.parquet").exists()
    ]
    if missing:
        raise FileNotFoundError(
            f"offline feature tables missing under {features_dir}: {', '.join(missing)}; "
            "run `persona features build` first"
        )
    repo = build_feature_repo(features_dir)
    store.apply(repo.objects())
    return [getattr(o, "name", type(o).__name__) for o in repo.objects()]


#: How ``materialize_all`` loads the online store: ``bulk`` (Redis only,
#: :mod:`persona.features.bulk_materialise`), ``feast`` (``FeatureStore.materialize``), or
#: ``auto``: bulk for Redis, Feast's own path for the embedded SQLite store.
MaterializeEngine = Literal["auto", "feast", "bulk"]


@dataclass(frozen=True)
class MaterializeResult:
    rows: dict[str, int]
    seconds: float
    engine: Literal["feast", "bulk"] = "feast"

    @property
    def rows_per_second(self) -> float:
        return sum(self.rows.values()) / self.seconds if self.seconds > 0 else 0.0


def resolve_engine(store: FeatureStore, engine: MaterializeEngine) -> Literal["feast", "bulk"]:
    """``auto`` → ``bulk`` on a Redis online store, ``feast`` otherwise; ``bulk`` needs Redis."""
    is_redis = isinstance(store.config.online_store, RedisOnlineStoreConfig)
    if engine == "auto":
        return "bulk" if is_redis else "feast"
    if engine == "bulk" and not is_redis:
        raise ValueError("engine 'bulk' writes Feast's Redis layout; this store is not Redis")
    return engine


def materialize_all(
    store: FeatureStore,
    data_dir: Path,
    *,
    end: datetime | None = None,
    engine: MaterializeEngine = "auto",
    progress: bool = True,
) -> MaterializeResult:
    """Load the latest row per entity of every view into the online store.

    Every view gets the interval ``[end - longest ttl, end]``. ``rows`` counts the entities
    loaded per view (the latest row of each entity in that interval: what the online store
    holds afterwards). Both engines write the same bytes and record the interval in the
    registry (``feast materialize-incremental`` continues from ``end``).
    """
    end = end or datetime.now(UTC)
    longest_ttl = max(t.ttl_days for t in catalog.FEATURE_TABLES.values())
    start = end - timedelta(days=longest_ttl)
    chosen = resolve_engine(store, engine)
    if chosen == "bulk":
        from persona.features.bulk_materialise import bulk_materialise

        bulk = bulk_materialise(store, start, end, list(catalog.FEATURE_TABLES), progress=progress)
        return MaterializeResult(rows=bulk.rows, seconds=bulk.seconds, engine="bulk")

    import duckdb

    features_dir = DataLayout(data_dir).features
    rows: dict[str, int] = {}
    # A private connection: a one-row fetch leaves the result open, which would block the
    # process-wide default connection for whoever uses it next.
    with duckdb.connect() as con:
        for table in catalog.FEATURE_TABLES.values():
            path = features_dir / table.name / "data.parquet"
            found = con.execute(
                f"SELECT count(DISTINCT {table.join_key}) FROM read_parquet('{path}') "
                "WHERE event_timestamp >= ?::TIMESTAMPTZ AND event_timestamp <= ?::TIMESTAMPTZ",
                [start, end],
            ).fetchall()
            rows[table.name] = int(found[0][0]) if found else 0
    started = time.perf_counter()
    store.materialize(start_date=start, end_date=end, feature_views=list(catalog.FEATURE_TABLES))
    return MaterializeResult(rows=rows, seconds=time.perf_counter() - started, engine="feast")


def online_customer_vector(
    store: FeatureStore, customer_id: int, service: str = "customer_context_v1"
) -> dict[str, Any]:
    """One customer's online feature vector, through a feature service (one round trip)."""
    response = store.get_online_features(
        features=store.get_feature_service(service),
        entity_rows=[{"customer_id": customer_id}],
    ).to_dict()
    return {name: values[0] for name, values in response.items()}
