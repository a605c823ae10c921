"""A feature service's online values straight from Feast's Redis layout, in one round trip.

``FeatureStore.get_online_features`` resolves the service, builds protobuf entity keys, sends
one HMGET per view and entity through redis-py, wraps every value in a response proto and then
converts it back to Python: 4.7 ms for one customer and 142 ms for a hundred here. This reader
resolves the service once (Feast's registry stays the source of truth), then per call sends one
pre-built pipelined HMGET per entity with exactly the service's hash fields, and decodes the
replies in one pass (:class:`~persona.features.redis_layout.RowDecoder`).

The result is ``get_online_features(...).to_dict()`` value for value:

- a missing entity (or a view the entity has no row in) gives ``None`` for those features;
- TTL: Feast's Redis read path does not filter by age (rows past their view's ``ttl`` are
  returned as stored; the status it marks is dropped by ``to_dict``), and neither does this;
  expiry in Redis itself comes from ``key_ttl_seconds``, which the writers apply;
- on-demand views of the service run through Feast's own ``transform_dict`` on the same inputs
  Feast gives them, and their outputs are normalised to what Feast's proto round trip returns.

Definitions are read when the reader is built: build a new reader after ``feast apply``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import redis
import redis.asyncio as aioredis
from feast import FeatureStore, FeatureView, OnDemandFeatureView, RepoConfig
from feast.errors import FeatureViewNotFoundException
from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values
from feast.value_type import ValueType

from persona.features.redis_layout import RedisLayout, RowDecoder, UnsupportedLayout
from persona.features.redis_wire import RedisEndpoint

DEFAULT_SERVICE: Final = "customer_context_v1"
#: Seconds; serving passes its own budget.
DEFAULT_TIMEOUT_S: Final = 1.0


@dataclass(frozen=True)
class _OnDemand:
    """An on-demand view of the service: what it may see and which outputs are kept."""

    view: OnDemandFeatureView
    hidden_inputs: frozenset[str]
    outputs: tuple[tuple[str, ValueType | None], ...]


@dataclass(frozen=True)
class ServicePlan:
    """A feature service resolved against the registry and Feast's Redis layout."""

    service: str
    join_key: str
    entity_type: ValueType
    key_of: Callable[[Any], bytes]
    command_head: bytes
    command_fields: bytes
    columns: tuple[str, ...]
    decoder: RowDecoder
    on_demand: tuple[_OnDemand, ...]
    request_fields: tuple[str, ...]
    output_names: tuple[str, ...]


def _feature_view(store: FeatureStore, name: str) -> FeatureView | OnDemandFeatureView:
    try:
        return store.get_feature_view(name)
    except FeatureViewNotFoundException:
        return store.get_on_demand_feature_view(name)


def _add_new(names: list[str], more: list[str]) -> None:
    names.extend(n for n in more if n not in names)


def plan_service(
    store: FeatureStore, service_name: str = DEFAULT_SERVICE, *, full_feature_names: bool = False
) -> ServicePlan:
    """Resolve ``service_name`` to hash fields, decoders and on-demand transforms.

    Mirrors Feast 0.67's ``_group_feature_refs``: an on-demand view's source features are read
    even when the service does not list them, and are dropped from the result.
    """
    layout = RedisLayout.from_repo_config(store.config)
    service = store.get_feature_service(service_name)
    read: dict[str, list[str]] = {}  # view name → features to read (service's first)
    views: dict[str, FeatureView] = {}
    on_demand: list[tuple[OnDemandFeatureView, list[str]]] = []
    output: list[str] = []

    def name_of(view: str, feature: str) -> str:
        return f"{view}__{feature}" if full_feature_names else feature

    for projection in service.feature_view_projections:
        if projection.join_key_map or projection.version_tag is not None:
            raise UnsupportedLayout(f"{service_name}: join key maps and versioned projections")
        view = _feature_view(store, projection.name)
        wanted = [f.name for f in projection.features]
        shown = projection.name_to_use()
        output += [name_of(shown, f) for f in wanted]
        if isinstance(view, OnDemandFeatureView):
            if view.write_to_online_store or view.aggregations or view.mode != "python":
                raise UnsupportedLayout(f"{view.name}: only python-mode, not-stored ODFVs")
            on_demand.append((view, wanted))
            for source in view.source_feature_view_projections.values():
                views.setdefault(source.name, store.get_feature_view(source.name))
                read.setdefault(source.name, [])
            continue
        if projection.name_alias:
            raise UnsupportedLayout(f"{service_name}: aliased projections")
        views[view.name] = view
        _add_new(read.setdefault(view.name, []), wanted)
    for odfv, _ in on_demand:
        for source in odfv.source_feature_view_projections.values():
            _add_new(read[source.name], [f.name for f in source.features])
    if len(set(output)) != len(output):
        raise ValueError(f"{service_name}: feature names collide; use full_feature_names")

    join_keys = {v.entity_columns[0].name for v in views.values() if len(v.entity_columns) == 1}
    if len(join_keys) != 1 or any(len(v.entity_columns) != 1 for v in views.values()):
        raise UnsupportedLayout(f"{service_name}: views must share one single join key")
    entity = next(iter(views.values())).entity_columns[0]
    columns: list[str] = []
    value_types: list[ValueType] = []
    fields: list[bytes] = []
    for view_name, features in read.items():
        view = views[view_name]
        stored_name = layout.view_name(view)
        types = {f.name: f.dtype.to_value_type() for f in view.features}
        for feature in features:
            columns.append(name_of(view_name, feature))
            value_types.append(types[feature])
            fields.append(layout.feature_field(stored_name, feature))

    if on_demand and full_feature_names:
        raise UnsupportedLayout(f"{service_name}: full_feature_names with on-demand views")
    planned_on_demand = tuple(
        _plan_on_demand(odfv, wanted, read, on_demand) for odfv, wanted in on_demand
    )
    request_fields = tuple(
        sorted(
            {
                f.name
                for odfv, _ in on_demand
                for source in odfv.source_request_sources.values()
                for f in source.schema
            }
        )
    )
    return ServicePlan(
        service=service_name,
        join_key=entity.name,
        entity_type=entity.dtype.to_value_type(),
        key_of=layout.key_encoder(entity.name, entity.dtype.to_value_type()),
        command_head=b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2),
        command_fields=b"".join(b"$%d\r\n%b\r\n" % (len(f), f) for f in fields),
        columns=tuple(columns),
        decoder=RowDecoder(value_types),
        on_demand=planned_on_demand,
        request_fields=request_fields,
        output_names=(entity.name, *output),
    )


