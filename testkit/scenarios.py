"""Crash scenarios against a real broker: SIGKILLed workers, a backlog at start-up, a rebalance between
two workers, a rolling restart of three, and a broker restart, each checked record by record against
the file replay of the same input. ``tests/integration/test_crash.py`` runs short versions, ``make soak``
long ones.

Every worker of a scenario has a name, and its ``WORKER_ID`` (static group membership) is
``<APP_ID>-<name>``: a restart of a name reuses its id, as a redeployed worker would.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

from processor.domain.state import DrawdownPolicy, FundRules
from processor.simulate import MARKETS, Market
from testkit.broker import JarBroker, create_topics
from testkit.harness import PacedProducer, Tally, adl_env, messages, peak_rss, rules_env, tally_outputs
from testkit.reference import FileReplay
from testkit.treasury import with_treasury
from testkit.worker import RunningWorker, WorkerConfig

RULES = FundRules(
    initial_balance={
        "USDT": Decimal(5_000_000),
        "USDC": Decimal(5_000_000),
        "BTC": Decimal(100),
        "ETH": Decimal(2_000),
        "SOL": Decimal(50_000),
        "BNB": Decimal(10_000),
        "TON": Decimal(500_000),
    }
)
#: The simulated markets plus three coin-margined ones whose funds land on the partitions (of 6) that
#: USDT, USDC, BTC and ETH leave empty (murmur2: BNB 0, ETH 1, USDT 2, SOL 3, BTC and USDC 4, TON 5), so
#: that every worker of the rolling restart has input.
WIDE_MARKETS: tuple[Market, ...] = (
    *MARKETS,
    Market("SOLUSD", "SOL", "inverse", "10", 21),
    Market("BNBUSD", "BNB", "inverse", "10", 240),
    Market("TONUSD", "TON", "inverse", "1", 2.1),
)
#: How long before a kill (or stop) the worker's event counter is read a first time: the kill counts
#: as "while processing" only if the counter grew in this window.
BUSY_WINDOW_SECONDS = 0.5
#: How long a kill cycle (start, wait, kill) is guessed to take before the first one is measured.
FIRST_CYCLE_GUESS_SECONDS = 5.0
Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _config(bootstrap: str, scratch: Path, partitions: int) -> WorkerConfig:
    config = WorkerConfig(bootstrap=bootstrap, scratch=scratch, partitions=partitions)
    config.extra_env.update(rules_env(RULES))
    asyncio.run(create_topics(bootstrap, [config.input_topic], partitions))
    return config


def _wait_taking_input(worker: RunningWorker, producer: PacedProducer, timeout: float) -> float | None:
    """Wait until the worker is healthy and its ``insurance_fund_events_total`` has grown (it took input
    since it started); the seconds that took from its start, ``None`` if it did not (or input stopped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker.process.poll() is None:
        if worker.healthy() and (worker.events() or 0) > 0:
            return time.monotonic() - worker.started
        if not producer.flowing:
            return None
        time.sleep(0.1)
    return None


def _stop_moment(worker: RunningWorker, producer: PacedProducer, wait: float) -> bool:
    """Sleep ``wait`` seconds, reading the worker's event counter ``BUSY_WINDOW_SECONDS`` before the
    end and at the end; whether it was processing then: the counter grew since the incarnation
    started (from 0) and within the window, and input was still being produced."""
    time.sleep(max(0.0, wait - BUSY_WINDOW_SECONDS))
    before = worker.events()
    time.sleep(min(wait, BUSY_WINDOW_SECONDS))
    now = worker.events()
    return now is not None and now > (before or 0.0) and producer.flowing


def _pace(producer: PacedProducer, cycles: Sequence[float], left: int) -> None:
    """Keep input flowing until just after the last of ``left`` more cycles (each as long as the mean
    so far), so that late kills and restarts still meet a stream rather than an idle worker."""
    if cycles:
        producer.finish_by(time.monotonic() + (left + 1) * sum(cycles) / len(cycles))


def _await_funds(worker: RunningWorker, expected: dict[str, object], timeout: float) -> dict[str, object]:
    """The worker's ``GET /funds`` once it equals ``expected`` (every worker shows every fund, so it may
    trail the owners' commits a moment), or as it is after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        funds: dict[str, object] = dict(worker.funds())
        if funds == expected or time.monotonic() > deadline:
            return funds
        time.sleep(0.5)


def _finish(
    tally: Tally,
    config: WorkerConfig,
    expected: FileReplay,
    bad: list[bytes],
    producer: PacedProducer,
    workers: list[RunningWorker],
    started: float,
) -> Tally:
    """Wait for the producer, check the topics and every worker's ``GET /funds`` (each must show the
    replay's whole state), stop the workers."""
    producer.join()
    if producer.error is not None:
        tally.problems.append(f"producer failed: {producer.error!r}")
    for worker in workers:
        worker.wait_healthy(180)
    tally_outputs(tally, config, expected, bad)
    want: dict[str, object] = dict(expected.states)
    for worker in workers:
        funds = _await_funds(worker, want, timeout=60)
        if funds != want:
            differing = sorted(f for f in want.keys() | funds.keys() if funds.get(f) != want.get(f))
            tally.problems.append(
                f"GET /funds of {worker.name} differs from the replay for {', '.join(differing)}"
            )
        tally.peak_rss = max(tally.peak_rss, peak_rss(worker.process.pid))
    for worker in workers:
        worker.stop()
        if worker.process.returncode not in (0, -15):
            tally.problems.append(f"{worker.name} exited with {worker.process.returncode} on SIGTERM")
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
    busy_share: float = 0.5,
    startup_share: float = 0.25,
    pause: tuple[float, float] = (0.2, 8.0),
    treasury: bool = False,
    adl_policy: DrawdownPolicy | None = None,
    say: Say = _quiet,
) -> Tally:
    """Stream ``fills`` while SIGKILLing the worker ``kills`` times, restarting it (same WORKER_ID) each
    time. With ``treasury``, some fills belong to pools and operations (transfers included) are woven
    into the stream (``testkit.treasury``); with ``adl_policy``, every fund runs it (SPEC section 9) and
    its state changes are checked too. Each kill is aimed at random: mid-stream (``busy_share``:
    once the new incarnation is healthy and has taken input, up to a second later), at start-up
    (``startup_share``: between a quarter of and the median time the incarnations so far took to take
    input, so while joining, claiming, restoring or in the first batches), or at any moment (a random
    ``pause`` after the start). Whether it did land while the worker was processing is measured, not
    assumed: see ``_stop_moment``."""
    started = time.monotonic()
    rng = random.Random(seed)
    tally = Tally("kill -9, pools + treasury" if treasury else "kill -9")
    everything, bad = messages(fills, seed)
    config = _config(bootstrap, scratch, partitions)
    rules = RULES
    if treasury:
        everything, rules, env = with_treasury(everything, rules, scratch, seed)
        config.extra_env.update(env)
    if adl_policy is not None:
        rules = rules._replace(default_drawdown=adl_policy)
        config.extra_env.update(adl_env(adl_policy))
        tally.scenario += ", ADL policy"
    expected = FileReplay(everything, rules)
    if treasury:  # refusals and conflicts are dead letters too
        bad = [letter["value"].encode() for letter in expected.dead_letters]
    producer = PacedProducer(
        bootstrap,
        config.input_topic,
        everything,
        seconds=kills * FIRST_CYCLE_GUESS_SECONDS,
        chunk=25,
        pools=rules.pools,
    )
    producer.start()
    cycles: list[float] = []
    readiness: list[float] = []  # seconds from a start to the first input taken
    for n in range(kills):
        worker = RunningWorker(config, "w1")
        draw = rng.random()
        if draw < busy_share:
            aimed = "mid-stream"
            ready = _wait_taking_input(worker, producer, timeout=120)
            if ready is not None:
                readiness.append(ready)
            elif producer.flowing:
                tally.problems.append(f"incarnation {n + 1} took no input within 120 s:\n{worker.log()}")
            wait = BUSY_WINDOW_SECONDS + rng.uniform(0.0, 1.0)
        elif draw < busy_share + startup_share:
            aimed = "start-up"
            typical = sorted(readiness)[len(readiness) // 2] if readiness else 2.0
            wait = rng.uniform(0.25 * typical, typical)  # past the interpreter's own start
        else:
            aimed = "any moment"
            wait = rng.uniform(*pause)
        busy = _stop_moment(worker, producer, wait)
        tally.peak_rss = max(tally.peak_rss, peak_rss(worker.process.pid))
        if worker.process.poll() is not None:
            tally.problems.append(
                f"incarnation {n + 1} exited by itself with {worker.process.returncode}:\n{worker.log()}"
            )
        worker.kill()
        tally.kills += 1
        tally.busy_kills += busy
        cycles.append(time.monotonic() - worker.started)
        _pace(producer, cycles, kills - n - 1)
        say(
            f"kill {tally.kills}/{kills} ({aimed}) after {cycles[-1]:.1f} s:"
            f" {'while processing' if busy else 'not processing'}; {tally.busy_kills} while processing so far"
        )
    final = RunningWorker(config, "w1")
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
    """The whole input is waiting before a worker of a new group starts; then ``starts - 1`` times,
    1.5 s after it became healthy, the worker is killed and started again on the remaining backlog."""
    started = time.monotonic()
    tally = Tally("backlog start")
    everything, bad = messages(fills, seed)
    expected = FileReplay(everything, RULES)
    config = _config(bootstrap, scratch, partitions)
    producer = PacedProducer(bootstrap, config.input_topic, everything, seconds=0)
    producer.start()
    producer.join()
    for n in range(starts - 1):
        worker = RunningWorker(config, "w1")
        worker.wait_healthy(180)
        time.sleep(1.5)
        worker.kill()
        tally.kills += 1
        say(f"backlog start {n + 1}/{starts}")
    final = RunningWorker(config, "w1")
    return _finish(tally, config, expected, bad, producer, [final], started)


def _wait_owning(worker: RunningWorker, partitions: int, timeout: float) -> float | None:
    """Seconds until ``worker`` owns all ``partitions`` input partitions, ``None`` if not within
    ``timeout``."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if worker.owned_partitions() == partitions:
            return time.monotonic() - began
        time.sleep(0.2)
    return None


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
    alternately with SIGTERM and SIGKILL: the other takes its partitions over (once the group's session
    timeout expires: a static member does not leave the group) and back."""
    started = time.monotonic()
    tally = Tally("rebalance")
    everything, bad = messages(fills, seed)
    expected = FileReplay(everything, RULES)
    config = _config(bootstrap, scratch, partitions)
    steady = RunningWorker(config, "steady")
    moving = RunningWorker(config, "moving")
    steady.wait_healthy(180)
    moving.wait_healthy(180)
    producer = PacedProducer(bootstrap, config.input_topic, everything, seconds=rounds * 30)
    producer.start()
    for n in range(rounds):
        time.sleep(8)
        tally.peak_rss = max(tally.peak_rss, peak_rss(moving.process.pid))
        if n % 2:
            moving.kill()
            tally.kills += 1
        else:
            moving.stop()
            tally.restarts += 1
        how = "killed" if n % 2 else "stopped"
        took = _wait_owning(steady, partitions, timeout=45)
        if took is None:
            tally.problems.append(
                f"round {n + 1}: the other worker did not take every partition over in 45 s"
            )
        else:
            say(f"rebalance {n + 1}/{rounds}: one worker {how}; the other owns them all after {took:.1f} s")
        time.sleep(4)  # the other worker alone, with every partition
        moving = RunningWorker(config, "moving")
    return _finish(tally, config, expected, bad, producer, [steady, moving], started)


def rolling_scenario(
    bootstrap: str,
    scratch: Path,
    *,
    fills: int = 20_000,
    rounds: int = 2,
    workers: int = 3,
    seed: int = 5,
    partitions: int = 6,
    say: Say = _quiet,
) -> Tally:
    """``workers`` workers share a ``partitions``-partition input (every partition fed) under continuous
    paced load; they are restarted one at a time (SIGTERM, started again under the same WORKER_ID, wait
    until healthy and taking input again, next) for ``rounds`` full rounds."""
    started = time.monotonic()
    tally = Tally("rolling restart")
    everything, bad = messages(fills, seed, WIDE_MARKETS)
    expected = FileReplay(everything, RULES)
    config = _config(bootstrap, scratch, partitions)
    names = [f"w{number + 1}" for number in range(workers)]
    running = {name: RunningWorker(config, name) for name in names}
    for worker in running.values():
        worker.wait_healthy(180)
    steps = rounds * workers
    producer = PacedProducer(
        bootstrap, config.input_topic, everything, seconds=(steps + 1) * FIRST_CYCLE_GUESS_SECONDS, chunk=50
    )
    producer.start()
    time.sleep(2)  # the whole group at work before the first restart
    cycles: list[float] = []
    for step in range(steps):
        name = names[step % workers]
        old = running[name]
        cycle_started = time.monotonic()
        busy = _stop_moment(old, producer, BUSY_WINDOW_SECONDS)
        tally.peak_rss = max(tally.peak_rss, peak_rss(old.process.pid))
        old.stop()
        stopped = time.monotonic() - cycle_started
        if old.process.returncode not in (0, -15):
            tally.problems.append(f"{name} exited with {old.process.returncode} on SIGTERM:\n{old.log()}")
        new = running[name] = RunningWorker(config, name)
        try:
            new.wait_healthy(180)
        except AssertionError as error:
            tally.problems.append(f"{name} did not come back: {error}")
            break
        healthy = time.monotonic() - new.started
        taking = _wait_taking_input(new, producer, timeout=30)
        if taking is None and producer.flowing:
            tally.problems.append(f"{name} took no input within 30 s of its restart {step // workers + 1}")
        tally.restarts += 1
        cycles.append(time.monotonic() - cycle_started)
        _pace(producer, cycles, steps - step - 1)
        say(
            f"rolling {step // workers + 1}/{rounds}: {name} ({'busy' if busy else 'idle'}) stopped in"
            f" {stopped:.1f} s, healthy {healthy:.1f} s after its start"
            + (f", taking input after {taking:.1f} s" if taking is not None else "")
        )
        time.sleep(1)  # the full group for a moment before the next restart
    return _finish(tally, config, expected, bad, producer, list(running.values()), started)


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
    started = time.monotonic()
    tally = Tally("broker restart")
    broker = JarBroker(scratch / "broker")
    broker.up()
    try:
        everything, bad = messages(fills, seed)
        expected = FileReplay(everything, RULES)
        config = _config(broker.bootstrap, scratch, partitions)
        worker = RunningWorker(config, "rider")
        worker.wait_healthy(180)
        producer = PacedProducer(broker.bootstrap, config.input_topic, everything, seconds=12 + 20 * restarts)
        producer.start()
        for n in range(restarts):
            time.sleep(6)
            broker.down()
            say(f"broker down {n + 1}/{restarts}")
            time.sleep(5)
            broker.up()
            say(f"broker up {n + 1}/{restarts}")
            if worker.process.poll() is not None:
                code = worker.process.returncode
                tally.problems.append(f"worker exited with {code} when the broker restarted:\n{worker.log()}")
                worker = RunningWorker(config, "rider")
        return _finish(tally, config, expected, bad, producer, [worker], started)
    finally:
        broker.down(purge=True)
