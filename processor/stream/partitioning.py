"""Which partition a fund lives on: Kafka's default partitioner applied to the fund name."""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def home_partition(fund: str, partitions: int) -> int:
    """The partition Java and aiokafka producers pick for key ``fund``: murmur2, positive, modulo."""
    return (murmur2(fund.encode()) & 0x7FFFFFFF) % partitions