def _plan_on_demand(
    odfv: OnDemandFeatureView,
    wanted: list[str],
    read: dict[str, list[str]],
    all_on_demand: list[tuple[OnDemandFeatureView, list[str]]],
) -> _OnDemand:
    """Feast's rule for what a UDF may see (``_augment_response_with_on_demand_transforms``):
    every response column except features of views it did not declare as sources."""
    declared = {p.name for p in odfv.source_feature_view_projections.values()}
    hidden: set[str] = set()
    for view_name, features in read.items():
        if view_name in declared:
            continue
        for name in features:
            hidden.update({name, f"{view_name}__{name}"})
    for other, _ in all_on_demand:
        for projection in other.source_feature_view_projections.values():
            if projection.name not in declared:
                for feature in projection.features:
                    hidden.update({feature.name, f"{projection.name}__{feature.name}"})
    schema = {f.name: f.dtype for f in odfv.schema}
    outputs = tuple((f, schema[f].to_value_type() if f in schema else None) for f in wanted)
    return _OnDemand(view=odfv, hidden_inputs=frozenset(hidden), outputs=outputs)


_PLAIN_TYPES: Final[dict[ValueType, type]] = {
    ValueType.INT64: int,
    ValueType.BOOL: bool,
    ValueType.STRING: str,
}


def _normalise(values: list[Any], value_type: ValueType | None) -> list[Any]:
    """What Feast's proto round trip (python value → ``Value`` → ``to_dict``) makes of UDF output.

    Plain floats, ints, bools and strings are handled here; anything else takes Feast's path.
    """
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if value_type == ValueType.DOUBLE and kinds <= {float}:
        return [None if v is None or math.isnan(v) else v for v in values]
    plain = _PLAIN_TYPES.get(value_type)  # type: ignore[arg-type]
    if plain is not None and kinds <= {plain}:
        return values
    protos = python_values_to_proto_values(values, value_type or ValueType.UNKNOWN)
    return [feast_value_type_to_python_type(p) for p in protos]


