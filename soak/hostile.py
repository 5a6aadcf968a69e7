"""Hostile input at volume, the long run: ``make soak`` runs it as one scenario, and on its own

    python -m soak.hostile --bad 10000 --good 10000      # a broker of its own unless KAFKA_BOOTSTRAP_SERVERS
    python -m soak.hostile --bad 1000 --good 1000 --partitions 3   # forwarding too, and fills at the limit

``testkit/hostile.py`` has the stream and the checks (the quick tests run them too).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from testkit.broker import kafka_broker
from testkit.harness import Tally
from testkit.hostile import Say, run_hostile


def _quiet(_: str) -> None:
    pass


def hostile_scenario(
    bootstrap: str, scratch: Path, *, bad: int, seed: int, good: int | None = None, say: Say = _quiet
) -> Tally:
    """The hostile run as a ``make soak`` scenario."""
    result = run_hostile(bootstrap, scratch, bad, bad if good is None else good, seed, say=say)
    for line in result.summary().splitlines():
        say(f"  {line}")
    tally = Tally("hostile input")
    tally.events_checked = result.dlq_count + result.deltas_count + result.triggers_count
    tally.dlq = result.dlq_count
    tally.losses = result.missing_dead_letters + max(0, result.expected_deltas - result.deltas_count)
    tally.duplicates = result.extra_dead_letters + max(0, result.deltas_count - result.expected_deltas)
    tally.mismatches = len(result.mismatches)
    tally.peak_rss = result.peak_rss_bytes
    tally.seconds = result.seconds
    if not result.worker_alive or not result.worker_healthy:
        tally.problems.append("the worker did not stay up and healthy")
    if not result.memory_ok:
        tally.problems.append("memory not bounded")
    tally.problems.extend(result.mismatches[:10])
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bad", type=int, default=10_000, help="messages that must be dead-lettered")
    parser.add_argument("--good", type=int, default=10_000, help="valid fills")
    parser.add_argument("--huge", type=int, default=None, help="messages of ~1 MB (default: 1 in 500, >= 4)")
    parser.add_argument("--duplicates", type=int, default=None, help="exact duplicates (default: good / 50)")
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--seed", type=int, default=20261125)
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)

    scratch = Path(tempfile.mkdtemp(prefix="hostile-"))
    say(f"scratch directory {scratch}")
    with kafka_broker(scratch / "kafka") as bootstrap:
        result = run_hostile(
            bootstrap,
            scratch / "run",
            args.bad,
            args.good,
            args.seed,
            huge=args.huge,
            duplicates=args.duplicates,
            partitions=args.partitions,
            say=say,
        )
    print(result.summary())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
