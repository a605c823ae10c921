"""Feast 0.67's Redis online-store layout, spelled out so it can be written and read in bulk.

Feast owns the layout; this module restates it byte for byte (``feast/infra/online_stores/
redis.py`` and ``helpers.py``) so the bulk materialiser and the fast reader write and read
exactly what ``FeatureStore.materialize`` and ``get_online_features`` do:

- one Redis hash per entity: key = ``serialize_entity_key(entity, version 3)`` + project name;
- one hash field per feature: the 4 little-endian bytes of ``mmh3("<view>:<feature>")``, the
  value a serialised ``feast.types.Value`` (a null is the empty message, ``b""``);
- one field ``_ts:<view>`` per view: the serialised ``google.protobuf.Timestamp`` of the row;
- ``EXPIRE key key_ttl_seconds`` after each write when the store config sets a key TTL.

Values are encoded a column at a time with numpy and Arrow compute (protobuf wire format by
hand), because one ``Value`` object per cell costs a microsecond and a million customers have
eighty million cells. ``tests/features/test_fast_online.py`` checks every encoder against
``Value.SerializeToString`` and the whole layout against Feast's own writes and reads.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast import FeatureView, RepoConfig
from feast.infra.online_stores.helpers import _mmh3, compute_versioned_name
from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type
from feast.value_type import ValueType

#: The only entity-key serialisation this module writes; Feast 0.67 removed the older ones.
ENTITY_KEY_SERIALIZATION_VERSION: Final = 3

# Protobuf tags (field number << 3 | wire type) of the ``feast.types.Value`` oneof members
# and of ``google.protobuf.Timestamp`` (seconds = 1, nanos = 2).
_TAG: Final[dict[ValueType, int]] = {
    ValueType.STRING: 0x12,  # string_val = 2, length-delimited
    ValueType.INT64: 0x20,  # int64_val = 4, varint
    ValueType.DOUBLE: 0x29,  # double_val = 5, fixed64
    ValueType.BOOL: 0x38,  # bool_val = 7, varint
    ValueType.STRING_LIST: 0x62,  # string_list_val = 12, length-delimited StringList
    ValueType.INT64_LIST: 0x72,  # int64_list_val = 14, length-delimited Int64List
}
_LIST_ITEM_TAG: Final = 0x0A  # StringList.val / Int64List.val = 1, length-delimited (packed)
_TS_SECONDS_TAG: Final = 0x08
_TS_NANOS_TAG: Final = 0x10

#: Value types the bulk encoders support: the six of ``persona.features.catalog``.
SUPPORTED_VALUE_TYPES: Final = frozenset(_TAG)


class UnsupportedLayout(ValueError):
    """The repo uses a Feast feature this module does not restate (the stock path still works)."""


@dataclass(frozen=True)
class RedisLayout:
    """Where Feast puts a project's rows in Redis, derived from its ``RepoConfig``."""

    project: str
    key_ttl_seconds: int | None
    versioned_view_names: bool

    @classmethod
    def from_repo_config(cls, config: RepoConfig) -> RedisLayout:
        online = config.online_store
        if not isinstance(online, RedisOnlineStoreConfig):
            raise UnsupportedLayout(f"online store is {online.type!r}, not redis")
        if online.redis_type != RedisType.redis:
            raise UnsupportedLayout(f"redis_type {online.redis_type.value} (only standalone)")
        if config.entity_key_serialization_version != ENTITY_KEY_SERIALIZATION_VERSION:
            raise UnsupportedLayout(
                "entity_key_serialization_version "
                f"{config.entity_key_serialization_version} (only 3)"
            )
        return cls(
            project=config.project,
            key_ttl_seconds=online.key_ttl_seconds or None,
            versioned_view_names=bool(config.registry.enable_online_feature_view_versioning),
        )

    def view_name(self, view: FeatureView) -> str:
        """The name Feast uses for ``view`` in hash fields (``_v<N>`` when versioning is on)."""
        return str(compute_versioned_name(view, self.versioned_view_names))

    def feature_field(self, view_name: str, feature: str) -> bytes:
        """The hash field of one feature: mmh3 of ``"<view>:<feature>"``, 4 bytes."""
        return bytes(_mmh3(f"{view_name}:{feature}"))

    def timestamp_field(self, view_name: str) -> bytes:
        return f"_ts:{view_name}".encode()

    def entity_key_prefix(self, join_key: str) -> bytes:
        """Serialised entity key up to the value: 1 key, its name, as Feast's v3 writes it."""
        name = join_key.encode()
        return struct.pack("<III", 1, ValueType.STRING.value, len(name)) + name

    def project_suffix(self) -> bytes:
        return self.project.encode()

    def key_encoder(self, join_key: str, value_type: ValueType) -> Callable[[Any], bytes]:
        """A function from one entity value to its Redis key (the reader's hot path)."""
        prefix, suffix = self.entity_key_prefix(join_key), self.project_suffix()
        if value_type == ValueType.INT64:
            head = prefix + struct.pack("<II", ValueType.INT64.value, 8)
            pack = struct.Struct("<q").pack
            return lambda v: head + pack(int(v)) + suffix
        if value_type == ValueType.STRING:
            head = prefix + struct.pack("<I", ValueType.STRING.value)
            return lambda v: head + _with_u32_length(str(v).encode()) + suffix
        raise UnsupportedLayout(f"entity value type {value_type.name}")

    def redis_keys(self, join_key: str, value_type: ValueType, values: pa.Array) -> pa.Array:
        """Vectorised :meth:`key_encoder`: one binary key per (non-null) entity value."""
        prefix, suffix = self.entity_key_prefix(join_key), self.project_suffix()
        if value_type == ValueType.INT64:
            ints = np.asarray(values.cast(pa.int64()).to_numpy(zero_copy_only=False), np.int64)
            head = np.frombuffer(prefix + struct.pack("<II", ValueType.INT64.value, 8), np.uint8)
            tail = np.frombuffer(suffix, np.uint8)
            rows = np.empty((len(ints), len(head) + 8 + len(tail)), np.uint8)
            rows[:, : len(head)] = head
            rows[:, len(head) : len(head) + 8] = ints.astype("<i8").view(np.uint8).reshape(-1, 8)
            rows[:, len(head) + 8 :] = tail
            return _binary_from_rows(rows)
        if value_type == ValueType.STRING:
            raw = values.cast(pa.binary())
            lengths = pc.binary_length(raw).to_numpy(zero_copy_only=False).astype("<u4")
            length_bytes = _binary_from_rows(lengths.view(np.uint8).reshape(-1, 4))
            type_tag = prefix + struct.pack("<I", ValueType.STRING.value)
            return pc.binary_join_element_wise(type_tag, length_bytes, raw, suffix, b"")
        raise UnsupportedLayout(f"entity value type {value_type.name}")


