"""``make bench``: end-to-end worker throughput against a bare aiokafka pipe, on the same broker.

Pre-loads the input topic, starts the real worker (``python -m processor worker``) and times until
the last delta is committed downstream; then times a bare consume -> produce pipe over the same
messages. Prints both and their ratio. Uses ``KAFKA_BOOTSTRAP_SERVERS`` or starts the local broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.generate import lines
from processor.codec import FillDecoder
from processor.config import Settings, fund_rules
from processor.domain.ledger import Ledger
from processor.pipeline import Pipeline
from processor.replay import OutputFiles
from processor.stream.produce import key_of
from processor.stream.replay import Start, replay_topic

ROOT = Path(__file__).resolve().parent.parent
BENCH_BALANCES = "USDT=100000000,USDC=100000000,BTC=10000,ETH=100000"
BENCH_RULES = fund_rules(initial_balances=BENCH_BALANCES)
FILL_TARGET = 20_000
RATIO_TARGET = 0.3
REPLAY_TARGET = 100_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def broker() -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    subprocess.run(["bash", str(ROOT / "scripts" / "kafka.sh"), "up"], check=True)
    yield "127.0.0.1:" + os.environ.get("KAFKA_PORT", "9092")


async def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        await admin.close()


async def preload(bootstrap: str, topic: str, messages: list[bytes]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20, enable_idempotence=True
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value=m, key=key_of(m)) for m in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def count_until(
    bootstrap: str, topic: str, partitions: int, expected: int, timeout: float
) -> tuple[float, float]:
    """Consume ``topic`` (read_committed) until ``expected`` records are there; return when the first
    and the last arrived."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        first = 0.0
        deadline = time.monotonic() + timeout
        while seen < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: {seen} of {expected} records after {timeout}s")
            batch = await consumer.getmany(timeout_ms=100, max_records=50_000)
            got = sum(len(records) for records in batch.values())
            if got and not seen:
                first = time.monotonic()
            seen += got
        return first, time.monotonic()
    finally:
        await consumer.stop()


async def bare_pipe(bootstrap: str, source: str, sink: str, partitions: int, expected: int) -> float:
    """Consume every input message and produce it unchanged: the floor for any Kafka processor."""
    consumer = AIOKafkaConsumer(
        source, bootstrap_servers=bootstrap, group_id=f"pipe-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest", enable_auto_commit=True, max_poll_records=10_000,
    )  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20)
    await consumer.start()
    await producer.start()
    started = time.monotonic()
    try:
        moved = 0
        pending = []
        while moved < expected:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for records in batch.values():
                for record in records:
                    pending.append(await producer.send(sink, value=record.value, key=record.key))
            moved += sum(len(records) for records in batch.values())
            if len(pending) > 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        await count_until(bootstrap, sink, partitions, expected, timeout=600)
        return time.monotonic() - started
    finally:
        await producer.stop()
        await consumer.stop()


async def topic_replay(bootstrap: str, topic: str) -> float:
    """``replay --topic`` in process: read every partition to its end and fold, keeping only the state."""
    settings = Settings(bootstrap_servers=bootstrap, rules=BENCH_RULES)
    pipeline = Pipeline(FillDecoder.from_schema_dir(), Ledger(settings.rules))
    started = time.monotonic()
    await replay_topic(settings, pipeline, topic, Start(), OutputFiles())
    return time.monotonic() - started


def run_worker(
    bootstrap: str, suffix: str, partitions: int, scratch: Path, name: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "APP_ID": f"bench-{suffix}",
        "INPUT_TOPIC": f"bench-fills-{suffix}",
        "DELTAS_TOPIC": f"bench-deltas-{suffix}",
        "ADL_TOPIC": f"bench-adl-{suffix}",
        "DLQ_TOPIC": f"bench-dlq-{suffix}",
        "TOPIC_PARTITIONS": str(partitions),
        "WEB_PORT": str(free_port()),
        "DATA_DIR": str(scratch / f"data-{name}"),
        "LOG_LEVEL": "warning",
        "FUND_INITIAL_BALANCES": BENCH_BALANCES,
    }
    log = (scratch / f"worker-{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "processor", "worker"], cwd=ROOT, env=env, stdout=log, stderr=log
    )


async def main_async(count: int, partitions: int, workers: int) -> None:
    suffix = uuid.uuid4().hex[:8]
    messages = list(lines(count))
    with broker() as bootstrap, tempfile.TemporaryDirectory() as scratch:
        source, deltas, pipe = f"bench-fills-{suffix}", f"bench-deltas-{suffix}", f"bench-pipe-{suffix}"
        await create_topics(bootstrap, [source, deltas, pipe], partitions)
        print(f"pre-loading {count:,} fills into {source} ({partitions} partitions) ...", flush=True)
        await preload(bootstrap, source, messages)

        running = [run_worker(bootstrap, suffix, partitions, Path(scratch), f"w{n}") for n in range(workers)]
        started = time.monotonic()
        try:
            first, finished = await count_until(bootstrap, deltas, partitions, count, timeout=1800)
        finally:
            for worker in running:
                worker.send_signal(signal.SIGTERM)
            for worker in running:
                worker.wait(60)
        worker_seconds = finished - started  # includes the worker's start-up and first rebalance
        steady_seconds = finished - first  # from the first committed delta to the last

        pipe_seconds = await bare_pipe(bootstrap, source, pipe, partitions, count)
        replay_seconds = await topic_replay(bootstrap, source)

    worker_rate, pipe_rate, steady_rate = count / worker_seconds, count / pipe_seconds, count / steady_seconds
    rows = [
        ("worker: input -> committed deltas (incl. start-up)", worker_rate, worker_seconds),
        ("worker: first -> last committed delta (steady)", steady_rate, steady_seconds),
        ("bare aiokafka consume -> produce pipe", pipe_rate, pipe_seconds),
        ("topic replay (replay --topic, state only)", count / replay_seconds, replay_seconds),
    ]
    print(f"\n{'path':<52}{'fills/s':>10}{'seconds':>10}")
    for name, rate, seconds in rows:
        print(f"{name:<52}{rate:>10,.0f}{seconds:>10.1f}")
    print(f"\nratio worker (steady) / pipe: {steady_rate / pipe_rate:.2f} (target >= {RATIO_TARGET})")
    print(f"worker (steady) vs target:    {steady_rate / FILL_TARGET:.2f} of {FILL_TARGET:,} fills/s")
    print(
        f"topic replay vs target:       {count / replay_seconds / REPLAY_TARGET:.2f} "
        f"of {REPLAY_TARGET:,} fills/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes (one per core is the useful most)"
    )
    args = parser.parse_args()
    asyncio.run(main_async(args.count, args.partitions, args.workers))


if __name__ == "__main__":
    main()
