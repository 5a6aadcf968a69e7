"""Crash scenarios against a real broker: SIGKILLed workers, a rebalance between two workers, and a
broker restart, each checked record by record against the file replay of the same input."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from processor.domain.state import FundRules
from soak.harness import PacedProducer, Tally, messages, peak_rss, rules_env, tally_outputs
from tests.integration.broker import ROOT, create_topics
from tests.integration.reference import FileReplay
from tests.integration.worker import RunningWorker, WorkerConfig

RULES = FundRules(
    initial_balance={
        "USDT": Decimal(5_000_000),
        "USDC": Decimal(5_000_000),
        "BTC": Decimal(100),
        "ETH": Decimal(2_000),
    }
)
Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _config(bootstrap: str, scratch: Path, partitions: int) -> WorkerConfig:
    config = WorkerConfig(bootstrap=bootstrap, scratch=scratch, partitions=partitions)
    config.extra_env.update(rules_env(RULES))
    asyncio.run(create_topics(bootstrap, [config.input_topic], partitions))
    return config


def _was_processing(worker: RunningWorker) -> bool:
    """Whether this incarnation had taken input in (else it is killed while starting or recovering)."""
    try:
        return worker.metric("insurance_fund_events_total") > 0
    except (OSError, AssertionError):
        return False


def _finish(
    tally: Tally,
    config: WorkerConfig,
    expected: FileReplay,
    bad: list[bytes],
    producer: PacedProducer,
    workers: list[RunningWorker],
    started: float,
) -> Tally:
    """Wait for the producer, check the topics and every worker's ``GET /funds``, stop the workers."""
    producer.join()
    if producer.error is not None:
        tally.problems.append(f"producer failed: {producer.error!r}")
    for worker in workers:
        worker.wait_healthy(180)
    tally_outputs(tally, config, expected, bad)
    funds: dict[str, object] = {}
    for worker in workers:
        funds.update(worker.funds())
        tally.peak_rss = max(tally.peak_rss, peak_rss(worker.process.pid))
    if funds != expected.states:
        differing = sorted(
            f for f in expected.states.keys() | funds.keys() if funds.get(f) != expected.states.get(f)
        )
        tally.problems.append(f"GET /funds differs from the replay for {', '.join(differing)}")
    for worker in workers:
        worker.stop()
        if worker.process.returncode not in (0, -15):
            tally.problems.append(f"worker exited with {worker.process.returncode} on SIGTERM")
    tally.seconds = time.monotonic() - started
    return tally


def kill_scenario(
    bootstrap: str,
    scratch: Path,
    *,
    fills: int = 20_000,
    kills: int = 10,
    seed: int = 1,
    partitions: int = 4,
    pause: tuple[float, float] = (2.0, 16.0),
    say: Say = _quiet,
) -> Tally:
    """Stream ``fills`` while SIGKILLing the worker ``kills`` times at random moments (during start-up,
    recovery or batches alike), restarting it each time."""
    started = time.monotonic()
    rng = random.Random(seed)
    tally = Tally("kill -9")
    everything, bad = messages(fills, seed)
    expected = FileReplay(everything, RULES)
    config = _config(bootstrap, scratch, partitions)
    producer = PacedProducer(bootstrap, config.input_topic, everything, seconds=kills * sum(pause) / 2 * 0.8)
    producer.start()
    for n in range(kills):
        worker = RunningWorker(config, f"kill{n}")
        time.sleep(rng.uniform(*pause))
        tally.peak_rss = max(tally.peak_rss, peak_rss(worker.process.pid))
        tally.busy_kills += _was_processing(worker)
        if worker.process.poll() is not None:
            tally.problems.append(
                f"worker {n} exited by itself with {worker.process.returncode}:\n{worker.log()}"
            )
        worker.kill()
        tally.kills += 1
        say(f"kill {tally.kills}/{kills}")
    final = RunningWorker(config, "final")
    return _finish(tally, config, expected, bad, producer, [final], started)


