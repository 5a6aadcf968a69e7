"""Streams: does a crowd watching the dashboard slow the worker down?

The same pre-loaded input is folded by fresh workers (a new APP_ID each, so each reads it all), in alternating
runs: with no client, and with ``streams`` clients reading ``GET /dashboard/events`` as a browser does. The
clients connect as soon as the worker's HTTP server answers, before its first commit, so they are open for the
whole measured span. Throughput is measured as in ``throughput`` (first -> last committed delta, steady),
and so is the worker's CPU time over that span (``/proc/<pid>/stat``), which a shared machine disturbs far
less than the rate. The figures are the ratios of the medians with and without the streams; the target: at
most 10% slower, at most 10% more CPU per fill.

Then, without a broker, the dashboard's own cost: its event streams in this process, fed committed states and
ADL records at a busy worker's pace, read by ``streams`` clients in another process; the figure is the CPU
time this process spends with the clients minus without them, as a share of one core (a worker folding at
full speed uses one core, so that share bounds how much the streams can slow it).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import aiohttp

from bench.generate import lines
from bench.harness import (
    BenchError,
    Topics,
    WorkerProcess,
    at_least,
    at_most,
    create_topics,
    load_note,
    preload,
    spread,
)
from bench.throughput import arrivals
from processor.domain.state import FundRules, FundState
from processor.stream.dashboard import Dashboard
from processor.stream.dashboard.source import TRIGGERS, Sink, Window
from processor.stream.metrics import Metrics
from processor.stream.view import FundsView
from processor.stream.web import start_web

RATIO_TARGET = 0.9  # with the streams, at least 90% of the rate without them
CPU_TARGET = 1.1  # and at most 110% of the CPU time per fill
UPDATE = b"event: update\n"


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far; ``None`` once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuSamples:
    """The worker's CPU time, and this process's (the clients and the counting consumer), every 50 ms, to
    read them at the moments ``arrivals`` reports."""

    samples: list[tuple[float, float, float]] = field(default_factory=list)

    async def sample(self, worker: WorkerProcess) -> None:
        while worker.process is None:
            await asyncio.sleep(0.01)
        while (cpu := cpu_seconds(worker.pid)) is not None:
            self.samples.append((time.monotonic(), cpu, time.process_time()))
            await asyncio.sleep(0.05)

    def at(self, moment: float) -> tuple[float, float]:
        before = [(worker, own) for when, worker, own in self.samples if when <= moment]
        return before[-1] if before else (0.0, 0.0)

    def between(self, start: float, end: float) -> tuple[float, float]:
        """CPU seconds of the worker and of this process from ``start`` to ``end``."""
        (worker_start, own_start), (worker_end, own_end) = self.at(start), self.at(end)
        return worker_end - worker_start, own_end - own_start


@dataclass
class SharedInput(Topics):
    """A run's own APP_ID and output topics, reading the phase's one pre-loaded input topic."""

    shared_input: str = ""

    @property
    def input(self) -> str:
        return self.shared_input


@dataclass
class Crowd:
    """``size`` clients reading the worker's event stream, each counting the updates it received."""

    size: int
    updates: list[int] = field(default_factory=list)
    ended_early: int = 0
    open_at: float | None = None  # monotonic time every client had its first event

    async def watch(self, worker: WorkerProcess) -> None:
        if self.size == 0:
            return
        while worker.port == 0:
            await asyncio.sleep(0.01)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None)
        ) as session:
            while True:  # until the HTTP server answers
                status, _ = await worker.get(session, "/health")
                if status:
                    break
                await asyncio.sleep(0.02)
            self.updates = [0] * self.size
            opened = [asyncio.Event() for _ in range(self.size)]
            clients = [
                asyncio.ensure_future(self._client(session, worker, n, opened[n])) for n in range(self.size)
            ]
            try:
                await asyncio.gather(*(event.wait() for event in opened))
                self.open_at = time.monotonic()
                await asyncio.gather(*clients)
            finally:
                for client in clients:
                    client.cancel()
                await asyncio.gather(*clients, return_exceptions=True)

    async def _client(
        self, session: aiohttp.ClientSession, worker: WorkerProcess, number: int, opened: asyncio.Event
    ) -> None:
        async with session.get(worker.url + "/dashboard/events") as response:
            if response.status != 200:
                raise BenchError(f"/dashboard/events answered {response.status}")
            tail = b""
            async for chunk in response.content.iter_any():  # as cheap as a client can be: bytes, no parsing
                text = tail + chunk
                if b"event: " in text:
                    opened.set()
                self.updates[number] += text.count(UPDATE)
                tail = text[-(len(UPDATE) - 1) :]
        self.ended_early += 1  # the worker closed it: dropped


