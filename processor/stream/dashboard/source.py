"""The dashboard's Kafka reads: a window of the output topics (the history), and the ADL topics as they grow.

Everything reads ``read_committed``, outside any consumer group: what a page shows was committed by a worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition

from processor import codec
from processor.config import Settings

log = logging.getLogger(__name__)

#: SPEC section 9's topic of ADL state changes (``ADL_STATES_TOPIC``): it exists once a policy is configured.
ADL_STATES_TOPIC = "insurance-fund-adl-states"

DELTAS, TRIGGERS, STATES = "deltas", "triggers", "states"

_METADATA_WAIT_SECONDS = 10.0
_FETCH_RECORDS = 2_000  # per getmany: the worker's loop gets a turn every ~10 ms of decoding
_FOLLOW_REFRESH_SECONDS = 30.0
#: How far before the feed began a partition it starts following is read from: a record stamped by a
#: producer whose clock is somewhat behind this one's is not lost (a page draws a record its history
#: has too only once).
FOLLOW_LOOKBACK_MS = 1_000
_MAX_RETRY_SECONDS = 30.0

Sink = Callable[[str, Any], None]


@dataclass(frozen=True)
class DashboardTopics:
    """The output topics the dashboard reads (the settings' names)."""

    deltas: str
    adl: str
    adl_states: str = ADL_STATES_TOPIC

    @classmethod
    def from_settings(cls, settings: Settings) -> DashboardTopics:
        return cls(settings.deltas_topic, settings.adl_topic, settings.adl_states_topic)


@dataclass(frozen=True)
class Budgets:
    """The most offsets one history read takes from each topic (the newest, when the window holds more), and
    the longest it may take. Offsets, not records: each transaction's commit marker takes one too."""

    deltas: int = 100_000
    triggers: int = 20_000
    states: int = 10_000
    seconds: float = 15.0


class Window(NamedTuple):
    """Decoded records of one history read, by kind, and which kinds did not fit the budget or the time."""

    records: dict[str, list[Any]]
    truncated: list[str]
    missing: list[str]  # topics that do not exist


def share(available: Mapping[Any, int], budget: int) -> dict[Any, int]:
    """Split ``budget`` records over partitions holding ``available`` ones: a partition with fewer than an
    even share takes them all, and what it leaves goes to the others."""
    shares = {key: 0 for key in available}
    left = budget
    waiting = sorted((count, key) for key, count in available.items() if count > 0)
    while waiting and left > 0:
        even = left // len(waiting) if left >= len(waiting) else 1
        count, key = waiting.pop(0)
        taken = min(count, even)
        shares[key] = taken
        left -= taken
    return shares


def _consumer(options: Mapping[str, Any]) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **options,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="latest",
    )


async def partitions_of(consumer: AIOKafkaConsumer, topics: list[str]) -> dict[str, list[TopicPartition]]:
    """The partitions of each topic that exists (missing ones are left out).

    The client keeps metadata only of topics it tracks, and assigning a partition makes it track one: assign
    partition 0 of each (every topic has one) until their metadata arrives. Replaces the assignment.
    """
    existing = await consumer.topics()
    wanted = [topic for topic in topics if topic in existing]
    if not wanted:
        return {}
    consumer.assign([TopicPartition(topic, 0) for topic in wanted])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _METADATA_WAIT_SECONDS
    while any(consumer.partitions_for_topic(topic) is None for topic in wanted):
        if loop.time() > deadline:
            raise TimeoutError(f"no metadata for {', '.join(wanted)} after {_METADATA_WAIT_SECONDS:.0f} s")
        await asyncio.sleep(0.05)
    return {
        topic: [TopicPartition(topic, number) for number in sorted(consumer.partitions_for_topic(topic))]
        for topic in wanted
    }


def _decode(record: Any) -> Any:
    try:
        return codec.loads(record.value) if record.value else None
    except ValueError:
        return None


