"""Latency: a fill handed to the producer -> its delta committed and seen downstream, on a running worker.

One bench process runs a paced producer of fills and a read_committed consumer of the deltas topic, so
both times come from the same monotonic clock: a fill's latency is the time the consumer received the
delta with its ``fill_id`` minus the time the fill was handed to ``producer.send``. Each offered rate runs
for a fixed time after a warm-up; everything sent is drained before the next rate starts.

The floor, measured in the same run on the same broker: one Kafka transaction of 10 records (begin, send
10, ``send_offsets_to_transaction``, commit) with aiokafka. The worker pays at least that once per batch,
plus the fetch of the input and the fetch of the committed delta.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.harness import (
    BenchError,
    Topics,
    WorkerProcess,
    at_most,
    committed_consumer,
    create_topics,
    load_note,
    percentile,
)
from processor import codec
from processor.simulate import fills
from processor.stream.produce import key_of

P99_TARGET_MS = 50.0
TARGET_RATE = 1_000
FLOOR_RECORDS = 10
DRAIN_SECONDS = 60.0

Fill = tuple[str, bytes, bytes | None]  # fill_id, value, key


class RetriedSends(logging.Filter):
    """Counts the produce requests aiokafka retries (and keeps their warnings off the bench's output)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "retrying" in record.getMessage():
            self.count += 1
            return False
        return True


def feed(count: int) -> Iterator[Fill]:
    for fill in fills(count):
        value = codec.dumps(fill)
        yield str(fill["fill_id"]), value, key_of(value)


async def transaction_floor(
    bootstrap: str, topic: str, rounds: int, retry_backoff_ms: int = 100, warmup: int = 20
) -> tuple[list[float], int]:
    """Seconds per transaction of ``FLOOR_RECORDS`` records with offsets, as a worker's batch commits.

    Back to back, as a busy worker commits. A transaction begun while the broker still writes the
    previous one's markers is refused with a retriable error (CONCURRENT_TRANSACTIONS, which the broker
    shows older produce requests as NOT_ENOUGH_REPLICAS) and retried after ``retry_backoff_ms``: that
    back-off (aiokafka's default is 100 ms) is the tail of the default floor. Returns the timings and
    the produce requests retried.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=f"{topic}-floor-{retry_backoff_ms}",
        enable_idempotence=True,
        acks="all",
        retry_backoff_ms=retry_backoff_ms,
    )
    retried = RetriedSends()
    sender = logging.getLogger("aiokafka.producer.sender")
    sender.addFilter(retried)
    await producer.start()
    values = [value for _, value, _ in feed(FLOOR_RECORDS)]
    tp = TopicPartition(topic, 0)
    timings = []
    try:
        await producer.partitions_for(topic)  # the new topic's metadata, before the clock starts
        for round_number in range(warmup + rounds):
            started = time.monotonic()
            await producer.begin_transaction()
            for value in values:
                await producer.send(topic, value=value, partition=0)
            await producer.send_offsets_to_transaction({tp: round_number + 1}, f"{topic}-floor-group")
            await producer.commit_transaction()
            if round_number >= warmup:
                timings.append(time.monotonic() - started)
    finally:
        await producer.stop()
        sender.removeFilter(retried)
    return timings, retried.count


class Probe:
    """The paced producer and the delta consumer, sharing one clock."""

    def __init__(
        self, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer, topic: str, fills: Iterator[Fill]
    ) -> None:
        self.producer, self.consumer, self.topic, self.fills = producer, consumer, topic, fills
        self.received: dict[str, float] = {}

    async def receive(self) -> None:
        loads, received = codec.loads, self.received
        while True:
            batch = await self.consumer.getmany(timeout_ms=100)
            now = time.monotonic()
            for records in batch.values():
                for record in records:
                    received[loads(record.value)["fill_id"]] = now

    async def offer(self, rate: float, seconds: float) -> tuple[dict[str, float], float]:
        """Send ``rate * seconds`` fills on a fixed schedule; return their send times and the rate."""
        count = round(rate * seconds)
        sent: dict[str, float] = {}
        futures = []
        started = last = time.monotonic()
        for number in range(count):
            delay = started + number / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            fill_id, value, key = next(self.fills)
            last = sent[fill_id] = time.monotonic()
            futures.append(await self.producer.send(self.topic, value=value, key=key))
        await asyncio.gather(*futures)
        return sent, count / (last - started) if last > started else 0.0

    async def drain(self, sent: dict[str, float], worker: WorkerProcess) -> list[float]:
        """Wait for every sent fill's delta; return the latencies in seconds."""
        deadline = time.monotonic() + DRAIN_SECONDS
        while missing := [fill_id for fill_id in sent if fill_id not in self.received]:
            worker.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{len(missing):,} of {len(sent):,} fills have no committed delta after "
                    f"{DRAIN_SECONDS:.0f} s (first: {missing[0]})"
                )
            await asyncio.sleep(0.1)
        return [self.received[fill_id] - at for fill_id, at in sent.items()]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


