"""Which partition a key lives on: Kafka's default partitioner (murmur2), as Java and aiokafka apply it."""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def key_partition(key: bytes, partitions: int) -> int:
    """The partition a default-partitioned producer picks for ``key``: murmur2, made positive, modulo."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def home_partition(fund: str, partitions: int) -> int:
    """The partition a fund lives on: where its fills land when producers key them by currency."""
    return key_partition(fund.encode(), partitions)
