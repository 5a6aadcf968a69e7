"""What the broker benchmarks share: the broker, fresh topics, the worker as a subprocess, verdicts.

Self-contained on purpose (nothing from ``tests/`` or ``soak/``): a benchmark must run from a bare checkout.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from processor import codec
from processor.stream.produce import key_of

ROOT = Path(__file__).resolve().parent.parent
BENCH_BALANCES = "USDT=100000000,USDC=100000000,BTC=10000,ETH=100000"
MIB = 1 << 20


class BenchError(RuntimeError):
    """Something is broken (lost deltas, a worker that died, a state that differs): not a slow figure."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def broker() -> Iterator[str]:
    """``KAFKA_BOOTSTRAP_SERVERS`` if set, else the local broker (started if needed)."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    subprocess.run(["bash", str(ROOT / "scripts" / "kafka.sh"), "up"], check=True)
    yield "127.0.0.1:" + os.environ.get("KAFKA_PORT", "9092")


# --- verdicts and statistics -------------------------------------------------------------------------


def at_least(value: float, target: float) -> str:
    return "met" if value >= target else f"MISSED by {(target - value) / target:.0%}"


def at_most(value: float, target: float) -> str:
    return "met" if value <= target else f"MISSED by {(value - target) / target:.0%}"


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (any order)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def load_note() -> str:
    """The machine's load, printed beside figures: the 2-core box is shared."""
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} cores, load average {one:.2f} (1 min) {five:.2f} (5 min)"


# --- topics ------------------------------------------------------------------------------------------


async def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


async def delete_topics_with(bootstrap: str, marker: str) -> None:
    """Delete every topic whose name holds ``marker`` (a run's random suffix: only this run's topics)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        doomed = [name for name in await admin.list_topics() if marker in name]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def preload(
    bootstrap: str, topic: str, messages: Iterable[bytes], report_every: int = 0
) -> Counter[int]:
    """Produce ``messages`` keyed by margin currency (idempotent); return the count per partition."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20, enable_idempotence=True
    )
    await producer.start()
    per_partition: Counter[int] = Counter()
    try:
        pending = []
        for sent, message in enumerate(messages, 1):
            pending.append(await producer.send(topic, value=message, key=key_of(message)))
            if len(pending) >= 20_000:
                per_partition.update(metadata.partition for metadata in await asyncio.gather(*pending))
                pending.clear()
            if report_every and sent % report_every == 0:
                print(f"  ... {sent:,} produced", flush=True)
        per_partition.update(metadata.partition for metadata in await asyncio.gather(*pending))
    finally:
        await producer.stop()
    return per_partition


def spread(per_partition: Counter[int], partitions: int) -> str:
    return " / ".join(f"{per_partition.get(partition, 0):,}" for partition in range(partitions))


async def committed_consumer(bootstrap: str, topic: str, partitions: int) -> AIOKafkaConsumer:
    """A read_committed consumer assigned to every partition of ``topic``, positioned at the beginning.

    ``fetch_max_wait_ms`` is short: aiokafka leaves a partition with buffered records out of the next
    fetch, so records arriving there wait for the fetch in flight on the other partitions, which the
    broker holds up to ``fetch_max_wait_ms`` (500 ms by default) when they have nothing new.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_wait_ms=5,
    )
    await consumer.start()
    tps = [TopicPartition(topic, partition) for partition in range(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    for tp in tps:
        await consumer.position(tp)  # resolve now, not on the first fetch
    return consumer


async def fill_ids_of(bootstrap: str, topic: str, partitions: int, expected: int) -> Counter[str]:
    """Every committed delta's ``fill_id`` with its count: read until ``expected`` are there and then
    nothing more arrives for two seconds (so extra, duplicated deltas are seen too)."""
    consumer = await committed_consumer(bootstrap, topic, partitions)
    ids: Counter[str] = Counter()
    try:
        quiet_since = time.monotonic()
        seen = 0
        while seen < expected or time.monotonic() - quiet_since < 2.0:
            if seen < expected and time.monotonic() - quiet_since > 30.0:
                break
            batch = await consumer.getmany(timeout_ms=200, max_records=20_000)
            for records in batch.values():
                for record in records:
                    ids[codec.loads(record.value)["fill_id"]] += 1
                    seen += 1
            if batch:
                quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return ids


# --- the worker as a subprocess ----------------------------------------------------------------------


@dataclass
class Topics:
    """One run's names: a fresh APP_ID and fresh topics, all holding ``suffix``."""

    phase: str
    suffix: str

    @property
    def app_id(self) -> str:
        return f"bench-{self.phase}-{self.suffix}"

    @property
    def input(self) -> str:
        return f"bench-{self.phase}-fills-{self.suffix}"

    @property
    def deltas(self) -> str:
        return f"bench-{self.phase}-deltas-{self.suffix}"

    @property
    def adl(self) -> str:
        return f"bench-{self.phase}-adl-{self.suffix}"

    @property
    def dlq(self) -> str:
        return f"bench-{self.phase}-dlq-{self.suffix}"

    def all(self) -> list[str]:
        return [self.input, self.deltas, self.adl, self.dlq]


