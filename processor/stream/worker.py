"""The worker: a consumer group member that folds batches of fills exactly once.

One ``read_committed`` consumer in the app's group reads the input topic and the re-partition topic
(``getmany``, up to ``BATCH_SIZE`` records). Each batch goes through the shared handler
(``processor.pipeline``); per partition number it touched, one Kafka transaction carries the outputs,
the touched funds' changelog records and the consumed offsets (``transactions.py``). Offsets are
written by those transactions only.

Partitions change hands only between batches: the rebalance listener waits for the batch in flight.
A partition taken over is *claimed* before any of its input is read: its transactional producer
is initialised (fencing the previous owner), its funds and duplicate window are restored from the
changelogs, and the consumer is positioned at the group's committed offset.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from processor.codec import FillDecoder
from processor.config import ConfigError, Settings
from processor.domain.fold import exact_arithmetic
from processor.domain.ledger import Ledger
from processor.pipeline import Pipeline
from processor.stream.book import FUNDS, SEEN, FundBook
from processor.stream.kafka import (
    TABLES,
    changelog_topic,
    client_options,
    partition_counts,
    prepare_topics,
    repartition_topic,
)
from processor.stream.membership import leave_group
from processor.stream.metrics import Metrics
from processor.stream.outbox import Outbox
from processor.stream.partitioning import home_partition
from processor.stream.tables import ChangelogReader, fill_store
from processor.stream.transactions import Transactions
from processor.stream.view import FundsView
from processor.stream.web import start_web

log = logging.getLogger(__name__)

EXIT_BATCH_FAILED = 70
SESSION_TIMEOUT_MS = 10_000  # a killed worker's partitions move after 10 s (unless it is back sooner)
HEARTBEAT_INTERVAL_MS = 1_000
STOP_GRACE_SECONDS = 30.0
FETCH_MAX_WAIT_MS = 10


def die(reason: str) -> NoReturn:
    """End the process without committing anything more; the next owner re-reads what is uncommitted."""
    log.critical("exiting without committing the current batch: %s", reason)
    logging.shutdown()
    os._exit(EXIT_BATCH_FAILED)


class Worker:
    """Everything one worker process runs: the consumer loop, the claims, the views."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.options = client_options(settings)
        self.input_topic = settings.input_topic
        self.repartition_topic = repartition_topic(settings)
        self.changelogs = {
            FUNDS: changelog_topic(settings, TABLES[0]),
            SEEN: changelog_topic(settings, TABLES[1]),
        }
        self.partitions = 0  # the input's partition count, known after prepare
        self.member_id = settings.member_id(socket.gethostname())
        store, self.close_store = fill_store(
            settings.store, settings.data_dir / f"{settings.app_id}-{self.member_id}"
        )
        self.ledger = Ledger(settings.rules, settings.duplicate_window_ms, store)
        self.book = FundBook(self.ledger, self._home)
        self.transactions = Transactions(settings.app_id, settings.app_id, self.options, self._owns)
        self.outbox = Outbox(self.transactions)
        self.pipeline: Pipeline | None = None
        self.reader = ChangelogReader(self.options)
        self.view = FundsView(self.options, self.changelogs[FUNDS])
        self.metrics = Metrics(self.view.states, self.lag)
        self.consumer: AIOKafkaConsumer | None = None
        self.lock = asyncio.Lock()  # held by a batch, and by the rebalance listener
        self.generation = 0  # bumped by every assignment change: batches fetched before are dropped
        self.owned: set[int] = set()
        self.positions: dict[TopicPartition, int] = {}  # next offset to process, per assigned partition
        self.state = "starting"
        self.reason: str | None = "joining the consumer group"
        self.stopping = asyncio.Event()

    # --- what the HTTP views ask ---------------------------------------------------------------------

    def health(self) -> tuple[str, str | None]:
        return ("ok", None) if self.state == "ok" else (self.state, self.reason)

    def lag(self) -> dict[str, int]:
        consumer = self.consumer
        lag: dict[str, int] = {}
        if consumer is None:
            return lag
        for tp, position in list(self.positions.items()):
            stable = consumer.last_stable_offset(tp)
            if stable is not None:
                lag[f"{tp.topic}:{tp.partition}"] = max(int(stable) - position, 0)
        return lag

    def _home(self, fund: str) -> int:
        return home_partition(fund, self.partitions)

    def _owns(self, partition: int) -> bool:
        return partition in self.owned

    # --- life cycle ------------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; return the exit code."""
        settings = self.settings
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        try:
            runner = await start_web(settings.web_host, settings.web_port, self.view, self, self.metrics)
        except OSError as error:
            raise ConfigError(
                f"WEB_PORT: cannot listen on {settings.web_host}:{settings.web_port}"
                f" ({error.strerror or error}); is another worker using it?"
            ) from None
        try:
            self.partitions = await prepare_topics(settings)
            outputs = [
                self.repartition_topic,
                settings.deltas_topic,
                settings.adl_topic,
                settings.dlq_topic,
                *self.changelogs.values(),
            ]
            await self.transactions.start(await partition_counts(settings, outputs))
            self.pipeline = Pipeline(
                FillDecoder.from_schema_dir(), self.ledger, home=self._home, routed_topic=self.input_topic
            )
            await self.view.start()
            await self.reader.start()
            consumer = self.consumer = AIOKafkaConsumer(
                **self.options,
                group_id=settings.app_id,
                group_instance_id=self.member_id,
                client_id=f"{settings.app_id}-{self.member_id}",
                isolation_level="read_committed",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                partition_assignment_strategy=(RangePartitionAssignor,),
                session_timeout_ms=SESSION_TIMEOUT_MS,
                heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
                max_partition_fetch_bytes=4 << 20,
                fetch_max_bytes=64 << 20,
                # aiokafka leaves a partition with buffered records out of the next fetch, so new
                # input on it waits for the fetch in flight elsewhere: keep that wait short.
                fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            )
            consumer.subscribe([self.input_topic, self.repartition_topic], listener=_Rebalance(self))
            await consumer.start()
            await self._consume(consumer)
        finally:
            await self._shutdown(runner)
        return 0

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        timeout_ms = max(1, int(self.settings.batch_seconds * 1000))
        batch_size = self.settings.batch_size
        stopping = asyncio.ensure_future(self.stopping.wait())
        try:
            while not self.stopping.is_set():
                generation = self.generation
                fetch = asyncio.ensure_future(consumer.getmany(timeout_ms=timeout_ms, max_records=batch_size))
                await asyncio.wait([fetch, stopping], return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    fetch.cancel()
                    break
                batch = fetch.result()
                if not batch:
                    continue
                log.debug(
                    "batch of generation %d: %s",
                    generation,
                    {str(tp): (records[0].offset, records[-1].offset) for tp, records in batch.items()},
                )
                async with self.lock:
                    if generation != self.generation:
                        self._rewind(consumer)  # fetched across a rebalance: read it again
                        continue
                    try:
                        await self.process(batch)
                    except Exception:
                        log.exception("processing a batch failed")
                        die("a batch failed")
        finally:
            stopping.cancel()

    def _rewind(self, consumer: AIOKafkaConsumer) -> None:
        """Position every assigned partition at the next offset to process (a dropped batch had moved it)."""
        for tp in consumer.assignment():
            position = self.positions.get(tp)
            if position is not None:
                consumer.seek(tp, position)

    async def _shutdown(self, runner: Any) -> None:
        self.state, self.reason = "stopping", "shutting down"
        if self.consumer is not None:
            try:
                await asyncio.wait_for(self.consumer.stop(), STOP_GRACE_SECONDS)
            except Exception as error:  # the broker may be gone: nothing is left to commit anyway
                log.warning("stopping the consumer: %r", error)
            try:  # a static member leaves only when told to: hand the partitions over now
                await asyncio.wait_for(leave_group(self.options, self.settings.app_id, self.member_id), 10)
            except Exception as error:
                log.warning("leaving the group: %r (its partitions move after the session timeout)", error)
        for closing in (self.transactions.stop(), self.reader.stop(), self.view.stop()):
            try:
                await asyncio.wait_for(closing, STOP_GRACE_SECONDS)
            except Exception as error:
                log.warning("stopping: %r", error)
        await runner.cleanup()
        self.close_store()

    # --- partitions changing hands ---------------------------------------------------------------------

    async def assigned(self, assigned: Iterable[TopicPartition]) -> None:
        """Release what was lost, claim what is new, position every assigned partition."""
        consumer = self.consumer
        assert consumer is not None
        async with self.lock:
            self.generation += 1
            self.metrics.rebalances.inc()
            tps = sorted(set(assigned))
            numbers = {tp.partition for tp in tps}
            lost = self.owned - numbers
            new = numbers - self.owned
            self.state, self.reason = "recovering", f"claiming partitions {sorted(new)}"
            for partition in lost:
                self.book.release(partition)
            await self.transactions.release(lost)
            self.owned -= lost
            started = time.perf_counter()
            if new:
                await self.transactions.claim(new)
                changelog_tps = [
                    TopicPartition(topic, partition)
                    for topic in self.changelogs.values()
                    for partition in new
                ]
                restored = await self.reader.read(changelog_tps)
                remembered = 0
                for partition in sorted(new):
                    funds = restored[TopicPartition(self.changelogs[FUNDS], partition)]
                    seen = restored[TopicPartition(self.changelogs[SEEN], partition)]
                    remembered += self.book.restore(partition, funds, seen)
                self.owned |= new
                self.view.update(self.book.states())
                log.info(
                    "claimed partitions %s: %d funds, %d fills in the duplicate windows, in %.2f s",
                    sorted(new),
                    len(self.book.states()),
                    remembered,
                    time.perf_counter() - started,
                )
            positions, self.positions = self.positions, {}
            for tp in tps:
                if tp.partition not in new and tp in positions:
                    # Kept through the rebalance: our own position is the truth. The group's committed
                    # offset may not show our last transaction yet (aiokafka cannot ask for stable
                    # offsets, KIP-447), and reading from there would fold that batch twice.
                    position = positions[tp]
                else:
                    position = await self._committed_position(consumer, tp)
                consumer.seek(tp, position)
                self.positions[tp] = position
            self.metrics.owned_partitions.set(len(self.owned))
            self.generation += 1  # what was fetched while claiming is read again, from these positions
            self.state, self.reason = "ok", None

    async def _committed_position(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> int:
        """Where a claimed partition resumes: the group's committed offset, stable now that the claim
        has fenced the previous owner (its last transaction has completed or been aborted)."""
        committed = await consumer.committed(tp)
        applied = self.book.applied_offsets(tp.partition).get(f"{tp.topic}:{tp.partition}", -1)
        position = committed if committed is not None else 0
        if applied + 1 > position:  # only our transactions move both, together: never expected
            log.warning("%s: committed offset %s is behind the applied offset %d", tp, committed, applied)
            position = applied + 1
        return position

    # --- one batch -------------------------------------------------------------------------------------

    async def process(self, batch: Mapping[TopicPartition, list[Any]]) -> None:
        """Fold a batch and commit it: one transaction per partition number it touched."""
        started = time.perf_counter()
        pipeline = self.pipeline
        assert pipeline is not None
        outbox, settings, owned = self.outbox, self.settings, self.owned
        add, process = outbox.add, pipeline.process
        deltas_topic, adl_topic, dlq_topic = settings.deltas_topic, settings.adl_topic, settings.dlq_topic
        repartition = self.repartition_topic
        rejected: Counter[str] = Counter()
        last_offsets: dict[int, dict[str, int]] = {}
        events = deltas = triggers = forwarded = duplicates = 0
        with exact_arithmetic():
            for tp, records in batch.items():
                topic, partition = tp.topic, tp.partition
                if partition not in owned:
                    continue
                for record in records:
                    emitted = process(
                        record.value, record.key, topic, partition, record.offset, record.headers
                    )
                    fund = emitted.fund or ""
                    if emitted.delta is not None:
                        deltas += 1
                        add(partition, deltas_topic, fund.encode(), emitted.delta)
                        if emitted.trigger is not None:
                            triggers += 1
                            add(partition, adl_topic, (emitted.symbol or "").encode(), emitted.trigger)
                    elif emitted.forward is not None:
                        forwarded += 1
                        add(
                            partition,
                            repartition,
                            fund.encode(),
                            emitted.forward,
                            emitted.home,
                            emitted.headers,
                        )
                    elif emitted.dead_letter is not None:
                        rejected[emitted.error or ""] += 1
                        add(partition, dlq_topic, emitted.dead_letter_key, emitted.dead_letter)
                    else:
                        duplicates += 1
                events += len(records)
                last = records[-1].offset
                outbox.work(partition).offsets[tp] = last + 1
                last_offsets.setdefault(partition, {})[f"{topic}:{partition}"] = last
            for partition, offsets in last_offsets.items():
                for table, key, value in self.book.flush(partition, offsets):
                    add(partition, self.changelogs[table], key, value, partition)
        commit_started = time.perf_counter()
        await self.transactions.commit(outbox.take())
        finished = time.perf_counter()
        for tp, records in batch.items():
            if tp.partition in owned:
                self.positions[tp] = records[-1].offset + 1
        self.view.update(self.book.states())
        metrics = self.metrics
        metrics.events.inc(events)
        metrics.deltas.inc(deltas)
        metrics.adl_triggers.inc(triggers)
        metrics.forwarded.inc(forwarded)
        metrics.duplicates.inc(duplicates)
        for reason, count in rejected.items():
            metrics.rejected.labels(reason).inc(count)
        metrics.batches.inc()
        metrics.batch_size.observe(events)
        metrics.commit_seconds.observe(finished - commit_started)
        metrics.batch_seconds.observe(finished - started)


class _Rebalance(ConsumerRebalanceListener):
    """Partitions change hands between batches only; a failed claim ends the process."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self.worker.lock:  # the batch in flight has committed
            self.worker.generation += 1
            self.worker.state, self.worker.reason = "recovering", "rebalancing"

    async def on_partitions_assigned(self, assigned: Any) -> None:
        try:
            await self.worker.assigned(assigned)
        except Exception:
            log.exception("claiming partitions %s failed", sorted(assigned))
            die("claiming partitions failed")


def run_worker(settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(Worker(settings).run())