def _with_u32_length(raw: bytes) -> bytes:
    return struct.pack("<I", len(raw)) + raw


# --- Encoders: Arrow column → serialised ``feast.types.Value`` per row -----------------------


def _binary_array(offsets: np.ndarray, data: np.ndarray, n: int) -> pa.Array:
    if offsets[-1] < 2**31:
        return pa.BinaryArray.from_buffers(
            pa.binary(),
            n,
            [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)],
        )
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _binary_from_rows(rows: np.ndarray) -> pa.Array:
    """A binary array whose i-th value is row i of a 2-D uint8 matrix (fixed width)."""
    n, width = rows.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
    return _binary_array(offsets, np.ascontiguousarray(rows).reshape(-1), n)


def _binary_from_parts(data: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """A binary array from concatenated bytes and the length of each value."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return _binary_array(offsets, np.ascontiguousarray(data), len(lengths))


def _select_rows(rows: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """The first ``lengths[i]`` bytes of each row of ``rows``."""
    if (lengths == rows.shape[1]).all():
        return _binary_from_rows(rows)
    return _binary_from_parts(rows[np.arange(rows.shape[1]) < lengths[:, None]], lengths)


#: 2**7, 2**14, …: a value at or above the k-th threshold needs more than k varint bytes.
_VARINT_THRESHOLDS: Final = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)


def varints(values: np.ndarray, prefix: bytes = b"", keep: np.ndarray | None = None) -> pa.Array:
    """``prefix`` + protobuf varint of each int64 (two's complement, as proto does for int64).

    Rows where ``keep`` is False become ``b""`` (Feast's null value).
    """
    u = np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)
    n, p = len(u), len(prefix)
    width = max(1, (int(u.max()).bit_length() + 6) // 7) if n else 1
    rows = np.empty((n, p + width), dtype=np.uint8)
    if p:
        rows[:, :p] = np.frombuffer(prefix, np.uint8)
    if width == 1:
        rows[:, p] = u
        lengths = np.full(n, p + 1, dtype=np.int64)
    else:
        nbytes = 1 + np.searchsorted(_VARINT_THRESHOLDS[: width - 1], u, side="right")
        rest = u.copy()
        for k in range(width):
            group = (rest & np.uint64(0x7F)).astype(np.uint8)
            if k < width - 1:
                group |= (nbytes > k + 1).astype(np.uint8) << 7
            rows[:, p + k] = group
            rest >>= np.uint64(7)
        lengths = p + nbytes
    if keep is not None:
        lengths = np.where(keep, lengths, 0)
    return _select_rows(rows, lengths)


def _length_delimited(tag: int, payload: pa.Array) -> pa.Array:
    """``tag`` + varint(len(payload)) + payload, per row (nulls stay null)."""
    lengths = pc.binary_length(payload).fill_null(0).to_numpy(zero_copy_only=False)
    head = varints(lengths.astype(np.int64), bytes([tag]))
    return pc.binary_join_element_wise(head, payload, b"")


def _null_to_empty(encoded: pa.Array) -> pa.Array:
    return encoded.fill_null(b"") if encoded.null_count else encoded


def _valid_mask(array: pa.Array) -> np.ndarray:
    if array.null_count == 0:
        return np.ones(len(array), dtype=bool)
    return np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _encode_int64(array: pa.Array) -> pa.Array:
    if not pa.types.is_integer(array.type):
        raise UnsupportedLayout(f"Int64 feature stored as {array.type}")
    keep = _valid_mask(array)
    ints = array.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    return varints(ints, bytes([_TAG[ValueType.INT64]]), keep)


def _encode_double(array: pa.Array) -> pa.Array:
    if not pa.types.is_floating(array.type):
        raise UnsupportedLayout(f"Float64 feature stored as {array.type}")
    floats = np.asarray(array.cast(pa.float64()).fill_null(np.nan).to_numpy(), dtype="<f8")
    # Feast writes a NaN as null (``pd.isnull``): the empty message.
    keep = ~np.isnan(floats)
    rows = np.empty((len(floats), 9), dtype=np.uint8)
    rows[:, 0] = _TAG[ValueType.DOUBLE]
    rows[:, 1:] = floats.view(np.uint8).reshape(-1, 8)
    return _select_rows(rows, np.where(keep, 9, 0))


def _encode_bool(array: pa.Array) -> pa.Array:
    if not pa.types.is_boolean(array.type):
        raise UnsupportedLayout(f"Bool feature stored as {array.type}")
    keep = _valid_mask(array)
    bits = np.asarray(array.fill_null(False).to_numpy(zero_copy_only=False), dtype=np.uint8)
    rows = np.empty((len(bits), 2), dtype=np.uint8)
    rows[:, 0] = _TAG[ValueType.BOOL]
    rows[:, 1] = bits
    return _select_rows(rows, np.where(keep, 2, 0))


def _encode_string(array: pa.Array) -> pa.Array:
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        raise UnsupportedLayout(f"String feature stored as {array.type}")
    return _null_to_empty(_length_delimited(_TAG[ValueType.STRING], array.cast(pa.binary())))


def _list_parts(array: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Flattened items, the item count of each list (0 when null) and the list validity."""
    if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
        raise UnsupportedLayout(f"list feature stored as {array.type}")
    counts = pc.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False)
    return pc.list_flatten(array), counts.astype(np.int64), _valid_mask(array)


def _join_per_list(items: pa.Array, counts: np.ndarray, valid: np.ndarray) -> pa.Array:
    """Concatenate the encoded items of each list (``b""`` for an empty list, null for null)."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    mask = None if valid.all() else pa.array(~valid)
    lists = pa.ListArray.from_arrays(pa.array(offsets), items, mask=mask)
    return pc.binary_join(lists, b"")


def _encode_string_list(array: pa.Array) -> pa.Array:
    items, counts, valid = _list_parts(array)
    if not (pa.types.is_string(items.type) or pa.types.is_large_string(items.type)):
        raise UnsupportedLayout(f"Array(String) feature stored as {array.type}")
    # Feast replaces a null item of a string list with "".
    encoded_items = _length_delimited(_LIST_ITEM_TAG, items.cast(pa.binary()).fill_null(b""))
    payload = _join_per_list(encoded_items, counts, valid)
    return _null_to_empty(_length_delimited(_TAG[ValueType.STRING_LIST], payload))


def _encode_int64_list(array: pa.Array) -> pa.Array:
    items, counts, valid = _list_parts(array)
    if not pa.types.is_integer(items.type):
        raise UnsupportedLayout(f"Array(Int64) feature stored as {array.type}")
    # Feast replaces a null item of an int list with 0; proto3 packs repeated int64.
    packed = _join_per_list(
        varints(items.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)),
        counts,
        valid,
    )
    # An empty Int64List serialises to nothing; a non-empty one to its packed field.
    lengths = pc.binary_length(packed).fill_null(0).to_numpy(zero_copy_only=False)
    inner = _length_delimited(_LIST_ITEM_TAG, packed)
    inner = pc.if_else(pa.array(lengths > 0), inner, pa.scalar(b"", pa.binary()))
    inner = pc.if_else(pa.array(valid), inner, pa.scalar(None, pa.binary()))
    return _null_to_empty(_length_delimited(_TAG[ValueType.INT64_LIST], inner))


_ENCODERS: Final[dict[ValueType, Callable[[pa.Array], pa.Array]]] = {
    ValueType.INT64: _encode_int64,
    ValueType.DOUBLE: _encode_double,
    ValueType.BOOL: _encode_bool,
    ValueType.STRING: _encode_string,
    ValueType.STRING_LIST: _encode_string_list,
    ValueType.INT64_LIST: _encode_int64_list,
}


def encode_values(array: pa.Array | pa.ChunkedArray, value_type: ValueType) -> pa.Array:
    """Serialised ``feast.types.Value`` of each row of ``array``, as Feast's materialisation
    writes them (null, and NaN for doubles, → ``b""``; null list items → ``""`` / ``0``)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    encoder = _ENCODERS.get(value_type)
    if encoder is None:
        raise UnsupportedLayout(f"value type {value_type.name}")
    return encoder(array)


def encode_timestamps(array: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """Serialised ``google.protobuf.Timestamp`` per row and its total nanoseconds.

    Feast stores ``Timestamp.FromDatetime`` of the row's event time: whole seconds (floor) and
    the microseconds as nanos; zero fields are omitted, as protobuf does.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if array.null_count:
        raise UnsupportedLayout("null event timestamps")
    micros = np.asarray(array.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy())
    seconds, micro_rest = np.divmod(micros, 1_000_000)
    nanos = micro_rest * 1_000
    sec_part = varints(seconds, bytes([_TS_SECONDS_TAG]), seconds != 0)
    nano_part = varints(nanos, bytes([_TS_NANOS_TAG]), nanos != 0)
    return pc.binary_join_element_wise(sec_part, nano_part, b""), seconds * 1_000_000_000 + nanos


def decode_timestamp_nanos(raw: bytes | None) -> int:
    """Total nanoseconds of a stored ``_ts:<view>`` value (0 when absent, as Feast reads it)."""
    if not raw:
        return 0
    seconds = nanos = 0
    i = 0
    while i < len(raw):
        tag = raw[i]
        i += 1
        value, shift = 0, 0
        while True:
            byte = raw[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if value >= 1 << 63:
            value -= 1 << 64
        if tag == _TS_SECONDS_TAG:
            seconds = value
        elif tag == _TS_NANOS_TAG:
            nanos = value
    return seconds * 1_000_000_000 + nanos


# --- Decoders: stored bytes → the Python value ``OnlineResponse.to_dict`` gives --------------

_MEMO_MAX_ENTRIES: Final = 200_000
#: Longer values are rarely repeated (sequences, amounts): decoding them is cheaper than keeping them.
_MEMO_MAX_VALUE_BYTES: Final = 256
_unpack_double = struct.Struct("<d").unpack_from
_DOUBLE_TAG: Final = _TAG[ValueType.DOUBLE]
#: Oneof members whose Python value is ``list(member.val)`` in Feast's ``to_dict``.
_PLAIN_LIST_KINDS: Final = frozenset({"string_list_val", "int64_list_val"})


#: Value types whose Python value depends on the declared type, not only on the bytes.
_TYPE_HINTED: Final = frozenset(
    {
        ValueType.UUID,
        ValueType.TIME_UUID,
        ValueType.UUID_LIST,
        ValueType.TIME_UUID_LIST,
        ValueType.UUID_SET,
        ValueType.TIME_UUID_SET,
    }
)


def _frozen(value: Any) -> Any:
    """A value safe to share from the memo: lists as tuples, sets as frozensets."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, set):
        return frozenset(value)
    return value


def _thawed(column: list[Any]) -> list[Any]:
    """Fresh lists and sets for a column that may hold memoised tuples and frozensets."""
    return [list(v) if type(v) is tuple else set(v) if type(v) is frozenset else v for v in column]


class RowDecoder:
    """Decodes HMGET replies (one row of stored ``Value`` bytes per entity) to Python columns,
    as Feast's ``to_dict`` returns them.

    Most cells repeat (small counts, categories, flags, common product sets), so one memo maps
    stored bytes to their decoded value for every column: a row of 78 cells costs one C-level
    dictionary pass. Bytes not seen before are decoded directly (doubles, string and int
    lists) or through Feast's own ``feast_value_type_to_python_type``. Lists and sets are kept
    frozen in the memo and copied out, so callers may mutate what they get.
    """

    def __init__(self, value_types: Sequence[ValueType]):
        self.value_types = tuple(value_types)
        self.width = len(self.value_types)
        self._containers = [
            j
            for j, vt in enumerate(self.value_types)
            if vt.name.endswith(("_LIST", "_SET")) and vt not in _TYPE_HINTED
        ]
        self._hinted = [j for j, vt in enumerate(self.value_types) if vt in _TYPE_HINTED]
        self._memo: dict[bytes | None, Any] = {}
        self._reset()

    def _reset(self) -> None:
        self._memo.clear()
        self._memo[None] = None
        self._memo[b""] = None

    def _decode(self, raw: bytes, value_type: ValueType) -> Any:
        """Decode bytes not in the memo (and memoise them when short)."""
        if raw[0] == _DOUBLE_TAG and len(raw) == 9:
            return _unpack_double(raw, 1)[0]  # amounts: rarely repeated, not memoised
        proto = ValueProto.FromString(raw)
        kind = proto.WhichOneof("val")
        if kind in _PLAIN_LIST_KINDS:
            value: Any = list(getattr(proto, kind).val)
        else:
            value = feast_value_type_to_python_type(proto, value_type)
        if len(raw) <= _MEMO_MAX_VALUE_BYTES:
            if len(self._memo) >= _MEMO_MAX_ENTRIES:
                self._reset()
            self._memo[raw] = _frozen(value)
        return value

    def decode(self, rows: Sequence[Sequence[bytes | None]]) -> list[list[Any]]:
        """Columns (``width`` lists of ``len(rows)`` values) from rows of stored bytes."""
        raws = list(chain.from_iterable(rows))
        miss, width, decode = _MISSING, self.width, self._decode
        flat = list(map(self._memo.get, raws, repeat(miss)))
        columns = [flat[j::width] for j in range(width)]
        if miss in flat:
            for j, (column, value_type) in enumerate(zip(columns, self.value_types, strict=True)):
                if miss in column:
                    columns[j] = [
                        decode(raw, value_type) if value is miss else value  # type: ignore[arg-type]
                        for value, raw in zip(column, raws[j::width], strict=True)
                    ]
        for j in self._containers:
            columns[j] = _thawed(columns[j])
        for j in self._hinted:
            columns[j] = [
                None
                if not raw
                else feast_value_type_to_python_type(
                    ValueProto.FromString(raw), self.value_types[j]
                )
                for raw in raws[j::width]
            ]
        return columns


_MISSING: Final = object()