async def run(
    bootstrap: str,
    suffix: str,
    count: int,
    partitions: int,
    scratch: Path,
    streams: int = 100,
    rounds: int = 2,
) -> None:
    input_topic = f"bench-streams-fills-{suffix}"
    await create_topics(bootstrap, [input_topic], partitions)
    print(
        f"\n== streams: the worker with {streams} open dashboard event streams vs none, {count:,} fills, "
        f"{partitions} partitions, {rounds} rounds ==",
        flush=True,
    )
    print(f"pre-loading {input_topic} ...", flush=True)
    per_partition = await preload(bootstrap, input_topic, lines(count))
    print(f"fills per partition: {spread(per_partition, partitions)}")
    rates: dict[int, list[float]] = {0: [], streams: []}
    cpu_costs: dict[int, list[float]] = {0: [], streams: []}
    rows = []
    for round_number in range(1, rounds + 1):
        for size in (0, streams):
            topics = SharedInput(f"streams{size}r{round_number}", suffix, shared_input=input_topic)
            await create_topics(bootstrap, [topics.deltas, topics.adl, topics.dlq], partitions)
            worker = WorkerProcess(bootstrap, topics, partitions, scratch, worker_id=f"{topics.app_id}-w0")
            crowd, cpu = Crowd(size), CpuSamples()
            print(f"round {round_number}, {size} streams ({load_note()}) ...", flush=True)
            watching = asyncio.ensure_future(crowd.watch(worker))
            sampling = asyncio.ensure_future(cpu.sample(worker))
            try:
                measured = await arrivals(bootstrap, topics.deltas, partitions, count, worker)
                await asyncio.sleep(0.1)  # a sample after the last delta
                if watching.done() and watching.exception() is not None:
                    raise BenchError(f"the stream clients failed: {watching.exception()!r}")
            finally:
                for task in (watching, sampling):
                    task.cancel()
                await asyncio.gather(watching, sampling, return_exceptions=True)
                worker.stop()
            if size and crowd.ended_early:
                raise BenchError(
                    f"the worker dropped {crowd.ended_early} of {size} streams that were reading"
                )
            rates[size].append(measured.steady_rate)
            fills_in_span = measured.count - measured.first_batch
            worker_cpu, own_cpu = cpu.between(measured.first, measured.last)
            cpu_per_thousand = worker_cpu / fills_in_span * 1000
            span = measured.steady_seconds
            busy = f"worker {worker_cpu / span:.0%} of a core, bench {own_cpu / span:.0%}"
            cpu_costs[size].append(cpu_per_thousand)
            if not size:
                note = ""
            elif crowd.open_at is None:
                note = "the streams never all opened"
            else:
                ahead = measured.first - crowd.open_at
                opened = (
                    f"all open {ahead:.1f} s before" if ahead >= 0 else f"NOT all open ({-ahead:.1f} s after)"
                )
                note = (
                    f"{opened} the first commit; updates per stream {min(crowd.updates)}-{max(crowd.updates)}"
                )
            rows.append(
                (
                    round_number,
                    size,
                    measured.steady_rate,
                    measured.steady_seconds,
                    cpu_per_thousand,
                    busy,
                    note,
                )
            )
    print(f"\n{'round':>5}{'streams':>9}{'fills/s':>10}{'seconds':>9}{'CPU ms/1k fills':>17}   CPU; streams")
    for round_number, size, rate, seconds, cpu_cost, busy, note in rows:
        figures = f"{round_number:>5}{size:>9}{rate:>10,.0f}{seconds:>9.1f}{cpu_cost * 1000:>17,.0f}"
        print(f"{figures}   {busy}; {note}")
    without, with_streams = statistics.median(rates[0]), statistics.median(rates[streams])
    ratio = with_streams / without
    cpu_without, cpu_with = statistics.median(cpu_costs[0]), statistics.median(cpu_costs[streams])
    cpu_ratio = cpu_with / cpu_without
    print(
        f"worker with {streams} open event streams / without (median of {rounds} runs each):\n"
        f"  throughput {with_streams:,.0f} / {without:,.0f} fills/s = {ratio:.2f}   "
        f"target >= {RATIO_TARGET} (at most 10% slower): {at_least(ratio, RATIO_TARGET)}\n"
        f"  CPU per 1,000 fills {cpu_with * 1000:,.0f} / {cpu_without * 1000:,.0f} ms = {cpu_ratio:.2f}   "
        f"target <= {CPU_TARGET} (at most 10% more): {at_most(cpu_ratio, CPU_TARGET)}"
    )


