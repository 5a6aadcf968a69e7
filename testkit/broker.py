"""Where the tests and the soak get a real Kafka broker, and small aiokafka helpers to drive it.

``KAFKA_BOOTSTRAP_SERVERS`` if set; else a testcontainers Kafka when a Docker engine answers; else the
project's own jar broker (``scripts/kafka.sh``) on free ports in a private directory.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
KAFKA_IMAGE = "apache/kafka:4.0.0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


class JarBroker:
    """``scripts/kafka.sh`` on free ports with its data under ``home``: started, stopped and started
    again (same ports, same data) at will."""

    def __init__(self, home: Path, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "KAFKA_HOME_DIR": str(home),
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(free_port()),
            **(extra_env or {}),
        }

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def up(self) -> None:
        self._script("up", check=True)

    def down(self, *, purge: bool = False) -> None:
        self._script("down", *(["--purge"] if purge else []), check=not purge)

    def _script(self, *args: str, check: bool) -> None:
        subprocess.run(["bash", str(ROOT / "scripts" / "kafka.sh"), *args], env=self.env, check=check)


@contextmanager
def jar_broker(home: Path, extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``scripts/kafka.sh`` with its data under ``home``; yield the bootstrap address."""
    broker = JarBroker(home, extra_env)
    broker.up()
    try:
        yield broker.bootstrap
    finally:
        broker.down(purge=True)


@contextmanager
def kafka_broker(scratch: Path) -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
    elif docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer(KAFKA_IMAGE) as container:
            yield container.get_bootstrap_server()
    else:
        with jar_broker(scratch) as bootstrap:
            yield bootstrap


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def create_topics(bootstrap: str, names: list[str], partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        await admin.close()


async def partition_count(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
        return len(described[0]["partitions"]) or 1
    finally:
        await admin.close()


async def produce(
    bootstrap: str,
    topic: str,
    messages: list[tuple[bytes | None, bytes | None]],
    partition: int | None = None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=value, key=key, partition=partition) for key, value in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_all(
    bootstrap: str, topic: str, expected: int | None = None, idle_seconds: float = 3.0, timeout: float = 120.0
) -> list[tuple[bytes | None, bytes | None, int]]:
    """Read a topic from the start (read_committed) until ``expected`` records or a quiet spell."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(await partition_count(bootstrap, topic))]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[tuple[bytes | None, bytes | None, int]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet_since = loop.time()
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            got = [(r.key, r.value, r.partition) for rs in batch.values() for r in rs]
            if got:
                records.extend(got)
                quiet_since = loop.time()
            if expected is not None and len(records) >= expected:
                # a moment more, so duplicates beyond the expected count are seen too
                expected = None
                quiet_since = loop.time() - idle_seconds + 1.0
            elif loop.time() - quiet_since > idle_seconds and expected is None:
                break
        return records
    finally:
        await consumer.stop()
