"""``make soak``: the long crash and hostile-input scenarios against a real broker, then one table.

    python -m soak [--kills 50] [--fills 30000] [--rounds 4] [--rolling-rounds 2] [--restarts 3]
                   [--bad 10000] [--only NAME ...]
    python -m soak --cluster [--leader-kills 5] [--coordinator-kills 3] [--broker-rounds 1]
                   [--fills 30000] [--only NAME ...]

``--cluster`` (``make soak-cluster``) runs the broker failover scenarios instead, on a private 3-node
cluster (``scripts/cluster.sh``) with two workers, and adds the longest stalls to the table.

The scenarios themselves live in ``testkit`` (``make test`` runs short versions of the same code);
this module holds the long-run settings and the table.

Exits 1 if any scenario lost, repeated or changed an event, or had any other problem.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from testkit.broker import kafka_broker
from testkit.cluster import JarCluster
from testkit.failover import FailoverTally, failover_scenario
from testkit.harness import Tally
from testkit.scenarios import (
    backlog_scenario,
    broker_restart_scenario,
    kill_scenario,
    rebalance_scenario,
    rolling_scenario,
)

SCENARIOS = ("kill", "backlog", "rebalance", "rolling", "broker", "hostile")
#: ``--cluster`` scenarios, and what each disrupts (``testkit.failover.TARGETS``)
CLUSTER_SCENARIOS = {
    "leader": "leader",
    "transaction-coordinator": "transaction coordinator",
    "group-coordinator": "group coordinator",
    "broker-rolling": "rolling",
}


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _cells(tally: Tally, stalls: bool) -> tuple[str, ...]:
    stall = (
        (f"{tally.longest_output_stall:.1f}", f"{tally.longest_input_stall:.1f}")
        if isinstance(tally, FailoverTally)
        else ("", "")
    )
    return (
        tally.scenario,
        str(tally.kills),
        str(tally.busy_kills),
        str(tally.restarts),
        str(tally.events_checked),
        str(tally.duplicates),
        str(tally.losses),
        str(tally.mismatches),
        str(tally.dlq),
        f"{tally.peak_rss / 2**20:.0f}",
        f"{tally.seconds:.0f}",
        *(stall if stalls else ()),
        "ok" if tally.ok else "FAILED",
    )


def table(tallies: list[Tally], stalls: bool = False) -> str:
    """The soak's table; with ``stalls``, the longest output and input stalls of each scenario too."""
    header = (
        "scenario",
        "kills survived",
        "while processing",
        "restarts",
        "events checked",
        "duplicates",
        "losses",
        "mismatches",
        "DLQ",
        "peak RSS MiB",
        "seconds",
        *(("longest output stall s", "longest input stall s") if stalls else ()),
        "result",
    )
    totals = FailoverTally("total")
    for tally in tallies:
        totals.kills += tally.kills
        totals.busy_kills += tally.busy_kills
        totals.restarts += tally.restarts
        totals.events_checked += tally.events_checked
        totals.duplicates += tally.duplicates
        totals.losses += tally.losses
        totals.mismatches += tally.mismatches
        totals.dlq += tally.dlq
        totals.peak_rss = max(totals.peak_rss, tally.peak_rss)
        totals.seconds += tally.seconds
        totals.problems += tally.problems
        if isinstance(tally, FailoverTally):
            totals.longest_output_stall = max(totals.longest_output_stall, tally.longest_output_stall)
            totals.longest_input_stall = max(totals.longest_input_stall, tally.longest_input_stall)
    rows = [header, *(_cells(tally, stalls) for tally in [*tallies, totals])]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [" | ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    lines.insert(len(lines) - 1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=50, help="SIGKILLs in the kill scenario (50)")
    parser.add_argument("--fills", type=int, default=30_000, help="valid fills per crash scenario (30000)")
    parser.add_argument("--rounds", type=int, default=4, help="leave-and-rejoin rounds (4)")
    parser.add_argument(
        "--rolling-rounds", type=int, default=2, help="rolling restarts of all 3 workers, one by one (2)"
    )
    parser.add_argument("--restarts", type=int, default=3, help="broker restarts (3)")
    parser.add_argument("--bad", type=int, default=10_000, help="malformed messages in the hostile scenario")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument(
        "--cluster", action="store_true", help="the broker failover scenarios, on a private 3-node cluster"
    )
    parser.add_argument("--leader-kills", type=int, default=5, help="input partition leader kills (5)")
    parser.add_argument(
        "--coordinator-kills", type=int, default=3, help="kills of each kind of coordinator (3)"
    )
    parser.add_argument("--broker-rounds", type=int, default=1, help="rolling restarts of all 3 brokers (1)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[*SCENARIOS, *CLUSTER_SCENARIOS],
        help=f"single broker: {', '.join(SCENARIOS)} (all by default); --cluster:"
        f" {', '.join(CLUSTER_SCENARIOS)} (all by default)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # client reconnect noise during broker restarts
    if args.cluster:
        if not set(args.only or ()) <= set(CLUSTER_SCENARIOS):
            parser.error(
                f"--only {' '.join(args.only)}: with --cluster, expected {', '.join(CLUSTER_SCENARIOS)}"
            )
        return soak_cluster(args)
    args.only = args.only or list(SCENARIOS)
    if not set(args.only) <= set(SCENARIOS):
        parser.error(f"--only {' '.join(args.only)}: the cluster scenarios need --cluster")

    scratch = Path(tempfile.mkdtemp(prefix="soak-"))
    say(f"scratch directory {scratch}")
    tallies: list[Tally] = []

    def place(name: str) -> Path:
        folder = scratch / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def record(run: Callable[[], Tally]) -> None:
        tally = run()
        tallies.append(tally)
        say(f"{tally.scenario}: {'ok' if tally.ok else 'FAILED'} in {tally.seconds:.0f} s")
        for problem in tally.problems:
            say(f"  problem: {problem}")

    with kafka_broker(scratch / "kafka") as bootstrap:
        if "kill" in args.only:
            say(f"kill -9: {args.kills} kills over {args.fills} fills")
            record(
                lambda: kill_scenario(
                    bootstrap, place("kill"), fills=args.fills, kills=args.kills, seed=args.seed, say=say
                )
            )
        if "backlog" in args.only:
            say(f"backlog start: {args.fills} fills waiting, 5 starts")
            backlog = place("backlog")
            record(
                lambda: backlog_scenario(
                    bootstrap, backlog, fills=args.fills, starts=5, seed=args.seed, say=say
                )
            )
        if "rebalance" in args.only:
            say(f"rebalance: {args.rounds} rounds over {args.fills} fills")
            record(
                lambda: rebalance_scenario(
                    bootstrap,
                    place("rebalance"),
                    fills=args.fills,
                    rounds=args.rounds,
                    seed=args.seed,
                    say=say,
                )
            )
        if "rolling" in args.only:
            say(f"rolling restart: 3 workers, {args.rolling_rounds} rounds over {args.fills} fills")
            record(
                lambda: rolling_scenario(
                    bootstrap,
                    place("rolling"),
                    fills=args.fills,
                    rounds=args.rolling_rounds,
                    seed=args.seed,
                    say=say,
                )
            )
        if "hostile" in args.only:
            from soak.hostile import hostile_scenario

            say(f"hostile input: {args.bad} malformed messages among valid fills")
            record(
                lambda: hostile_scenario(bootstrap, place("hostile"), bad=args.bad, seed=args.seed, say=say)
            )
    if "broker" in args.only:
        say(f"broker restart: {args.restarts} restarts over {args.fills // 2} fills")
        record(
            lambda: broker_restart_scenario(
                place("broker"), fills=args.fills // 2, restarts=args.restarts, seed=args.seed, say=say
            )
        )
    print()
    print(table(tallies))
    return 0 if all(tally.ok for tally in tallies) else 1


def soak_cluster(args: argparse.Namespace) -> int:
    """The failover scenarios, one after another on one private 3-node cluster, then the table."""
    only = args.only or list(CLUSTER_SCENARIOS)
    rounds = {
        "leader": args.leader_kills,
        "transaction-coordinator": args.coordinator_kills,
        "group-coordinator": args.coordinator_kills,
        "broker-rolling": args.broker_rounds,
    }
    scratch = Path(tempfile.mkdtemp(prefix="soak-cluster-"))
    say(f"scratch directory {scratch}")
    tallies: list[Tally] = []
    cluster = JarCluster(scratch / "cluster")
    try:
        cluster.up()
        say(f"3-node cluster at {cluster.bootstrap}")
        for name in only:
            say(f"{name}: {rounds[name]} round(s) over {args.fills} fills, 2 workers")
            try:
                tally = failover_scenario(
                    cluster,
                    scratch / name,
                    CLUSTER_SCENARIOS[name],
                    fills=args.fills,
                    rounds=rounds[name],
                    seed=args.seed,
                    say=say,
                )
            except Exception as error:  # reported in the table; the next scenario still runs
                tally = FailoverTally(name, problems=[f"the scenario crashed: {error!r}"])
                cluster.up()
            tallies.append(tally)
            say(f"{tally.scenario}: {'ok' if tally.ok else 'FAILED'} in {tally.seconds:.0f} s")
            for problem in tally.problems:
                say(f"  problem: {problem}")
    finally:
        ok = len(tallies) == len(only) and all(tally.ok for tally in tallies)
        cluster.down(purge=ok)  # on a failure the nodes' logs stay in the scratch directory
    print()
    print(table(tallies, stalls=True))
    return 0 if all(tally.ok for tally in tallies) else 1


if __name__ == "__main__":
    sys.exit(main())
