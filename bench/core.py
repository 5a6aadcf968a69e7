"""``make bench-core``: throughput of decode + fold + encode, and of file replay, on one core; topic
replay (``replay --topic``) in one process and in two, when a broker answers."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import orjson

from bench.generate import lines
from processor import codec, native
from processor.codec import FillDecoder
from processor.domain.events import LiquidationFill
from processor.domain.fold import exact_arithmetic
from processor.domain.ledger import DuplicateWindow, Ledger, pack_fill, pack_texts
from processor.pipeline import Pipeline
from processor.replay import OutputFiles, read_lines, replay_lines
from processor.simulate import Market, fills

TARGET_PER_SECOND = 150_000
TARGET_BARE_RATIO = 0.6
TARGET_WINDOW_RATIO = 0.5
TARGET_JOBS_RATIO = 1.6
#: The topic replay's feed: four funds with equal shares of the fills, keyed by currency on
#: ``TOPIC_PARTITIONS`` partitions, where each currency has a partition of its own. A replay folds each
#: fund in one process, so two processes can at best halve the time when the funds' shares allow it:
#: with one fund holding a share s of the fills, the bound is 1 / s (the default feed: USDT, 4/7: 1.75).
TOPIC_MARKETS = (
    Market("BTCUSDT", "USDT", "linear", "0.001", 28000),
    Market("BTCUSDC", "USDC", "linear", "0.001", 28000),
    Market("BTCUSD", "BTC", "inverse", "100", 28000),
    Market("ETHUSD", "ETH", "inverse", "10", 1600),
)
TOPIC_PARTITIONS = 8
OUTPUT_FLAGS = {
    "--state-out": "state.json",
    "--deltas-out": "deltas.jsonl",
    "--adl-out": "adl.jsonl",
    "--dlq-out": "dlq.jsonl",
}


def bare_loop(messages: list[bytes]) -> float:
    """The floor of what Python can do: orjson + Decimal + the arithmetic + orjson, no validation."""
    started = time.perf_counter()
    balance = Decimal(0)
    for message in messages:
        event = orjson.loads(message)
        price, bankruptcy = Decimal(event["fill_price"]), Decimal(event["bankruptcy_price"])
        quantity, size = Decimal(event["quantity"]), Decimal(event["contract_size"])
        fee = Decimal(event["fee"])
        net = ((price - bankruptcy) * quantity * size).quantize(Decimal("1E-8")) - fee
        before, balance = balance, balance + net
        orjson.dumps(
            {"fill_id": event["fill_id"], "net": str(net), "before": str(before), "after": str(balance)}
        )
    return time.perf_counter() - started


def in_process(messages: list[bytes]) -> float:
    pipeline = Pipeline(FillDecoder.from_schema_dir(), Ledger())
    process = pipeline.process
    started = time.perf_counter()
    with exact_arithmetic():
        for offset, message in enumerate(messages):
            process(message, None, "bench", 0, offset)
    return time.perf_counter() - started


def core_rates(messages: list[bytes], rounds: int) -> tuple[float, float]:
    """The bare loop and decode + fold + encode, run in turn ``rounds`` times: the best seconds of
    each (the machine is shared; the least disturbed run of each is the one to compare)."""
    bare = core = float("inf")
    for _ in range(rounds):
        bare = min(bare, bare_loop(messages))
        core = min(core, in_process(messages))
    return bare, core


def probe(probe: str, count: int, rounds: int, *, pure: bool) -> dict[str, float] | None:
    """Figures measured in a fresh process (``--probe``): ``core`` (``core_rates``) or ``window``
    (``window_costs``), with the hot modules run from source when ``pure`` (``PROCESSOR_PURE=1``:
    the same code as it ran before it was compiled)."""
    command = [sys.executable, "-m", "bench.core", "--count", str(count), "--core-rounds", str(rounds)]
    command += ["--probe", probe]
    environment = {**os.environ, "PROCESSOR_PURE": "1" if pure else "0"}
    done = subprocess.run(command, env=environment, capture_output=True, check=False)
    if done.returncode != 0:
        print(f"the {probe} probe failed: {done.stderr.decode()[-500:]}")
        return None
    figures: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return figures


def topic_probe(count: int, rounds: int) -> list[tuple[str, float]]:
    """``topic_replay_rates`` in a process of its own, which has generated nothing: run from this one,
    which holds the generated fills, the replays measured 5-10% slower with ``--jobs 2`` (a parent's
    large heap, on this machine), where an operator runs them from a shell. Its lines are shown as
    they come; the last is the figures."""
    command = [sys.executable, "-m", "bench.core", "--count", str(count), "--rounds", str(rounds)]
    command += ["--probe", "topic"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as running:
        assert running.stdout is not None
        last = ""
        for line in running.stdout:
            if last:
                print(last, end="", flush=True)
            last = line
    if running.returncode != 0:
        raise SystemExit(f"the topic replay probe failed ({running.returncode}): {last.strip()}")
    seconds = json.loads(last)
    return [(f"topic replay --jobs {jobs} (4 files, best of {rounds})", seconds[jobs - 1]) for jobs in (1, 2)]


def fill_texts(message: bytes) -> tuple[str, ...]:
    """What the decoder's fast path packs a fill from: the message's own texts."""
    document = json.loads(message)
    return (
        str(document["timestamp"]),
        document["margin_currency"],
        document["side"],
        document.get("contract_type") or "linear",
        document["contract_size"],
        document["bankruptcy_price"],
        document["fill_price"],
        document["quantity"],
        document.get("unfilled_quantity") or "0",
        document.get("fee") or "0",
        "1",
        document["liquidation_id"],
        document["symbol"],
    )


def window_costs(messages: list[bytes], rounds: int) -> dict[str, float]:
    """The duplicate window's seconds per fill, best of ``rounds``, and its bytes per fill:
    ``formatted``, the look-up and remembering of a fill packed by ``pack_fill`` (which formats nine
    decimals: the way it was); ``remembered``, the same of the bytes the decoder packed; ``packing``,
    what packing from the message's texts costs the decoder: the native scanner's time with its
    layout less its time without one (``pack_texts`` called from here, an upper bound, where the
    scanner is not built)."""
    decode_packed = FillDecoder.from_schema_dir().decode_packed
    decoded = [decode_packed(message) for message in messages]
    fills: list[LiquidationFill] = [fill for fill, _ in decoded]  # type: ignore[misc]  # all valid
    packs: list[bytes] = [packed for _, packed in decoded]  # type: ignore[misc]
    texts = [fill_texts(message) for message in messages]
    assert all(pack_texts(*parts) == packed for parts, packed in zip(texts, packs, strict=True))

    def formatted() -> DuplicateWindow:
        window = DuplicateWindow()
        get, remember = window.get, window.remember_packed
        for fill in fills:
            get(fill.fill_id)
            remember(fill.fill_id, fill.timestamp, pack_fill(fill))
        return window

    def remembered() -> DuplicateWindow:
        window = DuplicateWindow()
        get, remember = window.get, window.remember_packed
        for fill, packed in zip(fills, packs, strict=True):
            get(fill.fill_id)
            remember(fill.fill_id, fill.timestamp, packed)
        return window

    def packing() -> None:
        for parts in texts:
            pack_texts(*parts)

    scan_and_pack = FillDecoder.from_schema_dir().scan
    scan_only = FillDecoder.from_schema_dir(scanner_packs=False).scan

    def scanning_and_packing() -> None:
        for message in messages:
            scan_and_pack(message)

    def scanning() -> None:
        for message in messages:
            scan_only(message)

    runs = [("formatted", formatted), ("remembered", remembered)]
    if native.scanner_built():
        runs += [("scanning and packing", scanning_and_packing), ("scanning", scanning)]
    else:
        runs.append(("packing", packing))
    figures = {}
    for name, run in runs:
        best = float("inf")
        for _ in range(rounds):
            gc.collect()
            started = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - started)
        figures[name] = best / len(messages)
    if "scanning" in figures:
        figures["packing"] = max(0.0, figures["scanning and packing"] - figures["scanning"])
    gc.collect()
    tracemalloc.start()
    window = remembered()
    # what the window allocated, and the packed fills it holds (made before the count started)
    held = tracemalloc.get_traced_memory()[0] + sum(sys.getsizeof(packed) for packed in packs)
    figures["bytes"] = held / len(messages)
    tracemalloc.stop()
    assert len(window) == len(fills)
    return figures


def file_replay(path: Path, out: Path) -> float:
    pipeline = Pipeline(FillDecoder.from_schema_dir(), Ledger())
    outputs = OutputFiles(out / "state.json", out / "deltas.jsonl", out / "adl.jsonl", out / "dlq.jsonl")
    started = time.perf_counter()
    replay_lines(read_lines(str(path)), pipeline, outputs, str(path))
    return time.perf_counter() - started


def stage_times(messages: list[bytes]) -> list[tuple[str, float]]:
    """Seconds per stage, by difference between runs that stop after parsing, decoding, folding and
    encoding (each from a fresh decoder and ledger, as in ``in_process``)."""
    loads = orjson.loads
    started = time.perf_counter()
    for message in messages:
        loads(message)
    parse = time.perf_counter() - started

    decode_packed = FillDecoder.from_schema_dir().decode_packed
    started = time.perf_counter()
    for message in messages:
        decode_packed(message)
    decoded = time.perf_counter() - started

    decode_packed = FillDecoder.from_schema_dir().decode_packed
    fold = Ledger().fold
    with exact_arithmetic():
        started = time.perf_counter()
        for message in messages:
            fold(*decode_packed(message))  # type: ignore[arg-type]  # the generated fills are all valid
        folded = time.perf_counter() - started

    decode_packed = FillDecoder.from_schema_dir().decode_packed
    ledger = Ledger()
    fold, policy = ledger.fold, ledger.policy
    encode_delta, encode_trigger = codec.encode_delta, codec.encode_trigger
    with exact_arithmetic():
        started = time.perf_counter()
        for message in messages:
            outcome = fold(*decode_packed(message))  # type: ignore[arg-type]  # all valid
            delta, trigger = outcome.delta, outcome.trigger
            encode_delta(delta)  # type: ignore[arg-type]  # never a duplicate
            if trigger is not None:
                encode_trigger(trigger, policy(trigger.fund))
        encoded = time.perf_counter() - started
    return [
        ("parse (orjson.loads)", parse),
        ("validate into a fill, packed", decoded - parse),
        ("fold (apply + duplicate window)", folded - decoded),
        ("encode delta and trigger", encoded - folded),
    ]


def topic_lines(count: int) -> Iterator[bytes]:
    for fill in fills(count, markets=TOPIC_MARKETS):
        yield codec.dumps(fill)


def broker_problem(bootstrap: str) -> str | None:
    """Why the broker at ``bootstrap`` cannot be used; ``None`` when it answers."""
    host, _, port = bootstrap.split(",", maxsplit=1)[0].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
            return None
    except (OSError, ValueError) as error:
        return f"no broker at {bootstrap} ({error})"


async def topic_replay_rates(
    bootstrap: str, count: int, scratch: Path, rounds: int
) -> list[tuple[str, float]]:
    """Load ``count`` fills into a fresh topic, run ``python -m processor replay --topic`` (all four
    output files) with ``--jobs 1`` and ``--jobs 2`` in turn, ``rounds`` times, and return the best
    seconds of each, start-up included (the machine is shared: the least disturbed run of each, and
    the first run after loading the topic meets a broker still busy with it); the topic is deleted
    afterwards."""
    from bench.harness import create_topics, delete_topics_with, load_note, preload, spread
    from processor.config import Settings
    from processor.stream.parallel import balance
    from processor.stream.replay import Start, topic_ranges

    marker = uuid.uuid4().hex[:8]
    topic = f"bench-core-replay-{marker}"
    await create_topics(bootstrap, [topic], TOPIC_PARTITIONS)
    try:
        print(
            f"loading {count:,} fills (4 funds, equal shares) on {TOPIC_PARTITIONS} partitions ...",
            flush=True,
        )
        per_partition = await preload(bootstrap, topic, topic_lines(count))
        print(f"fills per partition: {spread(per_partition, TOPIC_PARTITIONS)}")
        ranges = await topic_ranges(Settings(bootstrap_servers=bootstrap), topic, Start())
        share = max(sum(r.size for r in group) for group in balance(ranges, 2)) / count
        print(f"--jobs 2: the larger group has {100 * share:.0f}% of the fills (bound {1 / share:.2f}x)")
        environment = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
        best = {1: float("inf"), 2: float("inf")}
        for _ in range(rounds):
            for jobs in (1, 2):
                out = scratch / f"jobs-{jobs}"
                command = [sys.executable, "-m", "processor", "replay", "--topic", topic, "--quiet"]
                command += ["--jobs", str(jobs)]
                command += [part for flag, name in OUTPUT_FLAGS.items() for part in (flag, str(out / name))]
                print(f"replay --topic --jobs {jobs} ({load_note()}) ...", end=" ", flush=True)
                started = time.perf_counter()
                subprocess.run(command, env=environment, check=True)
                seconds = time.perf_counter() - started
                print(f"{seconds:.2f} s", flush=True)
                best[jobs] = min(best[jobs], seconds)
        for name in ("state.json", "deltas.jsonl", "adl.jsonl"):
            if (scratch / "jobs-1" / name).read_bytes() != (scratch / "jobs-2" / name).read_bytes():
                raise SystemExit(f"topic replay: --jobs 1 and --jobs 2 wrote different {name}")
        return [(f"topic replay --jobs {jobs} (4 files, best of {rounds})", best[jobs]) for jobs in (1, 2)]
    finally:
        await delete_topics_with(bootstrap, marker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--stages", action="store_true", help="also time each stage of the in-process path")
    parser.add_argument(
        "--topic-count", type=int, help="fills in the topic replay's topic (default: --count)"
    )
    parser.add_argument("--skip-topic", action="store_true", help="no topic replay (it needs a broker)")
    parser.add_argument("--rounds", type=int, default=3, help="topic replays of each --jobs, in turn")
    parser.add_argument(
        "--core-rounds", type=int, default=3, help="runs of the bare loop and the core, in turn (best of)"
    )
    parser.add_argument("--window-count", type=int, default=300_000, help="fills in the window benchmark")
    parser.add_argument("--probe", choices=("core", "window", "topic"), help=argparse.SUPPRESS)  # JSON
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    if args.probe == "topic":  # before anything is generated: the replays' parent stays small
        with tempfile.TemporaryDirectory() as scratch:
            rates = asyncio.run(topic_replay_rates(bootstrap, args.count, Path(scratch), args.rounds))
        print(json.dumps([seconds for _, seconds in rates]))
        return
    messages = list(lines(args.count))
    gc.collect()
    gc.freeze()  # the generated input is not garbage: keep the collector off it, as a worker would
    if args.probe == "core":
        bare, core = core_rates(messages, args.core_rounds)
        print(json.dumps({"bare": bare, "core": core}))
        return
    if args.probe == "window":
        print(json.dumps(window_costs(messages, args.core_rounds)))
        return
    print(f"generated {args.count:,} fills; {native.describe()}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "fills.jsonl"
        path.write_bytes(b"\n".join(messages) + b"\n")
        print(f"bare loop and decode + fold + encode, {args.core_rounds} runs each in turn ...", flush=True)
        bare, core = core_rates(messages, args.core_rounds)
        replay = file_replay(path, Path(scratch) / "out")
    topic: list[tuple[str, float]] = []
    topic_count = args.topic_count or args.count
    skipped = "--skip-topic" if args.skip_topic else broker_problem(bootstrap)
    if skipped is None:
        topic = topic_probe(topic_count, args.rounds)
    print("decode + fold + encode, interpreted (PROCESSOR_PURE=1, a process of its own) ...", flush=True)
    interpreted = probe("core", args.count, args.core_rounds, pure=True)
    print("the duplicate window, interpreted and compiled (each a process of its own) ...", flush=True)
    window_count = min(args.window_count, args.count)
    window_before = probe("window", window_count, args.core_rounds, pure=True)
    window = probe("window", window_count, args.core_rounds, pure=False)
    stages = stage_times(messages) if args.stages else []
    count = args.count
    rows = [
        ("bare orjson + Decimal loop (no validation)", bare),
        (f"decode + fold + encode ({'compiled' if native.compiled_modules() else 'interpreted'})", core),
        ("file replay (read, fold, write 4 files)", replay),
    ]
    if interpreted is not None:
        rows.insert(
            2, ("decode + fold + encode, interpreted", interpreted["core"] * bare / interpreted["bare"])
        )
    print(f"\n{'path':<50}{'fills/s':>12}{'us/fill':>10}{'vs bare':>9}{'vs target':>11}")
    for name, seconds in rows:
        rate = count / seconds
        print(
            f"{name:<50}{rate:>12,.0f}{1e6 * seconds / count:>10.2f}"
            f"{bare / seconds:>9.2f}{rate / TARGET_PER_SECOND:>11.2f}"
        )
    ratio = bare / core
    verdict = (
        "met" if ratio >= TARGET_BARE_RATIO else f"missed by {100 * (1 - ratio / TARGET_BARE_RATIO):.0f}%"
    )
    print(f"decode + fold + encode / bare loop = {ratio:.2f} (target >= {TARGET_BARE_RATIO}: {verdict})")
    if interpreted is not None:
        print(
            f"  interpreted, in its own process: bare {count / interpreted['bare']:,.0f}/s, "
            f"core {count / interpreted['core']:,.0f}/s, "
            f"ratio {interpreted['bare'] / interpreted['core']:.2f} "
            "(its row above is scaled to this process's bare loop)"
        )
    for name, seconds in topic:
        print(f"{name:<50}{topic_count / seconds:>12,.0f}{1e6 * seconds / topic_count:>10.2f}")
    if topic:
        ratio = topic[0][1] / topic[1][1]
        verdict = "met" if ratio >= TARGET_JOBS_RATIO else "missed"
        print(f"topic replay: --jobs 2 / --jobs 1 = {ratio:.2f}x (target >= {TARGET_JOBS_RATIO}x: {verdict})")
    else:
        print(f"topic replay: skipped ({skipped}; `make bench-core` starts the local broker)")
    if window is not None and window_before is not None:
        window_rows = [
            ("before: pack_fill + look-up + remember, interpreted", window_before["formatted"]),
            ("pack_fill + look-up + remember, compiled", window["formatted"]),
            ("look-up + remember the decoder's bytes, compiled", window["remembered"]),
            (
                "packing: the native scanner's, from the message's texts"
                if "scanning" in window
                else "packing from the texts (called from Python)",
                window["packing"],
            ),
        ]
        now = window["remembered"] + window["packing"]
        print(f"\n{'duplicate window, per fill (' + format(window_count, ',') + ' fills)':<56}{'us':>8}")
        for name, seconds in window_rows:
            print(f"{name:<56}{1e6 * seconds:>8.2f}")
        print(f"{'now: the two above':<56}{1e6 * now:>8.2f}   {window['bytes']:.0f} bytes a fill")
        ratio = now / window_before["formatted"]
        verdict = "met" if ratio <= TARGET_WINDOW_RATIO else "missed"
        print(f"time now / before = {ratio:.2f} (target <= {TARGET_WINDOW_RATIO}: {verdict})")
    if stages:
        print(f"\n{'stage of decode + fold + encode':<50}{'us/fill':>12}")
        pipeline = core - sum(seconds for _, seconds in stages)
        for name, seconds in [*stages, ("pipeline (Pipeline.process, Emitted)", pipeline)]:
            print(f"{name:<50}{1e6 * seconds / count:>12.2f}")
    print(f"\ntarget: {TARGET_PER_SECOND:,} fills/s for decode + fold + encode on one core")


if __name__ == "__main__":
    main()