# --- the dashboard's own cost, without a broker ----------------------------------------------------------

FEED_FUNDS = ("USDT", "BTC", "ETH", "USDC")
COMMITS_PER_SECOND = 100  # a worker at ~30,000 fills/s commits about this often (3 busy partitions)
TRIGGERS_PER_SECOND = 500  # a crash's ADL triggers
READER = """
import asyncio, sys, aiohttp
async def main(url, count):
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def read():
            async with session.get(url) as response:
                async for _ in response.content.iter_any():
                    pass
        await asyncio.gather(*(read() for _ in range(count)))
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


class _Healthy:
    def health(self) -> tuple[str, str | None]:
        return "ok", None


class _FedTimeline:
    """No history; the live ADL records come from the feed below."""

    def __init__(self) -> None:
        self.sink: Sink | None = None

    async def read(self, since_ms: int) -> Window:
        raise NotImplementedError

    async def follow(self, sink: Sink) -> None:
        self.sink = sink
        await asyncio.Event().wait()


async def serving_cpu(streams: int, seconds: float) -> float:
    """CPU seconds per second this process spends serving the dashboard fed like a busy worker's."""
    view = FundsView({"bootstrap_servers": "127.0.0.1:9"}, "unused")
    opened = {fund: FundState.opened(fund, FundRules().policy_for(fund)) for fund in FEED_FUNDS}
    timeline = _FedTimeline()
    board = Dashboard(view, timeline)
    runner = await start_web("127.0.0.1", 0, view, _Healthy(), Metrics(view.states, dict), board)
    [(host, port)] = runner.addresses
    readers = None
    try:
        if streams:
            url = f"http://{host}:{port}/dashboard/events"
            readers = subprocess.Popen([sys.executable, "-c", READER, url, str(streams)])
            while board.live.streams < streams:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        started, cpu = time.monotonic(), time.process_time()
        sequence = 0
        while time.monotonic() - started < seconds:
            sequence += 1
            view.update(
                [
                    state._replace(balance=Decimal(sequence), sequence=sequence, last_timestamp=sequence)
                    for state in opened.values()
                ]
            )
            if timeline.sink is not None:
                for _ in range(TRIGGERS_PER_SECOND // COMMITS_PER_SECOND):
                    trigger = {
                        "fund": "USDT",
                        "reason": "no_liquidity",
                        "fund_balance": "1",
                        "sequence": sequence,
                    }
                    timeline.sink(TRIGGERS, {**trigger, "timestamp": sequence})
            await asyncio.sleep(1 / COMMITS_PER_SECOND)
        return (time.process_time() - cpu) / (time.monotonic() - started)
    finally:
        if readers is not None:
            readers.kill()
            readers.wait()
        await runner.cleanup()


async def serving_cost(streams: int, seconds: float = 10.0, rounds: int = 2) -> None:
    print(f"\n== streams: the dashboard's own CPU with {streams} streams vs none (no broker) ==", flush=True)
    costs: dict[int, list[float]] = {0: [], streams: []}
    for _ in range(rounds):
        for size in (0, streams):
            costs[size].append(await serving_cpu(size, seconds))
    without, with_streams = statistics.median(costs[0]), statistics.median(costs[streams])
    print(
        f"this process, fed {COMMITS_PER_SECOND} commits/s of {len(FEED_FUNDS)} funds and "
        f"{TRIGGERS_PER_SECOND} ADL triggers/s: {without:.1%} of a core without streams, "
        f"{with_streams:.1%} with {streams}: the streams cost {with_streams - without:.1%} of a core   "
        f"target <= 10%: {at_most(with_streams - without, 0.1)}"
    )