class KafkaTimeline:
    """History windows and the live ADL records, read from the output topics."""

    def __init__(
        self, options: Mapping[str, Any], topics: DashboardTopics, budgets: Budgets | None = None
    ) -> None:
        self._options = dict(options)
        self._topics = topics
        self._budgets = budgets = budgets or Budgets()
        self._kinds = {topics.deltas: DELTAS, topics.adl: TRIGGERS, topics.adl_states: STATES}
        self._limits = {DELTAS: budgets.deltas, TRIGGERS: budgets.triggers, STATES: budgets.states}

    async def read(self, since_ms: int) -> Window:
        """Every committed record written at or after ``since_ms`` (Kafka record time) up to the end offsets
        seen now, at most the budget per topic (the newest)."""
        records: dict[str, list[Any]] = {DELTAS: [], TRIGGERS: [], STATES: []}
        consumer = _consumer({**self._options, "max_partition_fetch_bytes": 1 << 20})
        await consumer.start()
        try:
            found = await partitions_of(consumer, list(self._kinds))
            missing = [kind for topic, kind in self._kinds.items() if topic not in found]
            tps = [tp for partitions in found.values() for tp in partitions]
            if not tps:
                return Window(records, [], missing)
            starts = await consumer.offsets_for_times({tp: since_ms for tp in tps})
            ends = await consumer.end_offsets(tps)
            begin = {tp: ends[tp] if starts.get(tp) is None else starts[tp].offset for tp in tps}
            truncated = []
            for topic, partitions in found.items():
                available = {tp: max(ends[tp] - begin[tp], 0) for tp in partitions}
                shares = share(available, self._limits[self._kinds[topic]])
                if any(shares[tp] < available[tp] for tp in partitions):
                    truncated.append(self._kinds[topic])
                for tp in partitions:
                    begin[tp] = ends[tp] - shares[tp]
            reading = {tp for tp in tps if begin[tp] < ends[tp]}
            if reading and not await self._read_to_ends(consumer, reading, begin, ends, records):
                truncated.extend(kind for kind in (DELTAS, TRIGGERS, STATES) if kind not in truncated)
            return Window(records, truncated, missing)
        finally:
            await consumer.stop()

    async def _read_to_ends(
        self,
        consumer: AIOKafkaConsumer,
        reading: set[TopicPartition],
        begin: Mapping[TopicPartition, int],
        ends: Mapping[TopicPartition, int],
        records: dict[str, list[Any]],
    ) -> bool:
        """Read each partition from ``begin`` to ``ends``; ``False`` when the time budget ran out first."""
        consumer.assign(sorted(reading))
        for tp in reading:
            consumer.seek(tp, begin[tp])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._budgets.seconds
        while reading:
            if loop.time() > deadline:
                return False
            batch = await consumer.getmany(timeout_ms=200, max_records=_FETCH_RECORDS)
            for tp, fetched in batch.items():
                kept = records[self._kinds[tp.topic]]
                end = ends[tp]
                for record in fetched:
                    if record.offset < end:
                        document = _decode(record)
                        if document is not None:
                            kept.append(document)
            for tp in list(reading):
                if await consumer.position(tp) >= ends[tp]:
                    reading.discard(tp)
                    consumer.pause(tp)
        return True

    async def follow(self, sink: Sink) -> None:
        """Call ``sink(kind, document)`` for each ADL trigger and ADL state event committed from now on
        (and stamped up to ``FOLLOW_LOOKBACK_MS`` before), until cancelled. A failure is logged and
        the read resumes where it stopped: it never reaches the worker."""
        positions: dict[TopicPartition, int] = {}
        since_ms = int(time.time() * 1000) - FOLLOW_LOOKBACK_MS
        delay = 1.0
        while True:
            try:
                await self._follow_once(sink, positions, since_ms)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the dashboard's read of the ADL topics failed; retrying in %.0f s", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_RETRY_SECONDS)

    async def _follow_once(self, sink: Sink, positions: dict[TopicPartition, int], since_ms: int) -> None:
        wanted = [self._topics.adl, self._topics.adl_states]
        consumer = _consumer(self._options)
        await consumer.start()
        try:
            loop = asyncio.get_running_loop()
            following: set[str] = set()
            refresh = loop.time()
            while True:
                if loop.time() >= refresh:  # the ADL states topic appears once a worker with the policy runs
                    refresh = loop.time() + _FOLLOW_REFRESH_SECONDS
                    existing = await consumer.topics()
                    present = {topic for topic in wanted if topic in existing}
                    if present != following:
                        found = await partitions_of(consumer, sorted(present))
                        partitions = {tp for tps in found.values() for tp in tps}
                        await self._assign(consumer, partitions, positions, since_ms)
                        following = present
                if not following:
                    await asyncio.sleep(1.0)
                    continue
                batch = await consumer.getmany(timeout_ms=500, max_records=_FETCH_RECORDS)
                for tp, fetched in batch.items():
                    kind = TRIGGERS if tp.topic == self._topics.adl else STATES
                    for record in fetched:
                        document = _decode(record)
                        if document is not None:
                            sink(kind, document)
                    positions[tp] = fetched[-1].offset + 1
        finally:
            await consumer.stop()

    @staticmethod
    async def _assign(
        consumer: AIOKafkaConsumer,
        partitions: set[TopicPartition],
        positions: dict[TopicPartition, int],
        since_ms: int,
    ) -> None:
        """Assign ``partitions``: resume where this feed stopped, start the others at their first record
        stamped ``since_ms`` or later (the feed's start, less a margin), or at their end. Not at their
        end whatever their records: a page opens its stream before it reads its history, and what is
        committed between the two must reach it, however long this consumer takes to get there (a
        page draws what both carry once)."""
        consumer.assign(sorted(partitions))
        fresh = []
        for tp in partitions:
            if tp in positions:
                consumer.seek(tp, positions[tp])
            else:
                fresh.append(tp)
        if fresh:
            starts = await consumer.offsets_for_times({tp: since_ms for tp in fresh})
            ends = await consumer.end_offsets(fresh)
            for tp in fresh:
                found = starts.get(tp)
                positions[tp] = found.offset if found is not None else ends[tp]
                consumer.seek(tp, positions[tp])
