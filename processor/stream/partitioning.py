"""Which partition a key lives on: Kafka's default partitioner (murmur2), as Java and aiokafka apply it."""

from __future__ import annotations

from aiokafka.partitioner import murmur2

_MEMO: dict[tuple[bytes, int], int] = {}
_MEMO_KEYS = 100_000  # funds and symbols are few and hot; arbitrary (dead-letter) keys are not kept
_MEMO_KEY_BYTES = 64


def key_partition(key: bytes, partitions: int) -> int:
    """The partition a default-partitioned producer picks for ``key``: murmur2, made positive, modulo.

    murmur2 runs in Python (~3 us); the answer for a short key is remembered, since the worker asks
    it for every fill's fund and every delta's key.
    """
    remembered = _MEMO.get((key, partitions))
    if remembered is not None:
        return remembered
    partition = (murmur2(key) & 0x7FFFFFFF) % partitions
    if len(key) <= _MEMO_KEY_BYTES and len(_MEMO) < _MEMO_KEYS:
        _MEMO[key, partitions] = partition
    return partition


def home_partition(fund: str, partitions: int) -> int:
    """The partition a fund lives on: where its fills land when producers key them by currency."""
    return key_partition(fund.encode(), partitions)
