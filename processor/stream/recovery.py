"""The narrow changes to faust 0.15.3 that exactly-once needs; everything else is stock faust.

1. faust commits no offsets; the batches' transactions do (``transactions.py``).
2. The worker's consumer reads ``read_committed``: table recovery must not load changelog records
   of transactions that never committed, and input written transactionally must not be seen early.
   faust picks ``read_committed`` only in its own ``exactly_once`` mode, whose transactions do not
   cover sends to topics the app does not consume (see the README).
3. Stream buffers are not emptied when flow resumes (see ``ReadCommittedApp.FlowControlQueue``).
4. Before recovery measures a changelog partition it is about to restore, the worker claims the
   partition (``Transactions.claim``): the previous owner is fenced, its open transaction aborted,
   and the partition ends with a record recovery can reach.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP


class _ReadCommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"  # aiokafka hands it to its fetcher in start()
        return consumer


class _ReadCommittedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        """Commit nothing: the batches' transactions commit the consumed offsets. faust's own commit
        of acknowledged offsets, landing after a later transaction, would move the group back, and the
        next owner would read (and dead-letter) that input a second time."""
        return True


class _ReadCommittedTransport(faust_aiokafka.Transport):
    Consumer = _ReadCommittedConsumer


class ReadCommittedApp(faust.App):
    """A faust app whose consumer (input and changelog recovery alike) reads committed records only,
    and whose stream buffers are emptied only when partitions are revoked."""

    def _new_transport(self) -> Any:
        return _ReadCommittedTransport(self.conf.broker_consumer, self)

    def FlowControlQueue(  # noqa: N802 - faust's name
        self, maxsize: int | None = None, *, clear_on_resume: bool = False
    ) -> Any:
        """Never clear on resume. faust 0.15.3 resumes the stream partitions, then seeks them, then
        resumes flow, which empties every stream buffer: what was fetched in between is dropped
        while the consumer's position has moved past it, and is never read again (input lost at
        start-up with a backlog). Buffers of revoked partitions are still emptied, by
        ``flow_control.clear()`` on revocation."""
        return super().FlowControlQueue(maxsize, clear_on_resume=False)


def claim_before_recovery(app: faust.App, claim: Callable[[Iterable[int]], Awaitable[None]]) -> None:
    """Have recovery call ``claim(partition numbers)`` before it reads the end offsets of the active
    changelog partitions it will restore."""
    recovery: Any = app.tables.recovery  # type: ignore[attr-defined]
    measure = recovery._build_highwaters

    async def claim_then_measure(consumer: Any, tps: set[TP], destination: Any, title: str) -> None:
        if title == "active" and tps:
            await claim({tp.partition for tp in tps})
        await measure(consumer, tps, destination, title)

    recovery._build_highwaters = claim_then_measure
