"""Command line: ``python -m processor {replay,worker,produce}``. The composition root."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from processor.codec import FillDecoder, SchemaError
from processor.config import ADL_VARIABLES, ConfigError, InputError, Settings, duplicate_window, fund_rules
from processor.domain.ledger import Ledger
from processor.logs import configure_logging
from processor.pipeline import Pipeline
from processor.replay import OutputFiles, Progress, collect_rarely, read_lines, replay_lines, summary_lines


def _add_fund_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("fund rules (default: the FUND_* environment variables)")
    group.add_argument("--default-precision", help="decimal places of every fund not listed (default 8)")
    group.add_argument("--precision", help="per-currency places, e.g. BTC=10,USDT=8")
    group.add_argument("--default-floor", help="floor of every fund not listed (default 0)")
    group.add_argument("--floor", help="per-currency floors, e.g. USDT=1000")
    group.add_argument("--initial-balance", help="per-currency initial balances, e.g. USDT=1000000")
    group.add_argument("--pools-file", help="TOML file of isolated fund pools (SPEC section 7)")
    group.add_argument("--duplicate-window-ms", help="event-time window of duplicate detection")


def _apply_fund_options(settings: Settings, args: argparse.Namespace) -> Settings:
    env = os.environ
    rules = fund_rules(
        default_precision=args.default_precision or env.get("FUND_DEFAULT_PRECISION"),
        precision=args.precision or env.get("FUND_PRECISION", ""),
        default_floor=args.default_floor or env.get("FUND_DEFAULT_FLOOR"),
        floors=args.floor or env.get("FUND_FLOORS", ""),
        initial_balances=args.initial_balance or env.get("FUND_INITIAL_BALANCES", ""),
        pools_file=args.pools_file or env.get("FUND_POOLS_FILE"),
        pools_variable="--pools-file" if args.pools_file else "FUND_POOLS_FILE",
        drawdown={name: env[name] for name in ADL_VARIABLES if env.get(name)},
    )
    window = (
        duplicate_window(args.duplicate_window_ms, "--duplicate-window-ms")
        if args.duplicate_window_ms is not None
        else settings.duplicate_window_ms
    )
    return settings.replace(rules=rules, duplicate_window_ms=window)


def _add_jobs_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jobs",
        metavar="N",
        help=f"processes folding the partitions in parallel (default: the cores, {os.cpu_count() or 1})",
    )


def _jobs(text: str | None) -> int:
    """``--jobs``: a whole number >= 1; the number of cores when not given."""
    if text is None:
        return os.cpu_count() or 1
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise InputError(f"--jobs: expected a whole number of processes >= 1, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m processor", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    replay = commands.add_parser("replay", help="fold a JSONL file (or a topic) into state and output files")
    source = replay.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="JSONL file of liquidation fills, one per line; - for stdin")
    source.add_argument("--topic", help="Kafka topic to replay (read_committed, every partition, no group)")
    start = replay.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="from each partition's start (default)")
    start.add_argument(
        "--from-timestamp", type=int, metavar="MS", help="from the first record at or after MS"
    )
    start.add_argument(
        "--from-offsets", metavar="P:O,...", help="from these offsets (other partitions: start)"
    )
    replay.add_argument(
        "--until-timestamp",
        type=int,
        metavar="MS",
        help="only fills with event time <= MS: the funds at time MS",
    )
    replay.add_argument("--emit-prefix", help="also publish outputs to PREFIX<output topic>, e.g. replay.")
    _add_jobs_option(replay)
    replay.add_argument(
        "--partitions",
        metavar="P[-P],...",
        help="only these partitions of --topic, e.g. 0-5 (README: several machines)",
    )
    replay.add_argument("--state-out", type=Path, help="write the final state (JSON keyed by fund)")
    replay.add_argument("--deltas-out", type=Path, help="write fund deltas, one per line")
    replay.add_argument("--adl-out", type=Path, help="write ADL triggers, one per line")
    replay.add_argument("--dlq-out", type=Path, help="write dead letters, one per line")
    replay.add_argument(
        "--adl-states-out", type=Path, help="write ADL policy state changes, one per line (SPEC section 9)"
    )
    replay.add_argument("--quiet", action="store_true", help="no per-fund summary")
    _add_fund_options(replay)

    worker = commands.add_parser("worker", help="run the stream processor (a consumer group member)")
    _add_fund_options(worker)

    commands.add_parser("demo", help="run a worker, a simulated crash feed and a live view of the funds")

    audit = commands.add_parser(
        "audit", help="verify the deltas ledger and compare it with a replay of the input"
    )
    audit.add_argument(
        "--worker-url", help="also compare with GET /funds of this worker, e.g. http://127.0.0.1:6066"
    )
    audit.add_argument("--deltas-topic", help="ledger topic to audit (default: DELTAS_TOPIC)")
    audit.add_argument("--input-topic", help="input topic to replay (default: INPUT_TOPIC)")
    _add_jobs_option(audit)
    _add_fund_options(audit)

    fund = commands.add_parser("fund", help="top up, withdraw from or transfer between funds (treasury)")
    actions = fund.add_subparsers(dest="action", required=True)
    for action, help_text in (
        ("top-up", "add AMOUNT to --fund"),
        ("withdraw", "take AMOUNT from --fund (refused below its floor)"),
        ("transfer", "withdraw AMOUNT from --fund, then, once committed, top up --to"),
    ):
        command = actions.add_parser(action, help=help_text)
        command.add_argument("--fund", required=True, help="a currency (its fund) or a pool id")
        if action == "transfer":
            command.add_argument("--to", required=True, help="the fund that receives AMOUNT (same currency)")
        command.add_argument("--amount", required=True, help="a decimal > 0, in the fund's currency")
        command.add_argument("--reason", required=True, help="why (kept in the delta)")
        command.add_argument(
            "--requested-by", help="who asks (default: the login name); recorded, not trusted"
        )
        if action != "transfer":
            command.add_argument("--operation-id", help="idempotency key (default: a new random id)")
        command.add_argument(
            "--transfer-id", help="pair this operation with a transfer's other leg (transfer: its id)"
        )
        command.add_argument(
            "--timeout",
            type=float,
            default=30.0,
            help="seconds to wait for each committed outcome (default 30)",
        )
        _add_fund_options(command)

    produce = commands.add_parser("produce", help="load a JSONL file into the input topic")
    produce.add_argument("--input", required=True, help="JSONL file, one message per line; - for stdin")
    produce.add_argument("--topic", help="topic to write (default: INPUT_TOPIC)")
    return parser


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    collect_rarely()
    pipeline = Pipeline(FillDecoder.from_schema_dir(), Ledger(settings.rules, settings.duplicate_window_ms))
    outputs = OutputFiles(args.state_out, args.deltas_out, args.adl_out, args.dlq_out, args.adl_states_out)
    topic_only = [args.from_timestamp, args.from_offsets, args.until_timestamp, args.emit_prefix]
    topic_only += [args.jobs, args.partitions]
    if args.topic is None and any(option is not None for option in topic_only):
        raise InputError("--from-*, --until-timestamp, --emit-prefix, --jobs and --partitions need --topic")
    if args.topic is not None:
        from processor.stream.replay import Start, parse_partitions, replay_topic

        jobs = _jobs(args.jobs)
        partitions = parse_partitions(args.partitions) if args.partitions is not None else None
        start = Start.parse_offsets(args.from_offsets) if args.from_offsets else Start(args.from_timestamp)
        totals = asyncio.run(
            replay_topic(
                settings,
                pipeline,
                args.topic,
                start,
                outputs,
                args.until_timestamp,
                args.emit_prefix,
                Progress(),
                jobs,
                partitions,
            )
        )
    else:
        totals = replay_lines(read_lines(args.input), pipeline, outputs, args.input, Progress())
    if not args.quiet:
        for line in summary_lines(pipeline.ledger):
            print(line)
        print(
            f"{totals.messages} messages: {totals.deltas} deltas, {totals.triggers} ADL triggers, "
            f"{totals.dead_letters} dead letters in {totals.seconds:.2f}s",
            file=sys.stderr,
        )
    return 0


def _worker(settings: Settings) -> int:
    from processor.stream.worker import run_worker

    gc.freeze()  # what start-up loaded lives for the whole run; keep the collector off it
    return run_worker(settings)


def _produce(settings: Settings, args: argparse.Namespace) -> int:
    from processor.stream.produce import produce_lines

    topic = args.topic or settings.input_topic
    sent = asyncio.run(produce_lines(settings, topic, read_lines(args.input)))
    print(f"produced {sent} messages to {topic}", file=sys.stderr)
    return 0


def _audit(settings: Settings, args: argparse.Namespace) -> int:
    from processor.stream.audit import audit

    collect_rarely()
    settings = settings.replace(
        deltas_topic=args.deltas_topic or settings.deltas_topic,
        input_topic=args.input_topic or settings.input_topic,
    )
    report = asyncio.run(audit(settings, args.worker_url, _jobs(args.jobs)))
    for transfer in report.open_transfers:
        print(f"  open {transfer}")
    for finding in report.findings[:20]:
        print(f"  {finding}")
    print(report.verdict())
    return 0 if report.passed else EXIT_AUDIT_FAILED


def _fund(settings: Settings, args: argparse.Namespace) -> int:
    import getpass

    from processor.stream.treasury import OutcomeTimeoutError, Request, run_request

    kinds = {"top-up": "top_up", "withdraw": "withdrawal", "transfer": "transfer"}
    if args.timeout <= 0:
        raise InputError(f"--timeout: must be > 0, got {args.timeout:g}")
    request = Request(
        kind=kinds[args.action],
        fund=args.fund,
        amount=args.amount,
        reason=args.reason,
        requested_by=args.requested_by or getpass.getuser(),
        to=getattr(args, "to", None),
        operation_id=getattr(args, "operation_id", None),
        transfer_id=args.transfer_id,
    )
    try:
        results = asyncio.run(run_request(settings, request, args.timeout))
    except OutcomeTimeoutError as timed_out:
        return _fail(str(timed_out), EXIT_TIMED_OUT, False)
    for result in results:
        if result.applied:
            print(result.describe())
    last = results[-1]
    if not last.applied:
        if len(results) > 1:
            print(
                f"transfer {last.operation.transfer_id}: the withdrawal is applied, the top-up is not",
                file=sys.stderr,
            )
        return _fail(last.describe(), EXIT_REFUSED, False)
    return 0


#: Exit codes (the README's "Exit codes"): 0 done, 1 the broker is unreachable or refuses us,
#: 2 a bad setting or argument, 3 an audit that found a divergence, 4 an operation refused or
#: dead-lettered, 5 no outcome for an operation in time, 70 a batch that failed.
EXIT_BROKER, EXIT_USAGE, EXIT_AUDIT_FAILED, EXIT_REFUSED, EXIT_TIMED_OUT = 1, 2, 3, 4, 5


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every expected failure ends in one ``error:`` line and its exit code."""
    args = build_parser().parse_args(argv)
    debug = os.environ.get("LOG_LEVEL", "").lower() == "debug"
    try:
        return _run(args)
    except (ConfigError, SchemaError, InputError) as error:
        return _fail(str(error), EXIT_USAGE, debug)
    except SystemExit as exit_:
        if isinstance(exit_.code, str):  # a command that gave up with a reason (the demo's worker)
            return _fail(exit_.code, EXIT_BROKER, debug)
        raise
    except BaseException as error:
        from processor.stream.connect import describe_broker_error

        described = describe_broker_error(error, os.environ)
        if described is None:
            raise
        return _fail(described, EXIT_BROKER, debug)


def _fail(message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    return code


def _run(args: argparse.Namespace) -> int:
    settings = Settings.from_env(os.environ)
    # The worker logs at LOG_LEVEL; a one-shot command prints its outcome (or one error: line) and
    # logs nothing unless LOG_LEVEL asks for it.
    quiet = args.command != "worker" and not os.environ.get("LOG_LEVEL")
    configure_logging("critical" if quiet else settings.log_level, settings.log_format)
    if args.command == "replay":
        return _replay(_apply_fund_options(settings, args), args)
    if args.command == "worker":
        return _worker(_apply_fund_options(settings, args))
    if args.command == "produce":
        return _produce(settings, args)
    if args.command == "audit":
        return _audit(_apply_fund_options(settings, args), args)
    if args.command == "fund":
        return _fund(_apply_fund_options(settings, args), args)
    if args.command == "demo":
        from processor.demo import run_demo

        return run_demo(settings)
    raise AssertionError(f"unhandled command {args.command}")
