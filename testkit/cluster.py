"""A local 3-node KRaft cluster (``scripts/cluster.sh``) for the failover tests and the cluster soak, and
what they ask it through aiokafka's public admin API: who leads a partition, who coordinates a group
or a transactional id, how many partitions are under-replicated."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from processor.stream.kafka import durability_configs
from testkit.broker import ROOT, free_port

NODES = (1, 2, 3)
REPLICATION_FACTOR = 3
GROUP, TRANSACTION = 0, 1  # FindCoordinator key types
T = TypeVar("T")


def cluster_unavailable() -> str | None:
    """Why ``scripts/cluster.sh`` cannot run here (no Java, or no jars and no Maven), else ``None``."""
    if shutil.which("java") is None:
        return "no java on PATH: the 3-node cluster runs Kafka from its jars (Java 17+)"
    if not any((ROOT / ".kafka" / "libs").glob(".fetched-kafka-*")) and shutil.which("mvn") is None:
        return "no Kafka jars in .kafka/libs and no mvn on PATH to fetch them"
    return None


class JarCluster:
    """``scripts/cluster.sh`` on free ports with its data under ``home``; nodes can be killed, stopped
    and started again (same ports, same data) one at a time."""

    def __init__(self, home: Path) -> None:
        ports: list[int] = []
        while len(ports) < 2 * len(NODES):
            port = free_port()
            if port not in ports:
                ports.append(port)
        self.broker_ports = ports[: len(NODES)]
        self.env = {
            **os.environ,
            "KAFKA_CLUSTER_DIR": str(home),
            "KAFKA_CLUSTER_PORTS": ",".join(map(str, self.broker_ports)),
            "KAFKA_CLUSTER_CONTROLLER_PORTS": ",".join(map(str, ports[len(NODES) :])),
        }

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.broker_ports)

    def up(self) -> None:
        self._script("up")

    def down(self, *, purge: bool = False) -> None:
        self._script("down", *(["--purge"] if purge else []))

    def start(self, node: int) -> None:
        """Start ``node`` and wait until it is back in the quorum and serving."""
        self._script("start", str(node))

    def stop(self, node: int) -> None:
        """SIGTERM ``node`` (a controlled shutdown: it hands its leaderships over) and wait for it."""
        self._script("stop", str(node))

    def kill(self, node: int) -> None:
        """SIGKILL ``node``: no controlled shutdown, its partitions move once the controller fences it."""
        pid = self.pid(node)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            while self.pid(node) == pid:
                time.sleep(0.05)

    def pid(self, node: int) -> int | None:
        result = subprocess.run(
            ["bash", str(ROOT / "scripts" / "cluster.sh"), "pid", str(node)],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        return int(result.stdout) if result.returncode == 0 and result.stdout.strip() else None

    def _script(self, *args: str) -> None:
        subprocess.run(["bash", str(ROOT / "scripts" / "cluster.sh"), *args], env=self.env, check=True)


@contextmanager
def jar_cluster(home: Path) -> Iterator[JarCluster]:
    """A running 3-node cluster with its data under ``home``, stopped afterwards; purged unless the
    block raised (the nodes' logs then stay in ``home``)."""
    cluster = JarCluster(home)
    purge = False
    try:
        cluster.up()
        yield cluster
        purge = True
    finally:
        cluster.down(purge=purge)


async def _retrying(bootstrap: str, ask: Callable[[AIOKafkaAdminClient], Awaitable[T]], timeout: float) -> T:
    """``ask`` an admin client, again with a new one while it fails (a node of the bootstrap list down,
    a coordinator moving, an internal topic being created), for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            return await ask(admin)
        except KafkaError:
            if time.monotonic() > deadline:
                raise
        finally:
            await admin.close()
        await asyncio.sleep(0.5)


def leader(bootstrap: str, topic: str, partition: int, timeout: float = 30.0) -> int:
    """The node that leads ``partition`` of ``topic`` (-1 while it has none)."""

    async def ask(admin: AIOKafkaAdminClient) -> int:
        (described,) = await admin.describe_topics([topic])
        for entry in described["partitions"]:
            if entry["partition"] == partition:
                return int(entry["leader"])
        raise KafkaError(f"{topic} has no partition {partition} yet")

    return asyncio.run(_retrying(bootstrap, ask, timeout))


def coordinator(bootstrap: str, key: str, key_type: int, timeout: float = 60.0) -> int:
    """The node coordinating the consumer group (``GROUP``) or transactional id (``TRANSACTION``)
    ``key``: FindCoordinator, through ``AIOKafkaAdminClient.find_coordinator``."""

    async def ask(admin: AIOKafkaAdminClient) -> int:
        return await admin.find_coordinator(key, key_type)

    return asyncio.run(_retrying(bootstrap, ask, timeout))


def under_replicated(bootstrap: str, timeout: float = 30.0) -> int:
    """How many partitions of all topics (internal ones too) have fewer in-sync replicas than replicas."""

    async def ask(admin: AIOKafkaAdminClient) -> int:
        return sum(
            len(entry["isr"]) < len(entry["replicas"])
            for described in await admin.describe_topics()
            for entry in described["partitions"]
        )

    return asyncio.run(_retrying(bootstrap, ask, timeout))


def wait_fully_replicated(bootstrap: str, timeout: float = 180.0) -> float:
    """Seconds until no partition is under-replicated; raises ``AssertionError`` after ``timeout``."""
    began = time.monotonic()
    while under_replicated(bootstrap):
        if time.monotonic() - began > timeout:
            raise AssertionError(f"partitions still under-replicated after {timeout:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - began


def replication(bootstrap: str, topics: list[str]) -> dict[str, set[int]]:
    """Each topic's replica counts, one per distinct count among its partitions."""

    async def ask(admin: AIOKafkaAdminClient) -> dict[str, set[int]]:
        return {
            described["topic"]: {len(entry["replicas"]) for entry in described["partitions"]}
            for described in await admin.describe_topics(topics)
        }

    return asyncio.run(_retrying(bootstrap, ask, 30.0))


def create_replicated_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create ``topic`` as an operator would on the cluster: 3 replicas, 2 of them in sync for a write."""

    async def ask(admin: AIOKafkaAdminClient) -> None:
        await admin.create_topics(
            [
                NewTopic(
                    topic,
                    partitions,
                    REPLICATION_FACTOR,
                    topic_configs=durability_configs(REPLICATION_FACTOR),
                )
            ]
        )

    asyncio.run(_retrying(bootstrap, ask, 30.0))
