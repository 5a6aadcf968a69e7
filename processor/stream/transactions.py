"""Exactly-once publishing: one Kafka transaction per partition number per batch.

A batch's work for partition number ``p`` (input ``p`` and re-partition ``p`` are always assigned
together) is one transaction of the producer whose ``transactional.id`` is ``<app>-fund-<p>``: the
outputs of the events read there (deltas, triggers, dead letters, forwards), the changelog records
of the funds living on ``p``, and the consumed offsets of those events. Either all of it becomes
visible to ``read_committed`` readers, or none of it does.

One id per partition rather than per process, because aiokafka cannot fence by consumer-group
generation (KIP-447): the worker that takes partition ``p`` over initialises ``<app>-fund-<p>``
(``claim``), which aborts whatever its predecessor left open (or lets a commit it had started
finish) and fences the predecessor out for good: its next transaction fails with ``ProducerFenced``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import ProducerFenced, TransactionalIdAuthorizationFailed

log = logging.getLogger(__name__)

TRANSACTION_TIMEOUT_MS = 30_000  # an orphaned transaction nobody claims is aborted by the broker after this
RETRY_FOR_SECONDS = 60.0  # default of how long a transaction is retried through a broker outage
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

    @property
    def size(self) -> int:
        return sum(map(len, self.records.values()))

    def merge(self, later: PartitionWork) -> None:
        """Append a later batch's work: its records after these, its offsets over these."""
        for destination, records in later.records.items():
            self.records.setdefault(destination, []).extend(records)
        for tp, offset in later.offsets.items():
            self.offsets[tp] = max(offset, self.offsets.get(tp, 0))


class Transactions:
    """The transactional producers of the partitions this worker owns."""

    def __init__(
        self,
        app_id: str,
        group_id: str,
        client_options: Mapping[str, Any],
        owns: Callable[[int], bool] = lambda partition: True,
        retry_for_seconds: float = RETRY_FOR_SECONDS,
    ) -> None:
        self.owns = owns
        self.retry_for_seconds = retry_for_seconds
        #: partition -> why its transaction is being retried (a broker outage), for ``/health``
        self.trouble: dict[int, str] = {}
        self.app_id = app_id
        self.group_id = group_id
        self.client_options = dict(client_options)
        self.producers: dict[int, AIOKafkaProducer] = {}
        self.partitions: dict[str, int] = {}
        self._admin: AIOKafkaAdminClient | None = None
        self.commits = 0

    def transactional_id(self, partition: int) -> str:
        return f"{self.app_id}-fund-{partition}"

    async def start(self, partition_counts: Mapping[str, int]) -> None:
        """Connect the admin client (inside the running loop, as aiokafka requires); ``partition_counts``
        are the partition counts of every topic a transaction writes."""
        self.partitions.update(partition_counts)
        if self._admin is None:
            admin = AIOKafkaAdminClient(**self.client_options)
            await admin.start()
            self._admin = admin

    async def stop(self) -> None:
        await self.release(list(self.producers))
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def claim(self, partitions: Iterable[int]) -> None:
        """Take ``partitions`` over: initialise their transactional producers, which fences their
        previous owners and completes or aborts whatever those left open."""
        await asyncio.gather(*(self._producer(partition) for partition in sorted(set(partitions))))
        log.info("claimed transactional ids of partitions %s", sorted(set(partitions)))

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
                linger_ms=0,  # whole record batches are sent at once; nothing to wait for
                max_batch_size=1 << 20,
                # A transaction begun right after the previous commit can be refused until that
                # one's markers are written (retried): retry after 5 ms, not aiokafka's 100 ms.
                retry_backoff_ms=5,
            )
            await producer.start()  # InitProducerId: fences the previous owner, aborts its open transaction
            self.producers[partition] = producer
        return producer

    async def commit(self, partition: int, work: PartitionWork) -> None:
        """Commit ``work`` in ``partition``'s transaction. A failure other than being fenced (a broker
        restart, say) is retried with a new producer while this worker still owns the partition: its
        initialisation aborts the failed transaction, unless that one did commit, which the group's
        committed offsets (moved only by these transactions) then show."""
        deadline = asyncio.get_running_loop().time() + self.retry_for_seconds
        try:
            await self._retrying(partition, work, deadline)
        finally:
            self.trouble.pop(partition, None)

    async def _retrying(self, partition: int, work: PartitionWork, deadline: float) -> None:
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
                    "transaction of partition %d failed (%r); retrying with a new producer",
                    partition,
                    error,
                    extra={"partition": partition},
                )
                self.trouble.setdefault(
                    partition, f"the transaction of partition {partition} is being retried: {error!r}"
                )
                await self.release([partition])
                await asyncio.sleep(1.0)
                try:
                    await self._producer(partition)  # aborts the failed transaction, or waits for its commit
                    if await self._committed(work):
                        self.commits += 1
                        return
                except Exception as again:
                    log.warning(
                        "partition %d: broker not back yet (%r)",
                        partition,
                        again,
                        extra={"partition": partition},
                    )
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
