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
offset: without the tail, it would wait forever (the same stall as faust #176, #597). Claiming then
waits until the tail is stable (below the last stable offset): a predecessor's commit that was under
way when it died completes first, so recovery cannot miss it. Last, it reads the group's committed
offsets of the claimed input partitions, now stable too: input below them is done and is skipped
even when faust delivers it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import ProducerFenced, TransactionalIdAuthorizationFailed

log = logging.getLogger(__name__)

TAIL_KEY = b"~"  # the tail record's key in every changelog; never a fund (currencies are A-Z0-9)
TAIL_VALUE = b""
TRANSACTION_TIMEOUT_MS = 30_000  # an orphaned transaction nobody claims is aborted by the broker after this
RETRY_FOR_SECONDS = 180.0  # how long a partition's transaction is retried through broker outages
Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]  # key, value, headers


@dataclass
class PartitionWork:
    """What one partition number's transaction carries: records per topic partition, in order, then
    the consumed offsets. Kept as plain records so that a transaction can be built again when it has
    to be retried with a new producer."""

    records: dict[tuple[str, int], list[Record]] = field(default_factory=dict)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # next offset to read

    @property
    def empty(self) -> bool:
        return not self.records and not self.offsets


class Transactions:
    """The transactional producers of the partitions this worker owns."""

    def __init__(
        self,
        app_id: str,
        group_id: str,
        client_options: Mapping[str, Any],
        changelogs: Iterable[str],
        sources: Iterable[str],
        owns: Callable[[int], bool] = lambda partition: True,
    ) -> None:
        self.owns = owns
        self.app_id = app_id
        self.group_id = group_id
        self.client_options = dict(client_options)
        self.changelogs = tuple(changelogs)
        self.sources = tuple(sources)
        self.producers: dict[int, AIOKafkaProducer] = {}
        self.partitions: dict[str, int] = {}
        self._tail: AIOKafkaProducer | None = None
        self._reader: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
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
            reader = AIOKafkaConsumer(**self.client_options, isolation_level="read_committed")
            await reader.start()
            self._reader = reader
            admin = AIOKafkaAdminClient(**self.client_options)
            await admin.start()
            self._admin = admin
        for topic in (*topics, *self.changelogs):
            if topic not in self.partitions:
                self.partitions[topic] = len(await self._tail.partitions_for(topic))

    async def stop(self) -> None:
        await self.release(list(self.producers))
        if self._tail is not None:
            await self._tail.stop()
            self._tail = None
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def claim(self, partitions: Iterable[int]) -> dict[str, int]:
        """Take ``partitions`` over: fence their previous owners (aborting anything left open), end
        each of their changelog partitions with a tail record, wait until no transaction is pending
        before it, and return the group's committed offsets of the claimed input partitions as
        ``{"topic:partition": next offset}``."""
        wanted = sorted(set(partitions))
        await self.start(())
        await asyncio.gather(*(self._producer(partition) for partition in wanted))
        tail, reader, admin = self._tail, self._reader, self._admin
        assert tail is not None and reader is not None and admin is not None
        deliveries = [
            await tail.send(changelog, key=TAIL_KEY, value=TAIL_VALUE, partition=partition)
            for partition in wanted
            for changelog in self.changelogs
        ]
        tails = {
            TopicPartition(meta.topic, meta.partition): meta.offset
            for meta in await asyncio.gather(*deliveries)
        }
        deadline = asyncio.get_running_loop().time() + TRANSACTION_TIMEOUT_MS / 1000 + 30
        while True:
            stable = await reader.end_offsets(list(tails))  # read_committed: the last stable offsets
            if all(stable[tp] > offset for tp, offset in tails.items()):
                break
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"changelog partitions {sorted(map(str, tails))} never became stable")
            await asyncio.sleep(0.05)
        sources = [TopicPartition(topic, partition) for topic in self.sources for partition in wanted]
        committed = await admin.list_consumer_group_offsets(self.group_id, partitions=sources)
        log.info("claimed partitions %s", wanted)
        return {
            f"{tp.topic}:{tp.partition}": meta.offset
            for tp, meta in committed.items()
            if meta is not None and meta.offset >= 0
        }

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
        """Commit ``work`` in ``partition``'s transaction. A failure other than being fenced (a broker
        restart, say) is retried with a new producer while this worker still owns the partition: its
        initialisation aborts the failed transaction, unless that one did commit, which the group's
        committed offsets (moved only by these transactions) then show."""
        deadline = asyncio.get_running_loop().time() + RETRY_FOR_SECONDS
        while True:
            try:
                await self._transaction(await self._producer(partition), work)
                self.commits += 1
                return
            except (ProducerFenced, TransactionalIdAuthorizationFailed):
                raise
            except Exception as error:
                if asyncio.get_running_loop().time() > deadline or not self.owns(partition):
                    raise
                log.warning(
                    "transaction of partition %d failed (%r); retrying with a new producer", partition, error
                )
                await self.release([partition])
                await asyncio.sleep(1.0)
                try:
                    await self._producer(partition)  # aborts the failed transaction, or waits for its commit
                    if await self._committed(work):
                        self.commits += 1
                        return
                except Exception as again:
                    log.warning("partition %d: broker not back yet (%r)", partition, again)
                    await self.release([partition])

    async def _transaction(self, producer: AIOKafkaProducer, work: PartitionWork) -> None:
        await producer.begin_transaction()
        deliveries = []
        for (topic, topic_partition), records in work.records.items():
            builder = producer.create_batch()  # built by this producer: the transactional flag is set
            for key, value, headers in records:
                if builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    deliveries.append(await producer.send_batch(builder, topic, partition=topic_partition))
                    builder = producer.create_batch()
                    builder.append(key=key, value=value, timestamp=None, headers=headers)
            deliveries.append(await producer.send_batch(builder, topic, partition=topic_partition))
        if work.offsets:
            await producer.send_offsets_to_transaction(work.offsets, self.group_id)
        await asyncio.gather(*deliveries)
        await producer.commit_transaction()

    async def _committed(self, work: PartitionWork) -> bool:
        """Whether the group's committed offsets already include ``work`` (its transaction committed)."""
        if not work.offsets:
            return False
        admin = self._admin
        assert admin is not None
        committed = await admin.list_consumer_group_offsets(self.group_id, partitions=list(work.offsets))
        return all(
            (meta := committed.get(tp)) is not None and meta.offset >= offset
            for tp, offset in work.offsets.items()
        )
