"""Deterministic int64 customer ids for sources whose user keys are not positive integers."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pyarrow as pa

from persona.loaders.errors import LoaderError

_INT63_MASK = (1 << 63) - 1


def stable_customer_id(external_id: str) -> int:
    """A customer id in [1, 2**63 - 1] from the first 8 bytes of BLAKE2b(external_id).

    A hash (not a rank in a sorted list) so the same external id gets the same customer id in
    every file and every load, whatever else the file contains.
    """
    digest = hashlib.blake2b(external_id.encode("utf-8"), digest_size=8).digest()
    return (int.from_bytes(digest, "big") & _INT63_MASK) or 1


def id_map_table(external_ids: Sequence[str]) -> pa.Table:
    """``external_id -> customer_id`` for distinct ids, sorted by external id.

    Raises :class:`LoaderError` on a hash collision (two external ids, one customer id), which
    would otherwise merge two customers silently.
    """
    distinct = sorted(set(external_ids))
    ids = [stable_customer_id(value) for value in distinct]
    if len(set(ids)) != len(ids):
        seen: dict[int, str] = {}
        for value, cid in zip(distinct, ids, strict=True):
            if cid in seen:
                raise LoaderError(
                    f"external ids {seen[cid]!r} and {value!r} hash to the same customer_id {cid}"
                )
            seen[cid] = value
    return pa.table(
        {"external_id": pa.array(distinct, pa.string()), "customer_id": pa.array(ids, pa.int64())}
    )
