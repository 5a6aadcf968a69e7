"""``Outbox``: records grouped per owning partition number, then per topic partition, in order."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from processor.stream.outbox import Outbox
from processor.stream.partitioning import key_partition
from tests.unit.stream.fakes import FakeTransactions


def outbox(capacity: int = 1000) -> Outbox:
    return Outbox(FakeTransactions({"deltas": 4, "dlq": 1}, capacity))  # type: ignore[arg-type]


def records(batch: Any) -> list[tuple[bytes | None, bytes | None]]:
    return [(key, value) for key, value, _ in batch.records]


def test_keyed_records_go_to_the_default_partitioner_partition() -> None:
    box = outbox()
    box.add(2, "deltas", b"USDT", b"d1")
    box.add(2, "deltas", b"BTC", b"d2")
    work = box.take()
    placed = {(topic, partition): records(batch) for topic, partition, batch in work[2].batches}
    assert placed[("deltas", key_partition(b"USDT", 4))][0] == (b"USDT", b"d1")
    assert placed[("deltas", key_partition(b"BTC", 4))][-1] == (b"BTC", b"d2")


def test_unkeyed_records_go_to_partition_zero_unless_told() -> None:
    box = outbox()
    box.add(0, "dlq", None, b"letter")
    box.add(1, "changelog", b"USDT", b"state", 3, [("h", b"v")])
    work = box.take()
    assert [(t, p, records(b)) for t, p, b in work[0].batches] == [("dlq", 0, [(None, b"letter")])]
    ((topic, partition, batch),) = work[1].batches
    assert (topic, partition, batch.records) == ("changelog", 3, [(b"USDT", b"state", [("h", b"v")])])


def test_owners_are_kept_apart() -> None:
    box = outbox()
    box.add(0, "dlq", None, b"a")
    box.add(1, "dlq", None, b"b")
    work = box.take()
    assert sorted(work) == [0, 1]
    assert records(work[0].batches[0][2]) == [(None, b"a")]
    assert records(work[1].batches[0][2]) == [(None, b"b")]


def test_a_full_batch_is_sent_before_the_next_one_of_its_partition() -> None:
    box = outbox(capacity=2)
    for n in range(5):
        box.add(0, "dlq", None, b"%d" % n)
    batches = box.take()[0].batches
    assert [(t, p) for t, p, _ in batches] == [("dlq", 0)] * 3
    assert [value for _, _, batch in batches for _, value in records(batch)] == [b"0", b"1", b"2", b"3", b"4"]


def test_take_empties_the_outbox() -> None:
    box = outbox()
    box.add(0, "dlq", None, b"a")
    assert box.take()
    assert box.take() == {}
    box.work(3).offsets[TopicPartition("fills", 3)] = 10
    work = box.take()
    assert not work[3].empty and work[3].batches == []