class FastOnlineReader:
    """Reads one feature service for 1..N entities from Redis, as Feast's SDK would return it.

    ``read`` (redis-py) and ``aread`` (``redis.asyncio``) each make one pipelined round trip:
    an HMGET per entity of exactly the service's hash fields. Connections are pooled and opened
    on first use. ``timeout_s`` bounds connecting (unless ``connect_timeout_s`` is given) and,
    for ``read``, each socket read (``redis.TimeoutError``), for ``aread``, the whole round
    trip (``TimeoutError``); a connection that failed or timed out mid-reply is dropped, never
    reused. Use one reader per event loop for ``aread``; ``read`` is thread-safe.
    """

    def __init__(
        self,
        store: FeatureStore,
        service: str = DEFAULT_SERVICE,
        *,
        full_feature_names: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float | None = None,
        max_connections: int | None = None,
    ):
        self.plan = plan_service(store, service, full_feature_names=full_feature_names)
        self.timeout_s = timeout_s
        self._endpoint = RedisEndpoint.from_repo_config(store.config)
        self._connect_timeout_s = timeout_s if connect_timeout_s is None else connect_timeout_s
        self._max_connections = max_connections
        self._pool: redis.ConnectionPool | None = None
        self._async_pool: aioredis.ConnectionPool | None = None

    @classmethod
    def from_repo_config(
        cls, config: RepoConfig, service: str = DEFAULT_SERVICE, **options: Any
    ) -> FastOnlineReader:
        return cls(FeatureStore(config=config), service, **options)

    # -- connections ------------------------------------------------------------------------

    def _sync_pool(self) -> redis.ConnectionPool:
        if self._pool is None:
            kwargs = self._endpoint.client_kwargs()
            if self._endpoint.ssl:
                kwargs["connection_class"] = redis.SSLConnection
            self._pool = redis.ConnectionPool(
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self._connect_timeout_s,
                max_connections=self._max_connections,
                **kwargs,
            )
        return self._pool

    def _aio_pool(self) -> aioredis.ConnectionPool:
        if self._async_pool is None:
            kwargs = self._endpoint.client_kwargs()
            if self._endpoint.ssl:
                kwargs["connection_class"] = aioredis.SSLConnection
            # No per-read socket timeout: one deadline covers the whole round trip.
            self._async_pool = aioredis.ConnectionPool(
                socket_timeout=None,
                socket_connect_timeout=self._connect_timeout_s,
                max_connections=self._max_connections,
                **kwargs,
            )
        return self._async_pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.disconnect()
            self._pool = None

    async def aclose(self) -> None:
        if self._async_pool is not None:
            await self._async_pool.disconnect()
            self._async_pool = None
        self.close()

    def __enter__(self) -> FastOnlineReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reads ------------------------------------------------------------------------------

    def _entity_values(self, entity_ids: Sequence[Any]) -> list[Any]:
        convert = int if self.plan.entity_type == ValueType.INT64 else str
        return [convert(e) for e in entity_ids]

    def _commands(self, ids: list[Any]) -> bytes:
        head, fields, key_of = self.plan.command_head, self.plan.command_fields, self.plan.key_of
        parts = []
        for entity in ids:
            key = key_of(entity)
            parts.append(b"%b$%d\r\n%b\r\n%b" % (head, len(key), key, fields))
        return b"".join(parts)

    def read(
        self, entity_ids: Sequence[Any], request_data: Mapping[str, Sequence[Any]] | None = None
    ) -> dict[str, list[Any]]:
        """The service's values for ``entity_ids`` (in order), as ``to_dict()`` returns them."""
        ids = self._entity_values(entity_ids)
        if not ids:
            return {name: [] for name in self.plan.output_names}
        payload = self._commands(ids)
        pool = self._sync_pool()
        connection = pool.get_connection()
        try:
            connection.send_packed_command([payload])
            rows = [connection.read_response() for _ in ids]
        except BaseException:
            # Replies may be left unread on the socket: never reuse this connection.
            connection.disconnect()
            raise
        finally:
            pool.release(connection)
        return self._assemble(ids, rows, request_data)

    async def aread(
        self, entity_ids: Sequence[Any], request_data: Mapping[str, Sequence[Any]] | None = None
    ) -> dict[str, list[Any]]:
        """:meth:`read` on ``redis.asyncio``, the whole round trip bounded by ``timeout_s``."""
        ids = self._entity_values(entity_ids)
        if not ids:
            return {name: [] for name in self.plan.output_names}
        payload = self._commands(ids)
        pool = self._aio_pool()
        connection = await pool.get_connection()
        try:
            async with asyncio.timeout(self.timeout_s):
                await connection.send_packed_command([payload])
                rows = [await connection.read_response() for _ in ids]
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        finally:
            await pool.release(connection)
        return self._assemble(ids, rows, request_data)

    def _assemble(
        self,
        ids: list[Any],
        rows: list[list[bytes | None]],
        request_data: Mapping[str, Sequence[Any]] | None,
    ) -> dict[str, list[Any]]:
        plan = self.plan
        read: dict[str, list[Any]] = {plan.join_key: ids}
        read.update(zip(plan.columns, plan.decoder.decode(rows), strict=True))
        if plan.on_demand:
            self._apply_on_demand(read, len(ids), request_data or {})
        return {name: read[name] for name in plan.output_names}

    def _apply_on_demand(
        self, read: dict[str, list[Any]], n: int, request_data: Mapping[str, Sequence[Any]]
    ) -> None:
        missing = [f for f in self.plan.request_fields if f not in request_data]
        if missing:
            raise ValueError(f"request data missing for on-demand features: {missing}")
        inputs = dict(read)
        for name in self.plan.request_fields:
            values = list(request_data[name])
            if len(values) != n:
                raise ValueError(f"request data {name!r}: {len(values)} values for {n} entities")
            inputs[name] = values
        for odfv in self.plan.on_demand:
            visible = {k: v for k, v in inputs.items() if k not in odfv.hidden_inputs}
            transformed = odfv.view.transform_dict(visible)
            for name, value_type in odfv.outputs:
                read[name] = _normalise(list(transformed[name]), value_type)
