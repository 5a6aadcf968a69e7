"""A key's partition, and a fund's home partition, are the ones Java and aiokafka producers pick.

The worker forwards a fill to ``home_partition(fund)`` of the re-partition topic and expects producers
that key by ``margin_currency`` to have put it there already; both only hold if it is exactly Kafka's
default partitioner: ``toPositive(murmur2(keyBytes)) % numPartitions``.
"""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner, murmur2
from hypothesis import given
from hypothesis import strategies as st

from processor.stream.partitioning import home_partition, key_partition
from tests.conftest import scaled
from tests.strategies import CURRENCIES, identifiers

# --- a reference: org.apache.kafka.common.utils.Utils.murmur2, line by line, in Java int arithmetic ------


def _int32(value: int) -> int:
    """Wrap to a Java ``int`` (32-bit two's complement)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _unsigned_shift(value: int, bits: int) -> int:
    """Java's ``value >>> bits`` on an ``int``."""
    return (value & 0xFFFFFFFF) >> bits


def java_murmur2(data: bytes) -> int:
    """``Utils.murmur2(byte[])`` from the Kafka clients, returning a signed Java int."""
    length = len(data)
    seed = _int32(0x9747B28C)
    m = 0x5BD1E995
    r = 24
    h = _int32(seed ^ length)
    for i in range(length // 4):
        i4 = i * 4
        k = _int32(data[i4] + (data[i4 + 1] << 8) + (data[i4 + 2] << 16) + (data[i4 + 3] << 24))
        k = _int32(k * m)
        k = _int32(k ^ _unsigned_shift(k, r))
        k = _int32(k * m)
        h = _int32(h * m)
        h = _int32(h ^ k)
    tail = length & ~3
    remainder = length % 4  # the Java switch falls through from case 3 to case 1
    if remainder >= 3:
        h = _int32(h ^ (data[tail + 2] << 16))
    if remainder >= 2:
        h = _int32(h ^ (data[tail + 1] << 8))
    if remainder >= 1:
        h = _int32(h ^ data[tail])
        h = _int32(h * m)
    h = _int32(h ^ _unsigned_shift(h, 13))
    h = _int32(h * m)
    return _int32(h ^ _unsigned_shift(h, 15))


def java_partition(key: bytes, partitions: int) -> int:
    """``Utils.toPositive(Utils.murmur2(keyBytes)) % numPartitions`` (BuiltInPartitioner.partitionForKey)."""
    return (java_murmur2(key) & 0x7FFFFFFF) % partitions


def aiokafka_partition(key: bytes, partitions: int) -> int:
    every = range(partitions)  # a range, not a list: partition counts up to 2**31 - 1 are drawn
    return DefaultPartitioner()(key, every, every)


# --- known vectors, printed by the Java client --------------------------------------------------------------

#: ``Utils.murmur2(key.getBytes())`` as printed by a Java program
#: (kafkajs, src/producer/partitioners/defaultJava/Test.java).
JAVA_MURMUR2 = {
    "0": 971027396,
    "1": -1993445489,
    "128": -326012175,
    "2187": -1508407203,
    "16384": -325739742,
    "78125": -1654490814,
    "279936": 1462227128,
    "823543": -2014198330,
    "10000000": -1830336757,
    "170859375": -1658323481,
    "100:48069": 1009543857,
}

#: The Java producer's partition for a key over 1000 partitions (kafka-python's compatibility test).
JAVA_PARTITIONS_OF_1000 = {b"": 681, b"a": 524, b"ab": 434, b"abc": 107, b"123456789": 566, b"\x00 ": 742}

#: Home partitions of real fund names, worked out with the reference above and pinned here.
FUND_HOMES = {
    ("USDT", 3): 2,
    ("USDT", 12): 2,
    ("USDT", 100): 62,
    ("BTC", 3): 1,
    ("BTC", 12): 10,
    ("BTC", 100): 42,
    ("ETH", 7): 5,
    ("USDC", 64): 12,
}


@pytest.mark.parametrize(("key", "expected"), sorted(JAVA_MURMUR2.items()))
def test_reference_murmur2_matches_the_java_client(key: str, expected: int) -> None:
    assert java_murmur2(key.encode()) == expected
    assert murmur2(key.encode()) & 0xFFFFFFFF == expected & 0xFFFFFFFF  # aiokafka's is unsigned


@pytest.mark.parametrize(("key", "expected"), sorted(JAVA_PARTITIONS_OF_1000.items()))
def test_home_partition_matches_the_java_producer(key: bytes, expected: int) -> None:
    assert java_partition(key, 1000) == expected
    assert aiokafka_partition(key, 1000) == expected
    assert home_partition(key.decode(), 1000) == expected


@pytest.mark.parametrize(("fund", "partitions"), sorted(FUND_HOMES))
def test_home_partition_of_real_funds(fund: str, partitions: int) -> None:
    assert home_partition(fund, partitions) == FUND_HOMES[fund, partitions]
    assert java_partition(fund.encode(), partitions) == FUND_HOMES[fund, partitions]
    assert home_partition(fund, partitions) == aiokafka_partition(fund.encode(), partitions)


def test_one_partition_is_always_partition_zero() -> None:
    assert {home_partition(fund, 1) for fund in CURRENCIES} == {0}


@given(
    fund=st.one_of(st.from_regex(r"[A-Z0-9]{2,16}", fullmatch=True), identifiers),
    partitions=st.integers(1, 1024),
)
def test_home_partition_is_the_default_partitioner(fund: str, partitions: int) -> None:
    key = fund.encode()
    expected = java_partition(key, partitions)
    assert home_partition(fund, partitions) == expected
    assert aiokafka_partition(key, partitions) == expected
    assert 0 <= expected < partitions


@given(key=st.binary(max_size=64), partitions=st.one_of(st.integers(1, 1024), st.just(2**31 - 1)))
def test_key_partition_is_the_default_partitioner_for_any_bytes(key: bytes, partitions: int) -> None:
    expected = java_partition(key, partitions)
    assert key_partition(key, partitions) == expected
    assert aiokafka_partition(key, partitions) == expected


@pytest.mark.parametrize(("key", "expected"), sorted(JAVA_PARTITIONS_OF_1000.items()))
def test_key_partition_matches_the_java_producer(key: bytes, expected: int) -> None:
    assert key_partition(key, 1000) == expected


def test_many_random_keys_and_partition_counts() -> None:
    """A broad, seeded sweep beyond hypothesis' budget: every key length modulo 4, many counts."""
    generator = random.Random(20240531)
    for _ in range(scaled(4000)):
        fund = "".join(generator.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", k=generator.randint(2, 16)))
        partitions = generator.randint(1, 500)
        assert home_partition(fund, partitions) == java_partition(fund.encode(), partitions), fund
