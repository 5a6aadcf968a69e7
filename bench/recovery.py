"""Recovery: SIGKILL a worker holding 1M fills and time its restart with the same WORKER_ID.

The worker folds the pre-loaded fills until /funds counts all of them; every fill id stays in the
duplicate window (the generated event times span hours, the window is set to the default 7 days), so the
state to restore is the largest the input can make. The worker is then killed and started again with
the same APP_ID, WORKER_ID (static membership: no session timeout to wait for) and DATA_DIR. Printed:
seconds from the restart until /health answers 200, whether /funds then holds every fill and equals the
state before the kill, and the restarted process's peak RSS (VmHWM) once recovered.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import (
    MIB,
    BenchError,
    Topics,
    WorkerProcess,
    at_most,
    create_topics,
    fills_in,
    load_note,
    preload,
    spread,
)
from processor import codec
from processor.domain.ledger import DEFAULT_DUPLICATE_WINDOW_MS
from processor.simulate import fills

READY_TARGET_SECONDS = 5.0
RSS_TARGET_MIB = 300
STALL_SECONDS = 300.0
SETTLE_SECONDS = 30.0


class Span:
    """The event-time span of the generated fills, noted while they are produced."""

    def __init__(self) -> None:
        self.first = self.last = 0

    def lines(self, count: int) -> Iterator[bytes]:
        for fill in fills(count):
            timestamp = int(fill["timestamp"])  # type: ignore[call-overload]  # always an int here
            self.first = self.first or timestamp
            self.last = timestamp
            yield codec.dumps(fill)


async def fold_all(worker: WorkerProcess, session: aiohttp.ClientSession, count: int) -> dict[str, Any]:
    """Poll /funds until it counts ``count`` fills; return that state."""
    progressed = reported = time.monotonic()
    folded = 0
    while True:
        worker.check_alive()
        funds = await worker.funds(session)
        now = time.monotonic()
        if funds is not None:
            now_folded = fills_in(funds)
            if now_folded > folded:
                folded, progressed = now_folded, now
            if folded >= count:
                return funds
        if now - progressed > STALL_SECONDS:
            raise BenchError(f"/funds stuck at {folded:,} of {count:,} fills for {STALL_SECONDS:.0f} s")
        if now - reported > 15:
            print(f"  ... {folded:,} fills folded after {now - worker.started_at:.0f} s", flush=True)
            reported = now
        await asyncio.sleep(0.5)


async def run(bootstrap: str, suffix: str, count: int, partitions: int, scratch: Path) -> None:
    topics = Topics("recovery", suffix)
    window_ms = int(os.environ.get("DUPLICATE_WINDOW_MS", DEFAULT_DUPLICATE_WINDOW_MS))
    store = os.environ.get("STORE") or "memory"
    await create_topics(bootstrap, topics.all(), partitions)
    print(f"\n== recovery: {count:,} fills, SIGKILL, restart with the same WORKER_ID ({store} store) ==")
    print(f"pre-loading {topics.input} ...", flush=True)
    span = Span()
    per_partition = await preload(bootstrap, topics.input, span.lines(count), report_every=250_000)
    span_ms = span.last - span.first
    print(
        f"fills per partition: {spread(per_partition, partitions)}; event times span "
        f"{span_ms / 3_600_000:.1f} h, duplicate window {window_ms / 86_400_000:g} d"
        + ("" if span_ms < window_ms else " (SHORTER: not every id stays in the window)")
    )

    worker = WorkerProcess(
        bootstrap,
        topics,
        partitions,
        scratch,
        worker_id=f"{topics.app_id}-w0",
        extra_env={"DUPLICATE_WINDOW_MS": str(window_ms)},
    )
    try:
        async with aiohttp.ClientSession() as session:
            print(f"folding with the worker ({load_note()}) ...", flush=True)
            worker.start()
            before = await fold_all(worker, session, count)
            fold_seconds = time.monotonic() - worker.started_at
            first_peak = worker.memory()["VmHWM"]
            worker.kill()

            worker.start()
            ready = await worker.wait_healthy(session, timeout=600)
            ready_seconds = ready - worker.started_at
            after = await worker.funds(session)
            held = fills_in(after or {})
            complete_at = ready if after == before else None
            while complete_at is None and time.monotonic() - ready < SETTLE_SECONDS:
                await asyncio.sleep(0.1)
                after = await worker.funds(session)
                if after == before:
                    complete_at = time.monotonic()
            await asyncio.sleep(1.0)
            memory = worker.memory()
            samples = await worker.metrics(session)
    finally:
        worker.stop()

    equal = complete_at == ready
    peak_mib = memory["VmHWM"] / MIB
    print(
        f"\nfolded {count:,} fills in {fold_seconds:.1f} s incl. start-up "
        f"({count / fold_seconds:,.0f} fills/s); "
        f"peak RSS before the kill {first_peak / MIB:.0f} MiB"
    )
    verdict = "yes" if equal else (
        f"NO (equal {complete_at - ready:.2f} s later)" if complete_at is not None
        else f"NO (not within {SETTLE_SECONDS:.0f} s)"
    )  # fmt: skip
    rows = [
        ("restart -> /health 200", f"{ready_seconds:.2f} s",
         f"<= {READY_TARGET_SECONDS:g} s: {at_most(ready_seconds, READY_TARGET_SECONDS)}"),
        ("/funds at 200: sum of fills", f"{held:,}", f"all {count:,}: {'yes' if held == count else 'NO'}"),
        ("/funds at 200 equals the state before the kill", verdict, ""),
        ("restarted worker peak RSS (VmHWM), recovered", f"{peak_mib:.0f} MiB",
         f"<= {RSS_TARGET_MIB} MiB ({store} store): {at_most(peak_mib, RSS_TARGET_MIB)}"),
        ("restarted worker RSS now (VmRSS)", f"{memory['VmRSS'] / MIB:.0f} MiB", ""),
        ("  of which: claim (fence + restore) in the worker",
         f"{samples.get('insurance_fund_last_claim_seconds', float('nan')):.2f} s", ""),
        ("  fills restored into the duplicate windows",
         f"{samples.get('insurance_fund_last_claim_restored_fills', 0):,.0f}", ""),
    ]  # fmt: skip
    for name, value, target in rows:
        print(f"{name:<50}{value:>14}   {target}")
    if complete_at is None:
        raise BenchError(
            f"after the restart /funds holds {held:,} fills and differs from the state before the kill"
        )
