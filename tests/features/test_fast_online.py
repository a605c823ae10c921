"""The fast Redis paths against Feast's own: bulk materialisation and the fast online reader.

Feast stays the owner of the layout, so every check compares with Feast itself: the encoders
with ``Value.SerializeToString`` on the values Feast's materialisation produces, the bulk load
with what ``feast materialize`` writes (byte for byte) and what the SDK then reads, the reader
with ``get_online_features(...).to_dict()`` for the same customers.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import redis
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from persona.features import catalog
from persona.features.bulk_materialise import bulk_materialise
from persona.features.online_reader import FastOnlineReader
from persona.features.redis_layout import (
    RedisLayout,
    RowDecoder,
    UnsupportedLayout,
    decode_timestamp_nanos,
    encode_timestamps,
    encode_values,
)
from persona.features.store import (
    OnlineStoreChoice,
    apply_definitions,
    materialize_all,
    open_store,
    redis_answers,
    resolve_engine,
)
from persona.settings import PersonaSettings
from tests.banks import featured_bank
from tests.features.conftest import VALIDATION_NOW

#: A database no other test uses (the suite uses 0, the serving benchmark 3).
REDIS_URL = "redis://127.0.0.1:6379/12"
SERVICE = "customer_context_v1"
UNKNOWN_IDS = [0, -7, 10**12]


# --- Encoders and decoders against Feast's own serialisation (no Redis) ----------------------


def _feast_bytes(array: pa.Array, value_type: ValueType) -> list[bytes]:
    """What Feast's materialisation writes for a column: the pandas round trip of its compute
    engine, then ``python_values_to_proto_values``."""
    column = pa.Table.from_pandas(pa.table({"c": array}).to_pandas()).column("c")
    protos = python_values_to_proto_values(column.to_numpy(zero_copy_only=False), value_type)
    return [p.SerializeToString() for p in protos]


def _columns(rng: np.random.Generator, n: int = 600) -> dict[str, tuple[pa.Array, ValueType]]:
    edge_ints = [0, 1, -1, 127, 128, 16_383, 16_384, 2**31, -(2**31), 2**53, 2**63 - 1, -(2**63)]
    ints = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)
    ints[: len(edge_ints)] = edge_ints
    small = rng.integers(-300, 300, n)
    doubles = [0.0, -0.0, float("inf"), -float("inf"), 5e-324, *rng.normal(0, 1e6, n - 5)]
    texts = ["", "retail", "é✓ unicode", "x" * 200, "y" * 20_000]
    return {
        "int64": (pa.array(ints, pa.int64()), ValueType.INT64),
        # Feast's path casts an int column with nulls to float: only exact below 2**53.
        "int64 with nulls": (
            pa.array([None if i % 9 == 0 else int(v) for i, v in enumerate(small)], pa.int64()),
            ValueType.INT64,
        ),
        "double": (
            pa.array(
                [
                    None if i % 13 == 12 else float("nan") if i % 17 == 16 else v
                    for i, v in enumerate(doubles)
                ],
                pa.float64(),
            ),
            ValueType.DOUBLE,
        ),
        "bool": (pa.array([None if i % 7 == 0 else bool(i % 3) for i in range(n)]), ValueType.BOOL),
        "string": (
            pa.array([None if i % 11 == 0 else texts[i % len(texts)] for i in range(n)]),
            ValueType.STRING,
        ),
        "string list": (
            pa.array(
                [
                    None
                    if i % 10 == 0
                    else []
                    if i % 6 == 0
                    else [None if j == 3 else texts[(i + j) % 4] for j in range(i % 9)]
                    for i in range(n)
                ],
                pa.list_(pa.string()),
            ),
            ValueType.STRING_LIST,
        ),
        "int64 list": (
            pa.array(
                [
                    None if i % 10 == 0 else [] if i % 6 == 0 else ints[i : i + i % 60].tolist()
                    for i in range(n)
                ],
                pa.list_(pa.int64()),
            ),
            ValueType.INT64_LIST,
        ),
    }


@pytest.mark.parametrize(
    "name",
    ["int64", "int64 with nulls", "double", "bool", "string", "string list", "int64 list"],
)
def test_encoders_write_the_bytes_feast_writes(name: str) -> None:
    array, value_type = _columns(np.random.default_rng(5))[name]
    ours = encode_values(array, value_type).to_pylist()
    feast = _feast_bytes(array, value_type)
    mismatches = [i for i, (a, b) in enumerate(zip(ours, feast, strict=True)) if a != b]
    assert not mismatches, (name, mismatches[:5], ours[mismatches[0]], feast[mismatches[0]])


def test_timestamps_are_feast_timestamps_to_the_microsecond() -> None:
    moments = [
        datetime(2026, 3, 1, 12, 30, 5, 123_456, tzinfo=UTC),
        datetime(2026, 3, 1, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),
        datetime(1986, 10, 25, 1, 55, 4, 751_567, tzinfo=UTC),
    ]
    encoded, nanos = encode_timestamps(pa.array(moments, pa.timestamp("us", tz="UTC")))
    for moment, ours, our_nanos in zip(moments, encoded.to_pylist(), nanos, strict=True):
        feast = Timestamp()
        feast.FromDatetime(moment)
        assert ours == feast.SerializeToString(), moment
        assert decode_timestamp_nanos(ours) == our_nanos == feast.seconds * 10**9 + feast.nanos


def test_keys_and_fields_are_feast_keys_and_fields() -> None:
    layout = RedisLayout(project="persona_t", key_ttl_seconds=None, versioned_view_names=False)
    ids = [0, 1, -1, 2**40, 2**63 - 1]
    keys = layout.redis_keys("customer_id", ValueType.INT64, pa.array(ids)).to_pylist()
    key_of = layout.key_encoder("customer_id", ValueType.INT64)
    for customer_id, key in zip(ids, keys, strict=True):
        entity = EntityKey(join_keys=["customer_id"], entity_values=[Value(int64_val=customer_id)])
        feast = serialize_entity_key(entity, entity_key_serialization_version=3) + b"persona_t"
        assert key == key_of(customer_id) == feast
    products = ["card_a", "é-product", ""]
    keys = layout.redis_keys("product_id", ValueType.STRING, pa.array(products)).to_pylist()
    for product, key in zip(products, keys, strict=True):
        entity = EntityKey(join_keys=["product_id"], entity_values=[Value(string_val=product)])
        assert (
            key == serialize_entity_key(entity, entity_key_serialization_version=3) + b"persona_t"
        )
    assert layout.feature_field("customer_profile", "age_band") == _mmh3(
        "customer_profile:age_band"
    )


def test_row_decoder_gives_feast_values_and_fresh_lists() -> None:
    columns = _columns(np.random.default_rng(8), n=300)
    types = [vt for _, vt in columns.values()]
    encoded = [encode_values(array, vt).to_pylist() for array, vt in columns.values()]
    rows = [list(r) for r in zip(*encoded, strict=True)] + [[None] * len(types)]
    expected = [
        [feast_value_type_to_python_type(Value.FromString(raw or b""), vt) for raw in column]
        for column, vt in zip([*zip(*rows, strict=True)], types, strict=True)
    ]
    decoder = RowDecoder(types)
    first = decoder.decode(rows)
    assert _same(first, expected)
    for column in first:  # callers may mutate what they get …
        for value in column:
            if isinstance(value, list):
                value.append("mutated")
    assert _same(decoder.decode(rows), expected)  # … without touching the memo


def _same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (1 == 1.0 == True is not enough here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and a != a:
        return b != b
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _same_response(ours: dict[str, list[Any]], feast: dict[str, list[Any]]) -> None:
    """Feast's key order follows Python set order; compare as mappings, values exactly."""
    assert set(ours) == set(feast)
    for name in feast:
        assert _same(ours[name], feast[name]), (name, ours[name], feast[name])


