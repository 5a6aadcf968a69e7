"""``make bench``: the worker on a real broker: throughput, latency and recovery.

- throughput: the worker (``python -m processor worker``, a subprocess) over pre-loaded fills against a
  bare aiokafka consume -> produce pipe over the same input (``bench/throughput.py``);
- latency: fill -> committed delta at paced rates on a running worker, beside the cost of one Kafka
  transaction on the same broker (``bench/latency.py``);
- recovery: SIGKILL a worker holding 1M fills, restart it with the same WORKER_ID: seconds to /health 200,
  the state it then holds, its peak RSS (``bench/recovery.py``);
- streams: throughput with 100 clients reading the dashboard's event stream against none, on the same input
  (``bench/streams.py``).

Each phase uses a fresh APP_ID and fresh topics, deleted afterwards. Figures are printed beside their
targets ("met" / "MISSED by X%"); a miss never fails the run. The exit status is 1 only when something is
broken: lost or duplicated deltas, a worker that dies, a state that differs after recovery. Uses
``KAFKA_BOOTSTRAP_SERVERS`` or starts the local broker. The worker's own variables (BATCH_SIZE,
BATCH_SECONDS, STORE, ...) pass through from the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import uuid
from pathlib import Path

from bench import latency, recovery, streams, throughput
from bench.harness import BenchError, broker, delete_topics_with

PHASES = ("throughput", "latency", "recovery", "streams")


async def main_async(args: argparse.Namespace, phases: list[str]) -> list[str]:
    """Run the phases; return what broke (a broken phase does not stop the next one)."""
    suffix = uuid.uuid4().hex[:8]
    failures = []
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        try:
            for phase in phases:
                folder = Path(scratch) / phase
                folder.mkdir()
                try:
                    await run_phase(phase, args, bootstrap, suffix, folder)
                except BenchError as failure:
                    print(f"\n{phase} BROKEN: {failure}", file=sys.stderr, flush=True)
                    failures.append(f"{phase}: {failure}")
        finally:
            if not args.keep_topics:
                await delete_topics_with(bootstrap, suffix)
    return failures


async def run_phase(phase: str, args: argparse.Namespace, bootstrap: str, suffix: str, folder: Path) -> None:
    if phase == "throughput":
        await throughput.run(
            bootstrap, suffix, args.count, args.partitions, folder, replay=not args.no_replay
        )
    elif phase == "latency":
        await latency.run(
            bootstrap,
            suffix,
            args.partitions,
            folder,
            rates=args.rates,
            seconds=args.seconds,
            warmup_seconds=args.warmup,
        )
    elif phase == "streams":
        await streams.run(
            bootstrap,
            suffix,
            args.count,
            args.partitions,
            folder,
            streams=args.streams,
            rounds=args.stream_rounds,
        )
        await streams.serving_cost(args.streams)
    else:
        await recovery.run(bootstrap, suffix, args.recovery_count, args.partitions, folder)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=PHASES, action="append", help="run only this phase (repeatable)")
    parser.add_argument("--skip", choices=PHASES, action="append", default=[], help="skip this phase")
    parser.add_argument("--partitions", type=int, default=4, help="input partitions (default 4)")
    parser.add_argument("--count", type=int, default=200_000, help="throughput: pre-loaded fills")
    parser.add_argument("--no-replay", action="store_true", help="throughput: skip the replay --topic figure")
    parser.add_argument(
        "--rates", type=int, nargs="+", default=[1_000, 5_000], help="latency: offered fills/s"
    )
    parser.add_argument("--seconds", type=float, default=12.0, help="latency: seconds per rate")
    parser.add_argument("--warmup", type=float, default=3.0, help="latency: warm-up seconds")
    parser.add_argument("--recovery-count", type=int, default=1_000_000, help="recovery: fills folded")
    parser.add_argument("--streams", type=int, default=100, help="streams: open dashboard event streams")
    parser.add_argument("--stream-rounds", type=int, default=2, help="streams: runs with and without them")
    parser.add_argument("--keep-topics", action="store_true", help="keep the run's topics")
    args = parser.parse_args()
    phases = [phase for phase in (args.only or PHASES) if phase not in args.skip]
    failures = asyncio.run(main_async(args, phases))
    if failures:
        print("\nBENCH BROKEN (not a timing miss):\n  " + "\n  ".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
