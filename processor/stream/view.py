"""Every fund of the app as committed, read from the funds changelog, so any worker can show any fund."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from operator import attrgetter
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from processor import codec
from processor.domain.state import FundState

log = logging.getLogger(__name__)

TAIL_KEY = codec.TAIL_KEY

_FETCH_TIMEOUT_MS = 1_000
_FETCH_MAX_RECORDS = 10_000
_TOPIC_WAIT_SECONDS = 1.0
_METADATA_WAIT_SECONDS = 30.0
_MAX_RETRY_SECONDS = 30.0
_HEALTHY_RUN_SECONDS = 60.0


class FundsView:
    """Follow ``<APP_ID>-funds-changelog`` on every partition, outside any consumer group.

    The worker pushes the states of the funds it owns with :meth:`update` right after each commit, so they are
    never stale here; the changelog brings every other fund, a little later. For each fund the state with the
    highest ``(sequence, duplicates)`` wins. A tombstone deletes the fund (a later record or push brings it
    back).
    Only ``read_committed`` data is read: an aborted transaction never shows.
    """

    def __init__(
        self,
        client_options: Mapping[str, Any],
        changelog_topic: str,
        *,
        refresh_seconds: float = 30.0,
        retry_seconds: float = 1.0,
    ) -> None:
        self._options: dict[str, Any] = {
            # partitions_for_topic answers from the client's metadata, which it refreshes this often (for
            # the topics it tracks; consumer.topics() fetches a separate copy and leaves that one as it was)
            "metadata_max_age_ms": int(refresh_seconds * 1000),
            **client_options,
            "group_id": None,
            "enable_auto_commit": False,
            "isolation_level": "read_committed",
            "auto_offset_reset": "earliest",
        }
        self._topic = changelog_topic
        self._refresh_seconds = refresh_seconds
        self._retry_seconds = retry_seconds
        self._funds: dict[str, FundState] = {}
        self._positions: dict[TopicPartition, int] = {}  # next offset to read; survives a consumer restart
        self._targets: dict[TopicPartition, int] | None = None  # end offsets seen when first assigned
        self._caught_up = False
        self._waiting_logged = False
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[FundState], None]] = []

    async def start(self) -> None:
        """Start following the changelog in a background task; return at once."""
        if self._task is None:
            self._task = asyncio.create_task(self._follow(), name=f"funds-view:{self._topic}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def update(self, states: Iterable[FundState]) -> None:
        """Take the states the worker has just committed for the funds it owns."""
        for state in states:
            self._offer(state)

    def listen(self, listener: Callable[[FundState], None]) -> None:
        """Call ``listener`` with each state the view takes, right after it takes it (committed states only).

        A listener runs on the worker's event loop, after every commit: it must be quick and must not raise.
        """
        self._listeners.append(listener)

    def states(self) -> list[FundState]:
        """Every fund, sorted by fund id."""
        return sorted(self._funds.values(), key=attrgetter("fund"))

    def get(self, fund: str) -> FundState | None:
        return self._funds.get(fund)

    @property
    def caught_up(self) -> bool:
        """Whether the view has read up to the end offsets it saw when it started."""
        return self._caught_up

    def _offer(self, state: FundState) -> None:
        current = self._funds.get(state.fund)
        # An identical duplicate moves ``duplicates`` but not ``sequence``; both only ever grow.
        if current is None or (state.sequence, state.duplicates) > (current.sequence, current.duplicates):
            self._funds[state.fund] = state
            for listener in self._listeners:
                listener(state)

    async def _follow(self) -> None:
        """Read forever; on a failure log it and start a new consumer after a pause: never kill the worker."""
        loop = asyncio.get_running_loop()
        delay = self._retry_seconds
        while True:
            began = loop.time()
            try:
                await self._follow_once()
            except Exception:
                if loop.time() - began > _HEALTHY_RUN_SECONDS:
                    delay = self._retry_seconds
                log.exception("reading the funds changelog %s failed; retrying in %.1f s", self._topic, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_RETRY_SECONDS)
            else:  # the topic does not exist yet
                await asyncio.sleep(_TOPIC_WAIT_SECONDS)

    async def _follow_once(self) -> None:
        """Read with one consumer until an error; return at once when the topic does not exist yet."""
        loop = asyncio.get_running_loop()
        consumer = AIOKafkaConsumer(**self._options)
        try:
            await consumer.start()
            partitions = await self._discover(consumer)
            if not partitions:
                if not self._waiting_logged:
                    self._waiting_logged = True
                    log.info("waiting for the funds changelog %s to exist", self._topic)
                return
            await self._assign(consumer, partitions)
            if self._targets is None:
                self._targets = await consumer.end_offsets(sorted(partitions))
            next_refresh = loop.time() + self._refresh_seconds
            while True:
                batch = await consumer.getmany(timeout_ms=_FETCH_TIMEOUT_MS, max_records=_FETCH_MAX_RECORDS)
                self._apply(batch)
                for partition in partitions:
                    self._positions[partition] = await consumer.position(partition)
                self._check_caught_up()
                if loop.time() >= next_refresh:
                    next_refresh = loop.time() + self._refresh_seconds
                    found = self._partitions(consumer)
                    if not found <= partitions:
                        log.info(
                            "funds changelog %s now has %d partitions", self._topic, len(found | partitions)
                        )
                        partitions = found | partitions
                        await self._assign(consumer, partitions)
        finally:
            await consumer.stop()

    async def _discover(self, consumer: Any) -> set[TopicPartition]:
        """The topic's partitions, or none when it does not exist yet."""
        if self._topic not in await consumer.topics():
            return set()
        # The client keeps metadata only of the topics it tracks, and assigning a partition makes it track
        # the topic: assign partition 0, which every topic has, until the metadata arrives.
        consumer.assign([TopicPartition(self._topic, 0)])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _METADATA_WAIT_SECONDS
        while (numbers := consumer.partitions_for_topic(self._topic)) is None:
            if loop.time() > deadline:
                raise TimeoutError(f"no metadata for {self._topic} after {_METADATA_WAIT_SECONDS:.0f} s")
            await asyncio.sleep(0.05)
        return self._partitions(consumer) | {TopicPartition(self._topic, number) for number in numbers}

    def _partitions(self, consumer: Any) -> set[TopicPartition]:
        """The topic's partitions as the client's metadata, refreshed every ``refresh_seconds``, has them."""
        return {
            TopicPartition(self._topic, number) for number in consumer.partitions_for_topic(self._topic) or ()
        }

    async def _assign(self, consumer: Any, partitions: set[TopicPartition]) -> None:
        """Assign every partition: resume where this view stopped reading, start new ones at the beginning."""
        consumer.assign(sorted(partitions))
        fresh = []
        for partition in partitions:
            if partition in self._positions:
                consumer.seek(partition, self._positions[partition])
            else:
                fresh.append(partition)
        if fresh:
            await consumer.seek_to_beginning(*fresh)

    def _apply(self, batch: Mapping[TopicPartition, list[Any]]) -> None:
        """Apply one fetched batch, decoding only the newest record of each key."""
        newest: dict[bytes, tuple[Any, bool]] = {}  # key -> (newest record, deleted since the last batch)
        for records in batch.values():
            for record in records:
                if record.key is None or record.key == TAIL_KEY or record.value == b"":
                    continue
                earlier = newest.get(record.key)
                deleted = record.value is None or (earlier is not None and earlier[1])
                newest[record.key] = (record, deleted)
        for key, (record, deleted) in newest.items():
            if deleted:
                self._funds.pop(key.decode("utf-8", "replace"), None)
            if record.value is None:
                continue
            try:
                state = codec.decode_fund_record(record.value).state
            except Exception:
                log.exception(
                    "skipping an unreadable fund record at %s[%d]@%d",
                    record.topic,
                    record.partition,
                    record.offset,
                )
                continue
            self._offer(state)

    def _check_caught_up(self) -> None:
        if self._caught_up or self._targets is None:
            return
        if all(self._positions.get(partition, 0) >= end for partition, end in self._targets.items()):
            self._caught_up = True
            log.info("funds view caught up with %s: %d funds", self._topic, len(self._funds))