# --- Against Feast on a real repo in Redis ---------------------------------------------------


@dataclass
class Projects:
    """Two Feast projects over the same offline tables: one loaded by Feast, one by us."""

    stock: FeatureStore
    bulk: FeatureStore
    customer_ids: list[int]
    end: datetime
    client: redis.Redis


def _store(tmp: Path, name: str, data_root: Path) -> FeatureStore:
    settings = PersonaSettings(
        data_dir=tmp / name, feast_project=name, online_store="redis", redis_url=REDIS_URL
    )
    store = open_store(settings, OnlineStoreChoice("redis", "test", REDIS_URL))
    apply_definitions(store, data_root)
    return store


def _drop_project(client: redis.Redis, project: str) -> None:
    keys = list(client.scan_iter(match=b"*" + project.encode(), count=1000))
    if keys:
        client.unlink(*keys)


def _dump(client: redis.Redis, project: str) -> dict[bytes, dict[bytes, bytes]]:
    """Every hash of a project, keyed by the serialised entity (without the project suffix)."""
    suffix = project.encode()
    keys = list(client.scan_iter(match=b"*" + suffix, count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    return {k[: -len(suffix)]: h for k, h in zip(keys, pipe.execute(), strict=True)}


@pytest.fixture(scope="module")
def redis_client() -> Iterator[redis.Redis]:
    if not redis_answers(REDIS_URL):
        pytest.fail(f"Redis must answer at {REDIS_URL} (CI starts it in .ci/run)")
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture(scope="module")
def projects(
    tmp_path_factory: pytest.TempPathFactory, redis_client: redis.Redis
) -> Iterator[Projects]:
    root = featured_bank(tmp_path_factory.mktemp("fast_bank"), customers=400, days=14, seed=3)
    tmp = tmp_path_factory.mktemp("fast_registries")
    tag = uuid.uuid4().hex[:8]
    stock = _store(tmp, f"stock_{tag}", root)
    bulk = _store(tmp, f"bulk_{tag}", root)
    end = datetime.now(UTC)
    assert materialize_all(stock, root, end=end, engine="feast", progress=False).engine == "feast"
    assert materialize_all(bulk, root, end=end, engine="bulk", progress=False).engine == "bulk"
    yield Projects(stock, bulk, list(range(1, 401)), end, redis_client)
    for store in (stock, bulk):
        _drop_project(redis_client, store.project)


@pytest.mark.slow
def test_bulk_load_writes_what_feast_writes_byte_for_byte(projects: Projects) -> None:
    stock = _dump(projects.client, projects.stock.project)
    bulk = _dump(projects.client, projects.bulk.project)
    assert len(stock) == 400 + 51  # every customer and product has a profile or stats row
    assert stock.keys() == bulk.keys()
    differing = [k for k in stock if stock[k] != bulk[k]]
    assert not differing, (differing[0], stock[differing[0]], bulk[differing[0]])


def _feast_read(store: FeatureStore, ids: list[int]) -> dict[str, list[Any]]:
    service = store.get_feature_service(SERVICE)
    rows = [{"customer_id": i} for i in ids]
    return store.get_online_features(features=service, entity_rows=rows).to_dict()


@pytest.mark.slow
def test_feast_reads_the_bulk_load_as_it_reads_its_own(projects: Projects) -> None:
    ids = projects.customer_ids + UNKNOWN_IDS
    stock, bulk = _feast_read(projects.stock, ids), _feast_read(projects.bulk, ids)
    _same_response(bulk, stock)
    # The data has the cases that matter: no sequence, null strings, an unknown customer.
    assert None in stock["seq_product_ids"] and stock["seq_product_ids"][-1] is None
    assert any(isinstance(s, list) and s for s in stock["seq_product_ids"])
    assert None in stock["age_band"] or None in stock["occupation"]


def _samples(ids: list[int], no_sequence: list[int]) -> list[list[int]]:
    rng = random.Random(4)
    return [
        [ids[0]],
        [UNKNOWN_IDS[2]],
        *([i] for i in rng.sample(ids, 5)),
        rng.sample(ids, 100) + UNKNOWN_IDS + [ids[3], ids[3]],  # duplicates too
        ids,
        no_sequence[:1],
        no_sequence[:10] + ids[:10],
    ]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_fast_reader_returns_what_the_feast_sdk_returns(projects: Projects, mode: str) -> None:
    reader = FastOnlineReader(projects.bulk, SERVICE, timeout_s=2.0)
    everyone = _feast_read(projects.bulk, projects.customer_ids)
    no_sequence = [
        i for i, s in zip(everyone["customer_id"], everyone["seq_length"], strict=True) if s is None
    ]
    assert no_sequence
    try:
        for ids in _samples(projects.customer_ids, no_sequence):
            feast = _feast_read(projects.bulk, ids)
            ours = reader.read(ids) if mode == "sync" else asyncio.run(_aread(reader, ids))
            _same_response(ours, feast)
            assert next(iter(ours)) == "customer_id"
    finally:
        reader.close()


async def _aread(reader: FastOnlineReader, ids: list[int]) -> dict[str, list[Any]]:
    try:
        return await reader.aread(ids)
    finally:
        await reader.aclose()  # the pool belongs to this event loop


@pytest.mark.slow
def test_fast_reader_reads_feasts_own_load_and_the_empty_request(projects: Projects) -> None:
    reader = FastOnlineReader.from_repo_config(projects.stock.config, SERVICE)
    with reader:
        ids = projects.customer_ids[:50] + UNKNOWN_IDS
        _same_response(reader.read(ids), _feast_read(projects.stock, ids))
        assert reader.read([]) == {name: [] for name in reader.plan.output_names}


@pytest.mark.slow
def test_bulk_load_records_intervals_so_incremental_materialisation_continues(
    projects: Projects,
) -> None:
    store = projects.bulk
    for table in catalog.FEATURE_TABLES.values():
        view = store.get_feature_view(table.name)
        start, end = view.materialization_intervals[-1]
        assert end == projects.end
        assert end - start == timedelta(
            days=max(t.ttl_days for t in catalog.FEATURE_TABLES.values())
        )
    store.materialize_incremental(end_date=projects.end + timedelta(minutes=1))
    view = store.get_feature_view("customer_profile")
    assert view.materialization_intervals[-1][0] == projects.end


@pytest.mark.slow
def test_older_rows_never_overwrite_newer_ones_as_in_feast(projects: Projects) -> None:
    before = _dump(projects.client, projects.bulk.project)
    # A window ending three days earlier: its latest rows are older than what Redis holds.
    earlier = projects.end - timedelta(days=3)
    result = bulk_materialise(
        projects.bulk,
        earlier - timedelta(days=365),
        earlier,
        progress=False,
        record_intervals=False,
    )
    assert sum(result.stale.values()) > 0
    assert all(result.written[v] + result.stale[v] == result.rows[v] for v in result.rows)
    assert _dump(projects.client, projects.bulk.project) == before


@pytest.mark.slow
def test_rows_past_their_ttl_are_read_as_feast_reads_them(
    crafted_bank: Path, tmp_path: Path, redis_client: redis.Redis
) -> None:
    """Feast's Redis read path does not drop rows older than their view's ttl; neither do we."""
    store = _store(tmp_path, f"ttl_{uuid.uuid4().hex[:8]}", crafted_bank)
    try:
        materialize_all(store, crafted_bank, end=VALIDATION_NOW, progress=False)
        behaviour_ttl = store.get_feature_view("customer_behaviour").ttl
        assert datetime.now(UTC) - VALIDATION_NOW > behaviour_ttl, "rows must be past their ttl"
        ids = [1, 2, 3, 999]
        feast = _feast_read(store, ids)
        assert feast["clicks_30d"][0] is not None
        with FastOnlineReader(store) as reader:
            _same_response(reader.read(ids), feast)
    finally:
        _drop_project(redis_client, store.project)


def test_engine_choice_follows_the_online_store(tmp_path: Path) -> None:
    redis_store = open_store(
        PersonaSettings(data_dir=tmp_path / "r", online_store="redis", redis_url=REDIS_URL),
        OnlineStoreChoice("redis", "test", REDIS_URL),
    )
    sqlite_settings = PersonaSettings(data_dir=tmp_path / "s", online_store="sqlite")
    sqlite_store = open_store(
        sqlite_settings,
        OnlineStoreChoice("sqlite", "test", str(sqlite_settings.sqlite_online_path)),
    )
    assert resolve_engine(redis_store, "auto") == "bulk"
    assert resolve_engine(redis_store, "feast") == "feast"
    assert resolve_engine(sqlite_store, "auto") == "feast"
    with pytest.raises(ValueError, match="not Redis"):
        resolve_engine(sqlite_store, "bulk")
    with pytest.raises(UnsupportedLayout):
        RedisLayout.from_repo_config(sqlite_store.config)


@pytest.mark.slow
def test_key_ttl_and_skip_dedup_configs_load_as_feast_loads_them(
    crafted_bank: Path, tmp_path: Path, redis_client: redis.Redis
) -> None:
    tag = uuid.uuid4().hex[:8]
    stock = _store(tmp_path, f"ttl_stock_{tag}", crafted_bank)
    bulk = _store(tmp_path, f"ttl_bulk_{tag}", crafted_bank)
    for store in (stock, bulk):
        store.config.online_store.key_ttl_seconds = 3_600
    bulk.config.online_store.skip_dedup = True
    try:
        materialize_all(stock, crafted_bank, end=VALIDATION_NOW, engine="feast", progress=False)
        materialize_all(bulk, crafted_bank, end=VALIDATION_NOW, engine="bulk", progress=False)
        stock_dump = _dump(redis_client, stock.project)
        assert _dump(redis_client, bulk.project) == stock_dump
        for project in (stock.project, bulk.project):
            ttls = [redis_client.ttl(k + project.encode()) for k in stock_dump]
            assert all(0 < t <= 3_600 for t in ttls), (project, ttls)
    finally:
        for store in (stock, bulk):
            _drop_project(redis_client, store.project)
