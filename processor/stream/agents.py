"""The agent's work on one batch of input events: decode, route, fold, then commit it all at once.

Per batch and partition number, one Kafka transaction carries the outputs, the touched funds'
changelog records (state plus applied input offsets) and the consumed offsets
(``processor.stream.transactions``). Only after it has committed are the tables' local stores
updated and the events acknowledged to faust. A crash anywhere leaves either all of a partition's
batch committed or none of it; the next owner reads the uncommitted input again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

from aiokafka import TopicPartition
from faust.streams import _current_event  # faust 0.15.3: the context table writes are bound to
from faust.types import EventT

from processor import codec
from processor.codec import FillDecoder, Rejection
from processor.domain.fold import exact_arithmetic
from processor.pipeline import wall_clock_ms
from processor.stream.book import FundBook
from processor.stream.metrics import Metrics
from processor.stream.outbox import Outbox
from processor.stream.partitioning import home_partition
from processor.stream.tables import ChangelogTable
from processor.stream.transactions import PartitionWork, Transactions

SOURCE_HEADER = "insurance-fund-source"
SOURCE_KEY_HEADER = "insurance-fund-source-key"
EXIT_BATCH_FAILED = 70

log = logging.getLogger(__name__)


def _die(reason: str) -> NoReturn:
    log.critical("exiting without committing the current batch: %s", reason)
    logging.shutdown()
    os._exit(EXIT_BATCH_FAILED)


@dataclass(frozen=True)
class TopicNames:
    input: str
    repartition: str
    deltas: str
    adl: str
    dlq: str


@contextmanager
def event_context(event: EventT) -> Iterator[None]:
    """Bind table writes to ``event``'s partition, as faust does while a stream yields it.

    ``take_events`` hands the agent a list, outside faust's per-event context; without this, table
    writes fail ("Cannot modify table key from outside of stream iteration").
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class FillProcessor:
    """Everything the agent does with a batch; the faust app module only wires it up."""

    def __init__(
        self,
        *,
        decoder: FillDecoder,
        book: FundBook,
        tables: Sequence[ChangelogTable],
        outbox: Outbox,
        transactions: Transactions,
        topics: TopicNames,
        partitions: int,
        metrics: Metrics,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.decoder = decoder
        self.book = book
        self.tables = tables
        self.outbox = outbox
        self.transactions = transactions
        self.topics = topics
        self.partitions = partitions
        self.metrics = metrics
        self.clock_ms = clock_ms
        self.positions: dict[str, int] = {}

    def forget(self) -> None:
        """After a revocation: positions restart from the committed offsets."""
        self.positions.clear()

    async def process_or_die(self, events: Sequence[EventT]) -> None:
        """Process a batch completely, or end the process before faust can acknowledge any of it.

        faust acknowledges a batch taken with ``take_events`` when the agent asks for the next one,
        even if processing raised; a half-processed batch must never be committed, so a failure
        exits the process and the batch is read again by the next owner of its partitions. A stop
        request (cancellation) lets the batch in flight finish first.
        """
        work = asyncio.ensure_future(self.process(events))
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            try:
                await asyncio.wait_for(asyncio.shield(work), timeout=30)
            except BaseException:
                _die("stopped in the middle of a batch")
            raise
        except BaseException:
            log.exception("processing a batch failed")
            _die("a batch failed")

    async def process(self, events: Sequence[EventT]) -> None:
        last_by_partition: dict[int, EventT] = {}
        positions = self.positions
        with exact_arithmetic():
            for event in events:
                message = event.message
                source = f"{message.topic}:{message.partition}"
                if message.offset < positions.get(source, -1):
                    self.metrics.skipped_replayed += 1  # delivered again by a seek: already done
                    continue
                positions[source] = message.offset + 1
                self._fold(event)
                last_by_partition[message.partition] = event
            for partition in last_by_partition:
                for table in self.tables:
                    table.bind(partition)  # a fund's records live on its partition number
                self.book.flush(lambda fund, p=partition: home_partition(fund, self.partitions) == p)  # type: ignore[misc]
        for table in self.tables:
            table.bind(-1)
        work = self.outbox.take()
        for event in events:
            message = event.message
            offsets = work.setdefault(message.partition, PartitionWork()).offsets
            tp = TopicPartition(message.topic, message.partition)
            offsets[tp] = max(offsets.get(tp, 0), message.offset + 1)
        await self.transactions.commit(work)
        for partition, last in last_by_partition.items():
            with event_context(last):
                for table in self.tables:
                    table.apply(partition)
        self.metrics.batches += 1

    def _fold(self, event: EventT) -> None:
        """Route one input event: dead letter, forward to the fund's partition, or fold and emit."""
        topics, metrics, outbox = self.topics, self.metrics, self.outbox
        message = event.message
        metrics.events += 1
        value, key = message.value, message.key
        fill = self.decoder.decode(value)
        if isinstance(fill, Rejection):
            self._dead_letter(fill, message, value, key)
            return
        fund = fill.margin_currency
        home = home_partition(fund, self.partitions)
        if message.topic == topics.input and message.partition != home:
            metrics.forwarded += 1
            origin = [(SOURCE_HEADER, f"{message.topic}:{message.partition}:{message.offset}".encode())]
            short_key = codec.dead_letter_key(key)
            if short_key is not None:
                origin.append((SOURCE_KEY_HEADER, short_key))
            # a fill near the broker's size limit would not fit with the headers: forward it compact
            small = value is not None and len(value) <= codec.DEAD_LETTER_VALUE_LIMIT
            forwarded = value if small else codec.encode_fill(fill)
            outbox.add(message.partition, topics.repartition, fund.encode(), forwarded, home, origin)
            return
        outcome = self.book.fold(fill, f"{message.topic}:{message.partition}", message.offset)
        if outcome is None:
            metrics.skipped_replayed += 1
        elif outcome.conflict is not None:
            self._dead_letter(Rejection(codec.CONFLICTING_DUPLICATE, outcome.conflict), message, value, key)
        elif outcome.delta is None:
            metrics.duplicates += 1
        else:
            metrics.deltas += 1
            outbox.add(message.partition, topics.deltas, fund.encode(), codec.encode_delta(outcome.delta))
            trigger = outcome.trigger
            if trigger is not None:
                metrics.adl_triggers += 1
                encoded = codec.encode_trigger(trigger, self.book.ledger.policy(fund))
                outbox.add(message.partition, topics.adl, trigger.symbol.encode(), encoded)

    def _dead_letter(
        self, rejection: Rejection, message: Any, value: bytes | None, key: bytes | None
    ) -> None:
        self.metrics.rejected[rejection.error] += 1
        owner = message.partition
        topic, partition, offset = message.topic, message.partition, message.offset
        for header, origin in message.headers or ():
            if header == SOURCE_HEADER:  # a forwarded fill: name where the producer put it
                source_topic, source_partition, source_offset = origin.decode().rsplit(":", 2)
                topic, partition, offset = source_topic, int(source_partition), int(source_offset)
                key = None
            elif header == SOURCE_KEY_HEADER:
                key = origin
        letter = codec.encode_rejection(rejection, value, key, topic, partition, offset, self.clock_ms())
        self.outbox.add(owner, self.topics.dlq, codec.dead_letter_key(key), letter)
