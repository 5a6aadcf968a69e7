"""Throughput: the real worker against a bare aiokafka pipe over the same pre-loaded input.

The input (generated fills keyed by margin currency) is produced before anything starts. A read_committed
consumer of the output counts committed records; the steady rate is the records committed after the first
batch seen, divided by the time from that first batch to the last record. The end-to-end rate also counts
the process's start-up and first rebalance. The pipe is measured the same way, from the same input, in a
process of its own; then ``replay --topic`` folds the same input in process (state only).
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.generate import lines
from bench.harness import (
    BENCH_BALANCES,
    ROOT,
    BenchError,
    Topics,
    WorkerProcess,
    at_least,
    committed_consumer,
    create_topics,
    fill_ids_of,
    load_note,
    preload,
    spread,
)
from processor.codec import FillDecoder
from processor.config import Settings, fund_rules
from processor.domain.ledger import Ledger
from processor.pipeline import Pipeline
from processor.replay import OutputFiles
from processor.stream.replay import Start, replay_topic

WORKER_TARGET = 25_000
RATIO_TARGET = 0.5
REPLAY_TARGET = 100_000
STALL_SECONDS = 180.0


@dataclass(frozen=True)
class Arrivals:
    """When a read_committed consumer saw the output's records (monotonic seconds)."""

    started: float  # the process under test was started
    first: float  # the first committed batch arrived
    first_batch: int  # records in that batch
    last: float  # the last expected record arrived
    count: int

    @property
    def steady_seconds(self) -> float:
        return self.last - self.first

    @property
    def steady_rate(self) -> float:
        return (self.count - self.first_batch) / self.steady_seconds if self.steady_seconds > 0 else 0.0

    @property
    def total_seconds(self) -> float:
        return self.last - self.started

    @property
    def total_rate(self) -> float:
        return self.count / self.total_seconds


async def arrivals(
    bootstrap: str, topic: str, partitions: int, count: int, start: subprocess.Popen[bytes] | WorkerProcess
) -> Arrivals:
    """Start the process under test once the counting consumer is positioned, then count to ``count``."""
    consumer = await committed_consumer(bootstrap, topic, partitions)
    try:
        if isinstance(start, WorkerProcess):
            start.start()
            started, check = start.started_at, start.check_alive
        else:
            started = time.monotonic()
            process = start

            def check() -> None:
                if process.poll() not in (None, 0):
                    raise BenchError(f"the pipe exited with code {process.returncode}")

        seen = first_batch = 0
        first = progressed = now = started
        while seen < count:
            batch = await consumer.getmany(timeout_ms=100, max_records=50_000)
            now = time.monotonic()
            got = sum(len(records) for records in batch.values())
            if got:
                if not seen:
                    first, first_batch = now, got
                seen += got
                progressed = now
            elif now - progressed > STALL_SECONDS:
                check()
                raise BenchError(f"{topic}: {seen:,} of {count:,} records, none for {STALL_SECONDS:.0f} s")
            else:
                check()
        return Arrivals(started, first, first_batch, now, seen)
    finally:
        await consumer.stop()


def start_pipe(bootstrap: str, source: str, sink: str, count: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "bench.pipe", "--bootstrap", bootstrap, "--source", source]
    command += ["--sink", sink, "--group", f"{sink}-group", "--count", str(count)]
    return subprocess.Popen(command, cwd=ROOT)


async def topic_replay(bootstrap: str, topic: str, balances: str) -> float:
    """``replay --topic`` in process: read every partition to its end and fold, keeping only the state."""
    settings = Settings(bootstrap_servers=bootstrap, rules=fund_rules(initial_balances=balances))
    pipeline = Pipeline(FillDecoder.from_schema_dir(), Ledger(settings.rules))
    started = time.monotonic()
    await replay_topic(settings, pipeline, topic, Start(), OutputFiles())
    return time.monotonic() - started


