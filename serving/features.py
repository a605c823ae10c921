"""The features stage's engine: one customer's online vector from Feast in one round trip, behind
an in-process TTL cache that the events stage can invalidate (Redis pub/sub) after a push."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import redis

from persona.settings import PersonaSettings
from serving.customer import CustomerView

if TYPE_CHECKING:
    from persona.features.online_reader import FastOnlineReader

log = logging.getLogger(__name__)

#: Channel on which the events stage announces customers whose features it just pushed.
INVALIDATION_CHANNEL: Final = "persona:features:invalidate"
CUSTOMER_SERVICE: Final = "customer_context_v1"


@dataclass(frozen=True)
class FeatureFetch:
    customer: CustomerView
    cache_hit: bool
    degraded: str | None  # why the features are missing or stale, None when fresh
    elapsed_ms: float


class TTLCache:
    """A bounded LRU whose entries expire ``ttl_s`` after they were stored."""

    def __init__(self, ttl_s: float, max_entries: int):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._items: OrderedDict[int, tuple[float, CustomerView]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: int, allow_stale: bool = False) -> CustomerView | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return None
            stored_at, value = found
            if not allow_stale and time.monotonic() - stored_at > self.ttl_s:
                return None
            self._items.move_to_end(key)
            return value

    def put(self, key: int, value: CustomerView) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            self._items[key] = (time.monotonic(), value)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def drop(self, keys: list[int]) -> None:
        with self._lock:
            for key in keys:
                self._items.pop(key, None)


def serving_repo_config(
    settings: PersonaSettings, kind: Literal["redis", "sqlite"], timeout_s: float
) -> Any:
    """Feast's config for a serving replica: the store kind is fixed at deploy time (no ping at
    start, so a replica can start while Redis is down) and Redis calls time out."""
    from persona.features.store import OnlineStoreChoice, repo_config

    location = settings.redis_url if kind == "redis" else str(settings.sqlite_online_path)
    config = repo_config(settings, OnlineStoreChoice(kind, "fixed at deploy", location))
    if kind == "redis":
        config.online_store.connection_string += (
            f",socket_timeout={timeout_s},socket_connect_timeout={timeout_s}"
        )
    return config


class OnlineFeatureReader:
    """Reads ``customer_context_v1`` for one customer. Store errors never escape: the caller gets
    an unknown customer (or the stale cached one) and the reason. On Redis the service is read
    straight from Feast's layout (:class:`~persona.features.online_reader.FastOnlineReader`:
    one pipelined round trip, the SDK's values); on the embedded SQLite store through the SDK."""

    def __init__(
        self,
        settings: PersonaSettings,
        store_kind: Literal["redis", "sqlite"],
        cache_ttl_s: float = 5.0,
        cache_entries: int = 100_000,
        timeout_s: float = 0.05,
    ):
        from feast import FeatureStore

        self.store = FeatureStore(config=serving_repo_config(settings, store_kind, timeout_s))
        self.service = self.store.get_feature_service(CUSTOMER_SERVICE)
        self.fast: FastOnlineReader | None = None
        if store_kind == "redis":
            from persona.features.online_reader import FastOnlineReader

            self.fast = FastOnlineReader(self.store, CUSTOMER_SERVICE, timeout_s=timeout_s)
        self.cache = TTLCache(cache_ttl_s, cache_entries)
        self.store_kind = store_kind
        self.redis_url = settings.redis_url
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None

    def fetch(self, customer_id: int) -> FeatureFetch:
        started = time.perf_counter()
        cached = self.cache.get(customer_id)
        if cached is not None:
            return FeatureFetch(cached, True, None, (time.perf_counter() - started) * 1e3)
        try:
            if self.fast is not None:
                vector = self.fast.read([customer_id])
            else:
                vector = self.store.get_online_features(
                    features=self.service, entity_rows=[{"customer_id": customer_id}]
                ).to_dict()
        except (redis.RedisError, OSError) as error:
            stale = self.cache.get(customer_id, allow_stale=True)
            reason = f"features_unavailable: {type(error).__name__}"
            customer = stale if stale is not None else CustomerView.unknown(customer_id)
            return FeatureFetch(customer, False, reason, (time.perf_counter() - started) * 1e3)
        customer = CustomerView.from_online(
            customer_id, {name: values[0] for name, values in vector.items()}
        )
        self.cache.put(customer_id, customer)
        return FeatureFetch(customer, False, None, (time.perf_counter() - started) * 1e3)

    def start_invalidation_listener(self) -> None:
        """Drop cached customers the events stage announces (Redis deployments only)."""
        if self.store_kind != "redis" or self._listener is not None:
            return
        self._listener = threading.Thread(
            target=self._listen, name="feature-cache-invalidation", daemon=True
        )
        self._listener.start()

    def stop(self) -> None:
        self._stop.set()
        if self.fast is not None:
            self.fast.close()

    def _listen(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=1.0)
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(INVALIDATION_CHANNEL)
                backoff = 0.1
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message and message.get("type") == "message":
                        ids = [int(x) for x in message["data"].split(b",") if x]
                        self.cache.drop(ids)
            except (redis.RedisError, OSError, ValueError) as error:
                # Redis down: entries still expire by TTL; retry the subscription with backoff.
                log.debug("invalidation listener: %s", error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                client.close()