def backlog_scenario(
    bootstrap: str,
    scratch: Path,
    *,
    fills: int = 20_000,
    starts: int = 1,
    seed: int = 4,
    partitions: int = 4,
    say: Say = _quiet,
) -> Tally:
    """The whole input is waiting before a worker of a new group starts; then ``starts - 1`` times a
    third of the way through, the worker is killed and started again on the remaining backlog. faust
    0.15.3 dropped what it fetched while it resumed the partitions at start-up; see
    ``processor/stream/recovery.py``."""
    started = time.monotonic()
    tally = Tally("backlog start")
    everything, bad = messages(fills, seed)
    expected = FileReplay(everything, RULES)
    config = _config(bootstrap, scratch, partitions)
    producer = PacedProducer(bootstrap, config.input_topic, everything, seconds=0)
    producer.start()
    producer.join()
    for n in range(starts - 1):
        worker = RunningWorker(config, f"backlog{n}")
        worker.wait_healthy(180)
        time.sleep(1.5)
        worker.kill()
        tally.kills += 1
        say(f"backlog start {n + 1}/{starts}")
    final = RunningWorker(config, "backlog-final")
    return _finish(tally, config, expected, bad, producer, [final], started)


def rebalance_scenario(
    bootstrap: str,
    scratch: Path,
    *,
    fills: int = 20_000,
    rounds: int = 2,
    seed: int = 2,
    partitions: int = 4,
    say: Say = _quiet,
) -> Tally:
    """Two workers share the input; one is stopped mid-stream and started again, ``rounds`` times,
    alternately with SIGTERM and SIGKILL: the other takes its partitions over and back."""
    started = time.monotonic()
    tally = Tally("rebalance")
    everything, bad = messages(fills, seed)
    expected = FileReplay(everything, RULES)
    config = _config(bootstrap, scratch, partitions)
    steady = RunningWorker(config, "steady")
    moving = RunningWorker(config, "moving-0")
    steady.wait_healthy(180)
    moving.wait_healthy(180)
    producer = PacedProducer(bootstrap, config.input_topic, everything, seconds=rounds * 30)
    producer.start()
    for n in range(rounds):
        time.sleep(8)
        if n % 2:
            moving.kill()
            tally.kills += 1
        else:
            moving.stop()
        say(f"rebalance {n + 1}/{rounds}: one worker {'killed' if n % 2 else 'stopped'}")
        time.sleep(12)  # the other worker alone, after taking the partitions over
        moving = RunningWorker(config, f"moving-{n + 1}")
    return _finish(tally, config, expected, bad, producer, [steady, moving], started)


def broker_restart_scenario(
    scratch: Path,
    *,
    fills: int = 10_000,
    restarts: int = 1,
    seed: int = 3,
    partitions: int = 4,
    say: Say = _quiet,
) -> Tally:
    """A private jar broker is stopped and started again under a running worker, ``restarts`` times;
    the worker must ride it out (no restart of its own) and lose or repeat nothing."""
    from tests.integration.broker import free_port

    started = time.monotonic()
    tally = Tally("broker restart")
    home = scratch / "broker"
    port, controller = free_port(), free_port()
    env = {
        **os.environ,
        "KAFKA_HOME_DIR": str(home),
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(controller),
    }
    script = str(ROOT / "scripts" / "kafka.sh")
    subprocess.run(["bash", script, "up"], env=env, check=True)
    bootstrap = f"127.0.0.1:{port}"
    try:
        everything, bad = messages(fills, seed)
        expected = FileReplay(everything, RULES)
        config = _config(bootstrap, scratch, partitions)
        worker = RunningWorker(config, "rider")
        worker.wait_healthy(180)
        producer = PacedProducer(bootstrap, config.input_topic, everything, seconds=12 + 20 * restarts)
        producer.start()
        for n in range(restarts):
            time.sleep(6)
            subprocess.run(["bash", script, "down"], env=env, check=True)
            say(f"broker down {n + 1}/{restarts}")
            time.sleep(5)
            subprocess.run(["bash", script, "up"], env=env, check=True)
            say(f"broker up {n + 1}/{restarts}")
            if worker.process.poll() is not None:
                code = worker.process.returncode
                tally.problems.append(f"worker exited with {code} when the broker restarted:\n{worker.log()}")
                worker = RunningWorker(config, f"rider-{n}")
        return _finish(tally, config, expected, bad, producer, [worker], started)
    finally:
        subprocess.run(["bash", script, "down", "--purge"], env=env, check=False)
