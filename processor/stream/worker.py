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

from processor import native
from processor.codec import FillDecoder
from processor.config import ConfigError, Settings
from processor.domain.fold import exact_arithmetic
from processor.domain.ledger import Ledger
from processor.domain.state import FundState
from processor.pipeline import Pipeline
from processor.stream.book import FUNDS, SEEN, FundBook
from processor.stream.connect import wait_for_broker
from processor.stream.dashboard import Dashboard
from processor.stream.kafka import (
    TABLES,
    changelog_topic,
    client_options,
    prepare_topics,
    repartition_topic,
)
from processor.stream.membership import leave_group
from processor.stream.metrics import Metrics
from processor.stream.outbox import Outbox
from processor.stream.partitioning import home_partition
from processor.stream.tables import ChangelogReader, fill_store
from processor.stream.transactions import PartitionWork, Transactions
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
        self.book = FundBook(self.ledger, self._fund_home)
        self.transactions = Transactions(
            settings.app_id, settings.app_id, self.options, self._owns, settings.connect_timeout_seconds
        )
        self.outbox = Outbox(self.transactions)
        self.pipeline: Pipeline | None = None
        self.reader = ChangelogReader(self.options)
        self.view = FundsView(self.options, self.changelogs[FUNDS])
        self.metrics = Metrics(self.view.states, self.lag)
        self.dashboard = Dashboard.for_worker(self.view, self.options, settings)
        self.consumer: AIOKafkaConsumer | None = None
        self.lock = asyncio.Lock()  # held by a batch, and by the rebalance listener
        self.generation = 0  # bumped by every assignment change: batches fetched before are dropped
        self.owned: set[int] = set()
        self.positions: dict[TopicPartition, int] = {}  # next offset to process, per assigned partition
        self.committing: dict[int, asyncio.Future[None]] = {}  # partition -> its commit chain
        self.waiting: dict[int, tuple[PartitionWork, _Tally]] = {}  # work queued behind that chain
        self.state = "starting"
        self.reason: str | None = "starting"
        self.stopping = asyncio.Event()

    # --- what the HTTP views ask ---------------------------------------------------------------------

    def health(self) -> tuple[str, str | None]:
        if self.state == "ok" and self.transactions.trouble:
            return "recovering", "; ".join(sorted(self.transactions.trouble.values()))
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

    def _waiting_for_broker(self, message: str) -> None:
        self.reason = message

    def _home(self, currency: str) -> int:
        """The partition a currency's funds live on (SPEC section 7: pools too)."""
        return home_partition(currency, self.partitions)

    def _fund_home(self, fund: str) -> int:
        return home_partition(self.ledger.currency_of(fund) or fund, self.partitions)

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
            runner = await start_web(
                settings.web_host, settings.web_port, self.view, self, self.metrics, self.dashboard
            )
        except OSError as error:
            raise ConfigError(
                f"WEB_PORT: cannot listen on {settings.web_host}:{settings.web_port}"
                f" ({error.strerror or error}); is another worker using it?"
            ) from None
        log.info("%s", native.describe())
        try:
            self.reason = f"waiting for the broker at {settings.bootstrap_servers}"
            await wait_for_broker(settings, self._waiting_for_broker)
            self.reason = "joining the consumer group"
            counts = await prepare_topics(settings)
            self.partitions = counts[settings.input_topic]
            await self.transactions.start(counts)
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
                if self.committing and self.backlog() > batch_size:  # the broker is slower: let it catch up
                    await asyncio.wait(list(self.committing.values()), return_when=asyncio.FIRST_COMPLETED)
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
        try:
            await asyncio.wait_for(self.drain(), STOP_GRACE_SECONDS)
        except Exception as error:
            log.warning("waiting for the transactions in flight: %r", error)
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
            await self.drain()
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
                fenced = time.perf_counter()
                changelog_tps = [
                    TopicPartition(topic, partition)
                    for topic in self.changelogs.values()
                    for partition in new
                ]
                restoring = {partition: self.book.restoring(partition) for partition in new}
                tables = {topic: table for table, topic in self.changelogs.items()}
                async for tp, records in self.reader.stream(changelog_tps):
                    table, record = tables[tp.topic], restoring[tp.partition].record
                    for changelog_record in records:
                        if changelog_record.key is not None:
                            record(table, changelog_record.key, changelog_record.value)
                remembered = sum(restoring[partition].finish() for partition in sorted(new))
                self.owned |= new
                self.view.update(self.book.states())
                claimed = time.perf_counter()
                self.metrics.claim_seconds.set(claimed - started)
                self.metrics.restored_fills.set(remembered)
                log.info(
                    "claimed partitions %s: %d funds, %d fills in the duplicate windows, in %.2f s"
                    " (fencing %.2f s, restoring %.2f s)",
                    sorted(new),
                    len(self.book.states()),
                    remembered,
                    claimed - started,
                    fenced - started,
                    claimed - fenced,
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
            self.metrics.skipped_replayed.inc(applied + 1 - position)
            position = applied + 1
        return position

    # --- one batch -------------------------------------------------------------------------------------

    async def process(self, batch: Mapping[TopicPartition, list[Any]]) -> None:
        """Fold a batch and hand each partition's share to that partition's commit chain."""
        started = time.perf_counter()
        pipeline = self.pipeline
        assert pipeline is not None
        outbox, settings, owned = self.outbox, self.settings, self.owned
        add, process = outbox.add, pipeline.process
        deltas_topic, adl_topic, dlq_topic = settings.deltas_topic, settings.adl_topic, settings.dlq_topic
        repartition = self.repartition_topic
        tallies: dict[int, _Tally] = {}
        last_offsets: dict[int, dict[str, int]] = {}
        with exact_arithmetic():
            for tp, records in batch.items():
                topic, partition = tp.topic, tp.partition
                if partition not in owned:
                    continue
                rejected: Counter[str] = Counter()
                deltas = triggers = forwarded = duplicates = 0
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
                        if emitted.adl_state is not None:
                            add(partition, settings.adl_states_topic, fund.encode(), emitted.adl_state)
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
                tally = tallies.get(partition)
                if tally is None:
                    tally = tallies[partition] = _Tally()
                tally.add(len(records), deltas, triggers, forwarded, duplicates, rejected)
                last = records[-1].offset
                outbox.work(partition).offsets[tp] = last + 1
                last_offsets.setdefault(partition, {})[f"{topic}:{partition}"] = last
            for partition, offsets in last_offsets.items():
                writes, states = self.book.flush(partition, offsets)
                for table, key, value in writes:
                    add(partition, self.changelogs[table], key, value, partition)
                tallies[partition].states.update((state.fund, state) for state in states)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(sum(tally.events for tally in tallies.values()))
        for partition, work in outbox.take().items():
            self._enqueue(partition, work, tallies[partition])

    def _enqueue(self, partition: int, work: PartitionWork, tally: _Tally) -> None:
        """Commit ``work`` in ``partition``'s transaction as soon as the one in flight there is done.

        Each partition has at most one transaction in flight and one batch of work waiting (later
        batches merge into it: group commit), so a partition never waits for another's commit and
        the next batch is folded while the broker commits the last one. The state ledger runs ahead
        of what is committed meanwhile; only committed states reach the views, and a failed
        transaction ends the process, so nothing uncommitted is ever acted on.
        """
        waiting = self.waiting.get(partition)
        if waiting is not None:
            waiting[0].merge(work)
            waiting[1].merge(tally)
            return
        if partition in self.committing:
            self.waiting[partition] = (work, tally)
            return
        self.committing[partition] = asyncio.ensure_future(self._commit_chain(partition, work, tally))

    async def _commit_chain(self, partition: int, work: PartitionWork, tally: _Tally) -> None:
        metrics = self.metrics
        try:
            while True:
                started = time.perf_counter()
                await self.transactions.commit(partition, work)
                metrics.commit_seconds.observe(time.perf_counter() - started)
                for tp, position in work.offsets.items():
                    self.positions[tp] = position
                self.view.update(tally.states.values())
                tally.publish(metrics)
                waiting = self.waiting.pop(partition, None)
                if waiting is None:
                    break
                work, tally = waiting
        except Exception:
            log.exception("the transaction of partition %d failed", partition, extra={"partition": partition})
            die("a transaction failed")
        finally:
            self.committing.pop(partition, None)

    def backlog(self) -> int:
        """Records waiting for a partition's transaction in flight to finish."""
        return sum(work.size for work, _ in self.waiting.values())

    async def drain(self) -> None:
        """Wait until every partition's work so far has committed."""
        while self.committing:
            await asyncio.gather(*list(self.committing.values()))


class _Tally:
    """What a partition's transaction commits, for the metrics and views once it has committed."""

    __slots__ = ("adl_triggers", "deltas", "duplicates", "events", "forwarded", "rejected", "states")

    def __init__(self) -> None:
        self.events = self.deltas = self.adl_triggers = self.forwarded = self.duplicates = 0
        self.rejected: Counter[str] = Counter()
        self.states: dict[str, FundState] = {}

    def add(
        self, events: int, deltas: int, triggers: int, forwarded: int, duplicates: int, rejected: Counter[str]
    ) -> None:
        self.events += events
        self.deltas += deltas
        self.adl_triggers += triggers
        self.forwarded += forwarded
        self.duplicates += duplicates
        self.rejected.update(rejected)

    def merge(self, other: _Tally) -> None:
        self.add(
            other.events, other.deltas, other.adl_triggers, other.forwarded, other.duplicates, other.rejected
        )
        self.states.update(other.states)

    def publish(self, metrics: Metrics) -> None:
        metrics.events.inc(self.events)
        metrics.deltas.inc(self.deltas)
        metrics.adl_triggers.inc(self.adl_triggers)
        metrics.forwarded.inc(self.forwarded)
        metrics.duplicates.inc(self.duplicates)
        for reason, count in self.rejected.items():
            metrics.rejected.labels(reason).inc(count)
        metrics.batches.inc()


class _Rebalance(ConsumerRebalanceListener):
    """Partitions change hands between batches only; a failed claim ends the process."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self.worker.lock:  # the batch in flight has been folded ...
            await self.worker.drain()  # ... and committed
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
