"""Exactly-once publishing: one Kafka transaction per partition number per batch.

A batch's work for partition number ``p`` (input ``p`` and re-partition ``p`` are always assigned
together) is one transaction of the producer whose ``transactional.id`` is ``<app>-fund-<p>``: the
outputs of the events read there (deltas, triggers, dead letters, forwards), the changelog records
of the funds living on ``p``, and the consumed offsets of those events. Either all of it becomes
visible to ``read_committed`` readers, or none of it does.

One id per partition rather than per process, because aiokafka cannot fence by consumer-group
generation (KIP-447): the worker that takes partition ``p`` over initialises ``<app>-fund-<p>``,
which aborts whatever its predecessor left open and fences the predecessor out for good.

Claiming also writes one non-transactional *tail* record to each of the partition's changelogs.
Every transaction ends with a commit marker, which no consumer ever sees, and faust 0.15.3 recovery
(outside its own ``exactly_once`` mode) waits until it has seen the record just before the end
offset: without the tail, it would wait forever (the same stall as faust #176, #597).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition

log = logging.getLogger(__name__)

TAIL_KEY = b"~"  # the tail record's key in every changelog; never a fund (currencies are A-Z0-9)
TAIL_VALUE = b""
TRANSACTION_TIMEOUT_MS = 30_000  # an orphaned transaction nobody claims is aborted by the broker after this


@dataclass
class PartitionWork:
    """What one partition number's transaction carries: record batches in send order, then offsets."""

    batches: list[tuple[str, int, Any]] = field(default_factory=list)  # (topic, partition, BatchBuilder)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # next offset to read

    @property
    def empty(self) -> bool:
        return not self.batches and not self.offsets


class Transactions:
    """The transactional producers of the partitions this worker owns."""

    def __init__(
        self, app_id: str, group_id: str, client_options: Mapping[str, Any], changelogs: Iterable[str]
    ) -> None:
        self.app_id = app_id
        self.group_id = group_id
        self.client_options = dict(client_options)
        self.changelogs = tuple(changelogs)
        self.producers: dict[int, AIOKafkaProducer] = {}
        self.partitions: dict[str, int] = {}
        self._tail: AIOKafkaProducer | None = None
        self.commits = 0

    def transactional_id(self, partition: int) -> str:
        return f"{self.app_id}-fund-{partition}"

    async def start(self, topics: Iterable[str]) -> None:
        """Connect the tail producer (inside the running loop, as aiokafka requires) and learn the
        partition counts of ``topics``."""
        if self._tail is None:
            tail = AIOKafkaProducer(**self.client_options, acks="all", enable_idempotence=True)
            await tail.start()
            self._tail = tail
        for topic in (*topics, *self.changelogs):
            if topic not in self.partitions:
                self.partitions[topic] = len(await self._tail.partitions_for(topic))

    async def stop(self) -> None:
        await self.release(list(self.producers))
        if self._tail is not None:
            await self._tail.stop()
            self._tail = None

    def create_batch(self) -> Any:
        """An empty record batch (every producer here builds the same format)."""
        assert self._tail is not None, "start() first"
        return self._tail.create_batch()

    async def claim(self, partitions: Iterable[int]) -> None:
        """Take ``partitions`` over: fence their previous owners (aborting anything left open), then
        end each of their changelog partitions with a tail record."""
        wanted = sorted(set(partitions))
        await self.start(())
        await asyncio.gather(*(self._producer(partition) for partition in wanted))
        tail = self._tail
        assert tail is not None
        deliveries = [
            await tail.send(changelog, key=TAIL_KEY, value=TAIL_VALUE, partition=partition)
            for partition in wanted
            for changelog in self.changelogs
        ]
        await asyncio.gather(*deliveries)
        log.info("claimed partitions %s", wanted)

    async def release(self, partitions: Iterable[int]) -> None:
        """Close the producers of partitions this worker no longer owns."""
        owned = [partition for partition in set(partitions) if partition in self.producers]
        closing = [self.producers.pop(partition) for partition in owned]
        await asyncio.gather(*(producer.stop() for producer in closing), return_exceptions=True)

    async def _producer(self, partition: int) -> AIOKafkaProducer:
        producer = self.producers.get(partition)
        if producer is None:
            producer = AIOKafkaProducer(
                **self.client_options,
                acks="all",
                enable_idempotence=True,
                transactional_id=self.transactional_id(partition),
                transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
                linger_ms=5,
                max_batch_size=1 << 20,
            )
            await producer.start()  # InitProducerId: fences the previous owner, aborts its open transaction
            self.producers[partition] = producer
        return producer

    async def commit(self, work: Mapping[int, PartitionWork]) -> None:
        """Run one transaction per partition number, concurrently; return when all have committed."""
        await asyncio.gather(*(self._commit(owner, part) for owner, part in work.items() if not part.empty))

    async def _commit(self, partition: int, work: PartitionWork) -> None:
        producer = await self._producer(partition)
        await producer.begin_transaction()
        deliveries = [
            await producer.send_batch(builder, topic, partition=topic_partition)
            for topic, topic_partition, builder in work.batches
        ]
        if work.offsets:
            await producer.send_offsets_to_transaction(work.offsets, self.group_id)
        await asyncio.gather(*deliveries)
        await producer.commit_transaction()
        self.commits += 1
