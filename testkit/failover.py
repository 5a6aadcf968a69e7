"""Broker failover scenarios on the 3-node cluster: the broker leading an input partition being
processed, the transaction coordinator of a worker's transactional ids, or the group coordinator is
SIGKILLed under load and brought back; or every broker is restarted in turn. Two workers run
throughout, and everything is checked record by record against the file replay, as in
``testkit.scenarios``. ``tests/integration/test_cluster.py`` runs a short version, ``make soak-cluster``
long ones.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from processor.stream.partitioning import home_partition
from testkit.cluster import (
    GROUP,
    TRANSACTION,
    JarCluster,
    coordinator,
    create_replicated_topic,
    leader,
    replication,
    wait_fully_replicated,
)
from testkit.harness import PacedProducer, Tally, messages, rules_env
from testkit.reference import FileReplay
from testkit.scenarios import BUSY_WINDOW_SECONDS, RULES, WIDE_MARKETS, _finish
from testkit.worker import RunningWorker, WorkerConfig

#: What can be aimed at: the leader of an input partition, a coordinator, or each broker in turn.
TARGETS = ("leader", "transaction coordinator", "group coordinator", "rolling")
#: How long a killed broker stays down once its duties have moved to another, before it is started.
DOWN_SECONDS = 2.0
#: Steady processing between two disruptions.
SETTLE_SECONDS = 2.0
#: A guess of one disruption's length (kill, failover, restart, catching up) before one is measured.
FIRST_CYCLE_GUESS_SECONDS = 25.0
#: How long input keeps flowing after the last disruption.
TAIL_SECONDS = 4.0
Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class FailoverTally(Tally):
    """A scenario's tally plus the longest stalls: seconds in which an output partition being fed got
    no new committed record, and in which the input producer could not write."""

    longest_output_stall: float = 0.0
    longest_input_stall: float = 0.0


class OutputWatch(threading.Thread):
    """Follow a topic ``read_committed`` and note when each partition's records arrive, and sample the
    input producer's progress; the longest gaps are what a downstream reader (or the upstream
    writer) would see of a failover."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, producer: PacedProducer) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.partitions, self.producer = bootstrap, topic, partitions, producer
        self.received = 0
        self.output_stall = 0.0
        self.input_stall = 0.0
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(30)

    def run(self) -> None:
        try:
            asyncio.run(self._follow())
        except BaseException as error:  # reported by the scenario
            self.error = error

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, isolation_level="read_committed", enable_auto_commit=False
        )
        await consumer.start()
        try:
            partitions = [TopicPartition(self.topic, p) for p in range(self.partitions)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            last_arrival: dict[int, float] = {}
            sent, input_moved = self.producer.sent, time.monotonic()
            while not self._stop_event.is_set():
                batch = await consumer.getmany(timeout_ms=100, max_records=10_000)
                now = time.monotonic()
                for tp, records in batch.items():
                    if tp.partition in last_arrival:
                        self.output_stall = max(self.output_stall, now - last_arrival[tp.partition])
                    last_arrival[tp.partition] = now
                    self.received += len(records)
                if self.producer.sent != sent:
                    sent, input_moved = self.producer.sent, now
                elif self.producer.flowing:
                    self.input_stall = max(self.input_stall, now - input_moved)
        finally:
            await consumer.stop()


def failover_scenario(
    cluster: JarCluster,
    scratch: Path,
    target: str,
    *,
    fills: int = 20_000,
    rounds: int = 3,
    workers: int = 2,
    seed: int = 6,
    partitions: int = 4,
    cycle_guess: float = FIRST_CYCLE_GUESS_SECONDS,
    say: Say = _quiet,
) -> FailoverTally:
    """``workers`` workers share a ``partitions``-partition input (replicated 3 times, every partition
    fed) under continuous paced load while ``target`` is disrupted ``rounds`` times: the broker leading
    an input partition (each round the next partition), the transaction coordinator of the next
    partition's transactional id, or the group coordinator is SIGKILLed, stays down until its duties
    have moved, and is started again; or (``rolling``) each broker in turn gets a controlled shutdown
    and is started again (``rounds`` full rounds). After each disruption the scenario waits for every
    partition to be fully replicated again. A worker that exits meanwhile is a problem (and is
    started again, so that the outputs can still be checked)."""
    if target not in TARGETS:
        raise ValueError(f"target: expected one of {', '.join(TARGETS)}, got {target!r}")
    started = time.monotonic()
    scratch.mkdir(parents=True, exist_ok=True)
    tally = FailoverTally("rolling broker restart" if target == "rolling" else f"kill {target}")
    everything, bad = messages(fills, seed, WIDE_MARKETS)
    expected = FileReplay(everything, RULES)
    bootstrap = cluster.bootstrap
    config = WorkerConfig(bootstrap=bootstrap, scratch=scratch, partitions=partitions)
    config.extra_env.update(rules_env(RULES))
    config.extra_env["TOPIC_REPLICATION_FACTOR"] = "3"
    create_replicated_topic(bootstrap, config.input_topic, partitions)
    steps = rounds * 3 if target == "rolling" else rounds
    producer = PacedProducer(
        bootstrap, config.input_topic, everything, seconds=(steps + 1) * cycle_guess, chunk=25
    )
    watch = OutputWatch(bootstrap, config.deltas_topic, partitions, producer)
    running: dict[str, RunningWorker] = {}
    try:
        for number in range(workers):
            running[f"w{number + 1}"] = RunningWorker(config, f"w{number + 1}")
        for worker in running.values():
            worker.wait_healthy(180)
        _check_replication(tally, config)
        watch.start()
        producer.start()
        _wait_all_taking_input(list(running.values()), producer, timeout=60)
        time.sleep(SETTLE_SECONDS)
        assignments = _assignments(running)
        fed = sorted({home_partition(market.margin_currency, partitions) for market in WIDE_MARKETS})
        cycles: list[float] = []
        for step in range(steps):
            cycle_started = time.monotonic()
            try:
                _disrupt(cluster, config, target, step, fed[step % len(fed)], running, producer, tally, say)
            except (subprocess.CalledProcessError, AssertionError, KafkaError) as error:
                tally.problems.append(f"step {step + 1} failed: {error!r}; bringing every node back")
                cluster.up()
                break
            cycles.append(time.monotonic() - cycle_started)
            _pace(producer, cycles, steps - step - 1)
            time.sleep(SETTLE_SECONDS)
        say(
            f"{tally.scenario}: the workers received {_assignments(running) - assignments} new partition"
            " assignments during the disruptions"
        )
        _finish(tally, config, expected, bad, producer, list(running.values()), started)
        deadline = time.monotonic() + 30
        while watch.received < len(expected.deltas) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        for worker in running.values():
            worker.kill()  # still running only if the scenario failed
        if watch.is_alive():
            watch.stop()
    if watch.error is not None:
        tally.problems.append(f"the output watch failed: {watch.error!r}")
    tally.longest_output_stall = watch.output_stall
    tally.longest_input_stall = watch.input_stall
    return tally


def _disrupt(
    cluster: JarCluster,
    config: WorkerConfig,
    target: str,
    step: int,
    partition: int,
    running: dict[str, RunningWorker],
    producer: PacedProducer,
    tally: FailoverTally,
    say: Say,
) -> None:
    """One disruption, once the workers are busy: kill (or stop) the node, wait until its duties have
    moved, start it again, wait until every partition is fully replicated."""
    busy = _when_busy(list(running.values()), producer, timeout=30)
    node, aimed = _aim(cluster, config, target, step, partition)
    if target == "rolling":
        cluster.stop(node)
        cluster.start(node)
        tally.restarts += 1
        moved = ""
    else:
        cluster.kill(node)
        tally.kills += 1
        moved_after = _wait_moved(cluster, config, target, partition, node)
        moved = f", its duties moved after {moved_after:.1f} s" if moved_after is not None else ""
        if moved_after is None:
            tally.problems.append(f"step {step + 1}: the {aimed} did not move off node {node} in 60 s")
        time.sleep(DOWN_SECONDS)
        cluster.start(node)
    tally.busy_kills += busy
    caught_up = wait_fully_replicated(cluster.bootstrap)
    _revive(tally, config, running)
    say(
        f"{tally.scenario} {step + 1}: node {node} ({aimed}) "
        f"{'restarted' if target == 'rolling' else 'killed'} "
        f"{'while processing' if busy else 'NOT while processing'}{moved}; "
        f"fully replicated {caught_up:.1f} s after it was back"
    )


def _aim(
    cluster: JarCluster, config: WorkerConfig, target: str, step: int, partition: int
) -> tuple[int, str]:
    """The node to disrupt at ``step``, and what it is."""
    bootstrap = cluster.bootstrap
    if target == "leader":
        return leader(bootstrap, config.input_topic, partition), f"leader of input partition {partition}"
    if target == "transaction coordinator":
        transactional_id = f"{config.app_id}-fund-{partition}"
        return coordinator(bootstrap, transactional_id, TRANSACTION), f"coordinator of {transactional_id}"
    if target == "group coordinator":
        return coordinator(bootstrap, config.app_id, GROUP), f"coordinator of group {config.app_id}"
    node = 1 + step % 3
    return node, "rolling restart"


def _wait_moved(
    cluster: JarCluster, config: WorkerConfig, target: str, partition: int, node: int
) -> float | None:
    """Seconds until the killed ``node``'s duty has another node (``None``: not within 60 s)."""
    began = time.monotonic()
    while time.monotonic() - began < 60:
        now, _ = _aim(cluster, config, target, 0, partition)
        if now not in (node, -1):
            return time.monotonic() - began
        time.sleep(0.2)
    return None


def _pace(producer: PacedProducer, cycles: list[float], left: int) -> None:
    """Keep input flowing through the ``left`` more disruptions (each as long as the mean so far) and
    ``TAIL_SECONDS`` beyond, so that every disruption meets a stream."""
    producer.finish_by(time.monotonic() + left * sum(cycles) / len(cycles) + SETTLE_SECONDS + TAIL_SECONDS)


def _when_busy(workers: list[RunningWorker], producer: PacedProducer, timeout: float) -> bool:
    """Wait until the workers are processing (see ``_busy``), for up to ``timeout`` seconds: a
    disruption is aimed at a busy pipeline, not at one still stalled by the previous disruption."""
    deadline = time.monotonic() + timeout
    while not _busy(workers, producer):
        if time.monotonic() > deadline or not producer.flowing:
            return False
    return True


def _busy(workers: list[RunningWorker], producer: PacedProducer) -> bool:
    """Whether the workers are processing now: their event counters grew over the last
    ``BUSY_WINDOW_SECONDS``, and input is still being produced."""
    before = sum(worker.events() or 0.0 for worker in workers)
    time.sleep(BUSY_WINDOW_SECONDS)
    after = sum(worker.events() or 0.0 for worker in workers)
    return after > before and producer.flowing


def _wait_all_taking_input(workers: list[RunningWorker], producer: PacedProducer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and producer.error is None:
        if all((worker.events() or 0) > 0 for worker in workers):
            return
        time.sleep(0.2)


def _assignments(running: dict[str, RunningWorker]) -> int:
    """How many partition assignments the workers have received (each rebalance gives each one)."""
    total = 0
    for worker in running.values():
        with suppress(OSError, AssertionError):  # a worker not answering (yet) counts 0
            total += int(worker.metric("insurance_fund_rebalances_total"))
    return total


def _revive(tally: Tally, config: WorkerConfig, running: dict[str, RunningWorker]) -> None:
    """A worker must ride a failover out; one that exited is a problem, and is started again."""
    for name, worker in running.items():
        if worker.process.poll() is not None:
            tally.problems.append(
                f"{name} exited with {worker.process.returncode} during a failover:\n{worker.log()}"
            )
            running[name] = RunningWorker(config, name)


def _check_replication(tally: Tally, config: WorkerConfig) -> None:
    """Every topic the workers created must have 3 replicas."""
    created = [
        config.deltas_topic,
        config.adl_topic,
        config.dlq_topic,
        f"{config.app_id}-fills-by-fund",
        f"{config.app_id}-funds-changelog",
        f"{config.app_id}-seen-fills-changelog",
    ]
    for topic, counts in sorted(replication(config.bootstrap, created).items()):
        if counts != {3}:
            tally.problems.append(f"{topic} has {sorted(counts)} replicas per partition, not 3")