async def run(
    bootstrap: str,
    suffix: str,
    partitions: int,
    scratch: Path,
    rates: list[int],
    seconds: float,
    warmup_seconds: float,
    floor_rounds: int = 200,
) -> None:
    topics = Topics("latency", suffix)
    floor_topic = f"bench-latency-floor-{suffix}"
    await create_topics(bootstrap, topics.all(), partitions)
    await create_topics(bootstrap, [floor_topic], 1)
    print(
        f"\n== latency: fill -> committed delta, {partitions} partitions, rates {rates} fills/s ==",
        flush=True,
    )
    print(f"floor: {floor_rounds} transactions of {FLOOR_RECORDS} records ({load_note()}) ...", flush=True)
    floors = [
        (
            f"retry_backoff_ms={backoff}",
            await transaction_floor(bootstrap, floor_topic, floor_rounds, backoff),
        )
        for backoff in (100, 10)
    ]

    worker = WorkerProcess(bootstrap, topics, partitions, scratch, worker_id=f"{topics.app_id}-w0")
    worker.start()
    total = round(sum(rates) * seconds + rates[0] * warmup_seconds)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=0)
    consumer = await committed_consumer(bootstrap, topics.deltas, partitions)
    await producer.start()
    receiving: asyncio.Task[None] | None = None
    results: list[tuple[int, float, list[float], dict[str, float]]] = []
    try:
        async with aiohttp.ClientSession() as session:
            ready = await worker.wait_healthy(session, timeout=600)
            print(f"worker ready {ready - worker.started_at:.1f} s after start", flush=True)
            probe = Probe(producer, consumer, topics.input, feed(total))
            receiving = asyncio.create_task(probe.receive())
            print(f"warm-up: {warmup_seconds:.0f} s at {rates[0]:,} fills/s ...", flush=True)
            sent, _ = await probe.offer(rates[0], warmup_seconds)
            await probe.drain(sent, worker)
            for rate in rates:
                print(f"{rate:,} fills/s for {seconds:.0f} s ({load_note()}) ...", flush=True)
                before = await worker.metrics(session)
                sent, achieved = await probe.offer(rate, seconds)
                latencies = await probe.drain(sent, worker)
                after = await worker.metrics(session)
                results.append((rate, achieved, latencies, batch_figures(before, after)))
    finally:
        if receiving is not None:
            receiving.cancel()
        await producer.stop()
        await consumer.stop()
        worker.stop()

    print(f"\n{'path':<56}{'fills/s':>9}{'n':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}   target")
    for setting, (floor, retried) in floors:
        print(
            f"{f'floor: 1 transaction of 10 records, {setting}':<56}{'':>9}{len(floor):>8}"
            f"{ms(percentile(floor, 50)):>9}{ms(percentile(floor, 99)):>9}{ms(max(floor)):>9}"
            f"   ({retried} sends retried)"
        )
    for rate, achieved, latencies, _ in results:
        p99 = percentile(latencies, 99)
        target = (
            f"p99 <= {P99_TARGET_MS:.0f} ms: {at_most(p99 * 1000, P99_TARGET_MS)}"
            if rate == TARGET_RATE
            else ""
        )
        print(
            f"{f'worker: fill -> committed delta @ {rate:,}/s':<56}{achieved:>9,.0f}{len(latencies):>8}"
            f"{ms(percentile(latencies, 50)):>9}{ms(p99):>9}{ms(max(latencies)):>9}   {target}"
        )
    if any(figures for *_, figures in results):
        print("\nthe worker's own view (/metrics, over each rate): batches, mean events per batch, mean ms")
        for rate, *_, figures in results:
            shown = "  ".join(f"{name} {value:,.1f}" for name, value in figures.items())
            print(f"  @ {rate:,}/s: {shown}")


def batch_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Batches, mean batch size, mean batch and commit milliseconds between two /metrics scrapes."""

    def grown(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    batches = grown("insurance_fund_batch_seconds_count")
    if batches <= 0:
        return {}
    figures = {"batches": batches, "events/batch": grown("insurance_fund_batch_size_sum") / batches}
    figures["batch ms"] = 1000 * grown("insurance_fund_batch_seconds_sum") / batches
    commits = grown("insurance_fund_commit_seconds_count")
    if commits > 0:
        figures["transactions"] = commits
        figures["commit ms"] = 1000 * grown("insurance_fund_commit_seconds_sum") / commits
    return figures
