"""``Outbox``: records grouped per owning partition number, then per topic partition, in order."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from processor.stream.outbox import Outbox
from processor.stream.partitioning import key_partition
from tests.unit.stream.fakes import FakeTransactions


def outbox() -> Outbox:
    return Outbox(FakeTransactions({"deltas": 4, "dlq": 1}))  # type: ignore[arg-type]


def records(slot: Any) -> list[tuple[bytes | None, bytes | None]]:
    return [(key, value) for key, value, _ in slot]


def test_keyed_records_go_to_the_default_partitioner_partition() -> None:
    box = outbox()
    box.add(2, "deltas", b"USDT", b"d1")
    box.add(2, "deltas", b"BTC", b"d2")
    work = box.take()
    placed = {slot: records(recorded) for slot, recorded in work[2].records.items()}
    assert placed[("deltas", key_partition(b"USDT", 4))][0] == (b"USDT", b"d1")
    assert placed[("deltas", key_partition(b"BTC", 4))][-1] == (b"BTC", b"d2")


def test_unkeyed_records_go_to_partition_zero_unless_told() -> None:
    box = outbox()
    box.add(0, "dlq", None, b"letter")
    box.add(1, "changelog", b"USDT", b"state", 3, [("h", b"v")])
    work = box.take()
    assert {slot: records(r) for slot, r in work[0].records.items()} == {("dlq", 0): [(None, b"letter")]}
    assert work[1].records == {("changelog", 3): [(b"USDT", b"state", [("h", b"v")])]}


def test_owners_are_kept_apart() -> None:
    box = outbox()
    box.add(0, "dlq", None, b"a")
    box.add(1, "dlq", None, b"b")
    work = box.take()
    assert sorted(work) == [0, 1]
    assert records(work[0].records["dlq", 0]) == [(None, b"a")]
    assert records(work[1].records["dlq", 0]) == [(None, b"b")]


def test_records_of_a_partition_keep_their_order() -> None:
    box = outbox()
    for n in range(5):
        box.add(0, "dlq", None, b"%d" % n)
    assert [value for _, value in records(box.take()[0].records["dlq", 0])] == [b"0", b"1", b"2", b"3", b"4"]


def test_take_empties_the_outbox() -> None:
    box = outbox()
    box.add(0, "dlq", None, b"a")
    assert box.take()
    assert box.take() == {}
    box.work(3).offsets[TopicPartition("fills", 3)] = 10
    work = box.take()
    assert not work[3].empty and work[3].records == {}