async def run(
    bootstrap: str, suffix: str, count: int, partitions: int, scratch: Path, replay: bool = True
) -> None:
    topics = Topics("throughput", suffix)
    pipe_topic = f"bench-throughput-pipe-{suffix}"
    await create_topics(bootstrap, [*topics.all(), pipe_topic], partitions)
    print(f"\n== throughput: {count:,} fills keyed by currency, {partitions} partitions ==", flush=True)
    print(f"pre-loading {topics.input} ...", flush=True)
    per_partition = await preload(bootstrap, topics.input, lines(count))
    print(f"fills per partition: {spread(per_partition, partitions)}")

    worker = WorkerProcess(bootstrap, topics, partitions, scratch, worker_id=f"{topics.app_id}-w0")
    print(f"worker ({load_note()}) ...", flush=True)
    try:
        measured = await arrivals(bootstrap, topics.deltas, partitions, count, worker)
        async with aiohttp.ClientSession() as session:
            samples = await worker.metrics(session)
    finally:
        worker.stop()
    ids = await fill_ids_of(bootstrap, topics.deltas, partitions, count)
    total, distinct = sum(ids.values()), len(ids)
    if total != count or distinct != count:
        raise BenchError(
            f"{topics.deltas}: {total:,} committed deltas for {distinct:,} distinct fills, expected "
            f"{count:,} of each (lost or duplicated deltas)"
        )
    counters = ", ".join(
        f"{name} {samples[f'insurance_fund_{name}_total']:,.0f}"
        for name in ("events", "deltas", "forwarded", "batches")
        if f"insurance_fund_{name}_total" in samples
    )
    print(f"deltas checked: {total:,} committed, one per fill; worker /metrics: {counters or '-'}")

    print(f"bare pipe ({load_note()}) ...", flush=True)
    pipe = start_pipe(bootstrap, topics.input, pipe_topic, count)
    try:
        piped = await arrivals(bootstrap, pipe_topic, partitions, count, pipe)
        pipe.wait(60)
    finally:
        if pipe.poll() is None:
            pipe.kill()
            pipe.wait()

    replay_seconds, replay_failure = 0.0, ""
    if replay:
        try:
            replay_seconds = await topic_replay(bootstrap, topics.input, BENCH_BALANCES)
        except (SystemExit, Exception) as failure:  # a side figure: report it, keep the worker's
            replay_failure = f"{type(failure).__name__}: {failure}"

    ratio = measured.steady_rate / piped.steady_rate
    rows = [
        ("worker: first -> last committed delta (steady)", measured.steady_rate, measured.steady_seconds,
         f">= {WORKER_TARGET:,}: {at_least(measured.steady_rate, WORKER_TARGET)}"),
        ("worker: input -> committed deltas (incl. start-up)", measured.total_rate,
         measured.total_seconds, ""),
        ("bare aiokafka pipe: first -> last record (steady)", piped.steady_rate, piped.steady_seconds, ""),
        ("bare aiokafka pipe: incl. start-up", piped.total_rate, piped.total_seconds, ""),
    ]  # fmt: skip
    if replay and not replay_failure:
        replay_rate = count / replay_seconds
        rows.append(
            ("topic replay (replay --topic, state only)", replay_rate, replay_seconds,
             f">= {REPLAY_TARGET:,}: {at_least(replay_rate, REPLAY_TARGET)}")
        )  # fmt: skip
    print(f"\n{'path':<52}{'fills/s':>10}{'seconds':>9}   target")
    for name, rate, seconds, target in rows:
        print(f"{name:<52}{rate:>10,.0f}{seconds:>9.1f}   {target}")
    if replay_failure:
        print(f"{'topic replay (replay --topic, state only)':<52}FAILED: {replay_failure}")
    print(
        f"ratio worker / pipe (steady): {ratio:.2f}   "
        f"target >= {RATIO_TARGET}: {at_least(ratio, RATIO_TARGET)}"
    )
    print(
        f"(worker start-up to first committed delta: {measured.first - measured.started:.1f} s; "
        f"pipe: {piped.first - piped.started:.1f} s)"
    )