@dataclass
class WorkerProcess:
    """``python -m processor worker`` with the bench's environment; the caller's own variables (BATCH_SIZE,
    BATCH_SECONDS, STORE, ...) pass through unless the bench sets them."""

    bootstrap: str
    topics: Topics
    partitions: int
    scratch: Path
    worker_id: str
    extra_env: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    started_at: float = 0.0
    runs: int = 0

    @property
    def log_path(self) -> Path:
        return self.scratch / f"{self.worker_id}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start (or restart) the worker: same APP_ID, WORKER_ID and data directory, a fresh HTTP port."""
        self.port = free_port()
        self.runs += 1
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "APP_ID": self.topics.app_id,
            "WORKER_ID": self.worker_id,
            "INPUT_TOPIC": self.topics.input,
            "DELTAS_TOPIC": self.topics.deltas,
            "ADL_TOPIC": self.topics.adl,
            "DLQ_TOPIC": self.topics.dlq,
            "TOPIC_PARTITIONS": str(self.partitions),
            "WEB_PORT": str(self.port),
            "DATA_DIR": str(self.scratch / f"data-{self.worker_id}"),
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "warning"),
            "FUND_INITIAL_BALANCES": BENCH_BALANCES,
            **self.extra_env,
        }
        log = self.log_path.open("ab")
        log.write(f"\n===== start #{self.runs} =====\n".encode())
        log.flush()
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "processor", "worker"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
        log.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise BenchError(f"the worker exited (code {code}); log tail:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(f"    | {line}" for line in text[-lines:])

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within 60 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()

    def memory(self) -> dict[str, int]:
        """VmHWM (peak RSS) and VmRSS in bytes, from /proc/<pid>/status."""
        found: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                found[name] = int(value.split()[0]) * 1024
        return found

    async def get(self, session: aiohttp.ClientSession, path: str) -> tuple[int, bytes]:
        """Status and body of GET ``path``; status 0 when nothing answers (yet)."""
        try:
            async with session.get(self.url + path, timeout=aiohttp.ClientTimeout(total=5)) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError):
            return 0, b""

    async def funds(self, session: aiohttp.ClientSession) -> dict[str, Any] | None:
        status, body = await self.get(session, "/funds")
        if status != 200:
            return None
        document = codec.loads(body)
        return document if isinstance(document, dict) else None

    async def wait_healthy(
        self, session: aiohttp.ClientSession, timeout: float, every: float = 0.02
    ) -> float:
        """Poll /health until 200; return the monotonic time it first answered 200."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            status, _ = await self.get(session, "/health")
            if status == 200:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise BenchError(
                    f"/health not 200 after {timeout:.0f} s (last status {status}); log tail:\n"
                    f"{self.log_tail()}"
                )
            await asyncio.sleep(every)

    async def metrics(self, session: aiohttp.ClientSession) -> dict[str, float]:
        """Every sample of /metrics by its name and labels (``name{label="x"}``); empty if none."""
        status, body = await self.get(session, "/metrics")
        samples: dict[str, float] = {}
        if status != 200:
            return samples
        for line in body.decode(errors="replace").splitlines():
            sample, _, value = line.rpartition(" ")
            if sample and not line.startswith("#"):
                try:
                    samples[sample] = float(value)
                except ValueError:
                    continue
        return samples


def fills_in(funds: Mapping[str, Any]) -> int:
    """Sum of ``fills`` over a /funds document."""
    return sum(int(state.get("fills", 0)) for state in funds.values() if isinstance(state, dict))
