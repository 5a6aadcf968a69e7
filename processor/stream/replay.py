"""Replay a Kafka topic through the same pipeline as the worker: rebuild, audit, "the fund at time T".

Reads every partition directly (no consumer group, no commits, ``read_committed``) from the chosen start
to the end offsets captured when the replay began, so it always terminates.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from processor import codec
from processor.config import InputError, Settings
from processor.pipeline import Emitted, Pipeline
from processor.replay import OutputFiles, Progress, ReplayTotals, recording
from processor.stream.connect import wait_for_broker
from processor.stream.kafka import client_options, partition_counts


@dataclass(frozen=True)
class Start:
    """Where each partition's replay begins: the beginning, a record timestamp, or explicit offsets."""

    timestamp_ms: int | None = None
    offsets: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse_offsets(cls, text: str) -> Start:
        """``0:120,1:98`` -> partition 0 from offset 120, partition 1 from 98 (others from the start)."""
        pairs = []
        for item in filter(None, (part.strip() for part in text.split(","))):
            partition, sep, offset = item.partition(":")
            if not sep or not partition.isdigit() or not offset.isdigit():
                raise InputError(f"--from-offsets: expected PARTITION:OFFSET[,...], got {item!r}")
            pairs.append((int(partition), int(offset)))
        return cls(offsets=tuple(pairs))


Message = tuple[bytes | None, bytes | None, str, int, int, int]  # value, key, topic, partition, offset, ts


async def read_topic(
    settings: Settings, topic: str, start: Start, on_total: Callable[[int], None] | None = None
) -> AsyncIterator[Message]:
    """Yield the topic's committed records from ``start`` up to the end offsets seen at the start."""
    await wait_for_broker(settings, level=logging.INFO)
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        max_poll_records=10_000,
    )
    await consumer.start()
    try:
        count = (await partition_counts(settings, [topic])).get(topic, 0)
        numbers = list(range(count))
        if not numbers:
            raise InputError(
                f"topic {topic!r} does not exist on the broker at {settings.bootstrap_servers}, or "
                f"the credentials may not describe it (ACL); check the name (--topic, INPUT_TOPIC or "
                f"DELTAS_TOPIC)"
            )
        partitions = [TopicPartition(topic, number) for number in numbers]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        if start.timestamp_ms is not None:
            found = await consumer.offsets_for_times({tp: start.timestamp_ms for tp in partitions})
            for tp in partitions:
                position = found.get(tp)
                consumer.seek(tp, position.offset if position is not None else ends[tp])
        for number, offset in start.offsets:
            consumer.seek(TopicPartition(topic, number), offset)
        positions = {tp: await consumer.position(tp) for tp in partitions}
        if on_total is not None:
            on_total(sum(max(ends[tp] - positions[tp], 0) for tp in partitions))
        remaining = {tp for tp in partitions if positions[tp] < ends[tp]}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    yield record.value, record.key, tp.topic, tp.partition, record.offset, record.timestamp
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()


class _Publisher:
    """Publish replayed outputs to ``PREFIX + <output topic>``, keyed like the worker's."""

    def __init__(self, settings: Settings, prefix: str) -> None:
        self.settings = settings
        self.topics = {
            "deltas": prefix + settings.deltas_topic,
            "adl": prefix + settings.adl_topic,
            "dlq": prefix + settings.dlq_topic,
            "adl_states": prefix + settings.adl_states_topic,
        }
        self.producer: Any = None
        self.pending: list[Any] = []

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(
            **client_options(self.settings), enable_idempotence=True, linger_ms=10, max_batch_size=1 << 20
        )
        await self.producer.start()

    async def publish(self, emitted: Emitted, input_key: bytes | None) -> None:
        if emitted.delta is not None:
            await self._send("deltas", (emitted.fund or "").encode(), emitted.delta)
            if emitted.trigger is not None:
                await self._send("adl", (emitted.symbol or "").encode(), emitted.trigger)
            if emitted.adl_state is not None:
                await self._send("adl_states", (emitted.fund or "").encode(), emitted.adl_state)
        elif emitted.dead_letter is not None:
            await self._send("dlq", codec.dead_letter_key(input_key), emitted.dead_letter)

    async def _send(self, kind: str, key: bytes | None, value: bytes) -> None:
        self.pending.append(await self.producer.send(self.topics[kind], value=value, key=key))
        if len(self.pending) >= 10_000:
            await self.flush()

    async def flush(self) -> None:
        pending, self.pending = self.pending, []
        await asyncio.gather(*pending)

    async def stop(self) -> None:
        await self.flush()
        await self.producer.stop()


async def replay_topic(
    settings: Settings,
    pipeline: Pipeline,
    topic: str,
    start: Start,
    outputs: OutputFiles,
    until_timestamp_ms: int | None = None,
    emit_prefix: str | None = None,
    progress: Progress | None = None,
) -> ReplayTotals:
    """Fold the topic; with ``until_timestamp_ms``, only fills whose event time is at or before it
    (and bad messages whose record time is), so the state is each fund as of that moment."""
    publisher = _Publisher(settings, emit_prefix) if emit_prefix else None
    if publisher is not None:
        await publisher.start()
    try:
        with recording(pipeline, outputs, progress) as recorder:

            def expect(total: int) -> None:
                recorder.expected = total

            async for value, key, source, partition, offset, record_ms in read_topic(
                settings, topic, start, expect
            ):
                if until_timestamp_ms is not None and _after(value, record_ms, until_timestamp_ms):
                    recorder.messages += 1
                    continue
                emitted = pipeline.process(value, key, source, partition, offset)
                recorder.take(emitted)
                if publisher is not None:
                    await publisher.publish(emitted, key)
    finally:
        if publisher is not None:
            await publisher.stop()
    return recorder.totals()


def _after(value: bytes | None, record_ms: int, until_ms: int) -> bool:
    """Whether a message lies after the point in time: by the fill's event time when it has one."""
    event_ms = codec.event_timestamp(value)
    return (event_ms if event_ms is not None else record_ms) > until_ms
