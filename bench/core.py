"""``make bench-core``: throughput of decode + fold + encode, and of file replay, on one core."""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import orjson

from bench.generate import lines
from processor import codec
from processor.codec import FillDecoder
from processor.domain.fold import exact_arithmetic
from processor.domain.ledger import Ledger
from processor.pipeline import Pipeline
from processor.replay import OutputFiles, read_lines, replay_lines

TARGET_PER_SECOND = 150_000


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

    decode = FillDecoder.from_schema_dir().decode
    started = time.perf_counter()
    for message in messages:
        decode(message)
    decoded = time.perf_counter() - started

    decode = FillDecoder.from_schema_dir().decode
    fold = Ledger().fold
    with exact_arithmetic():
        started = time.perf_counter()
        for message in messages:
            fold(decode(message))  # type: ignore[arg-type]  # the generated fills are all valid
        folded = time.perf_counter() - started

    decode = FillDecoder.from_schema_dir().decode
    ledger = Ledger()
    fold, policy = ledger.fold, ledger.policy
    encode_delta, encode_trigger = codec.encode_delta, codec.encode_trigger
    with exact_arithmetic():
        started = time.perf_counter()
        for message in messages:
            _, delta, trigger, _ = fold(decode(message))  # type: ignore[arg-type]  # all valid
            encode_delta(delta)  # type: ignore[arg-type]  # never a duplicate
            if trigger is not None:
                encode_trigger(trigger, policy(trigger.fund))
        encoded = time.perf_counter() - started
    return [
        ("parse (orjson.loads)", parse),
        ("validate into a fill", decoded - parse),
        ("fold (apply + duplicate window)", folded - decoded),
        ("encode delta and trigger", encoded - folded),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--stages", action="store_true", help="also time each stage of the in-process path")
    args = parser.parse_args()
    print(f"generating {args.count:,} fills ...", flush=True)
    messages = list(lines(args.count))
    gc.collect()
    gc.freeze()  # the generated input is not garbage: keep the collector off it, as a worker would
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "fills.jsonl"
        path.write_bytes(b"\n".join(messages) + b"\n")
        bare = bare_loop(messages)
        core = in_process(messages)
        replay = file_replay(path, Path(scratch) / "out")
    stages = stage_times(messages) if args.stages else []
    count = len(messages)
    rows = [
        ("bare orjson + Decimal loop (no validation)", bare),
        ("decode + fold + encode (in process)", core),
        ("file replay (read, fold, write 4 files)", replay),
    ]
    print(f"\n{'path':<46}{'fills/s':>12}{'us/fill':>10}{'vs bare':>9}{'vs target':>11}")
    for name, seconds in rows:
        rate = count / seconds
        print(
            f"{name:<46}{rate:>12,.0f}{1e6 * seconds / count:>10.2f}"
            f"{bare / seconds:>9.2f}{rate / TARGET_PER_SECOND:>11.2f}"
        )
    if stages:
        print(f"\n{'stage of decode + fold + encode':<46}{'us/fill':>12}")
        pipeline = core - sum(seconds for _, seconds in stages)
        for name, seconds in [*stages, ("pipeline (Pipeline.process, Emitted)", pipeline)]:
            print(f"{name:<46}{1e6 * seconds / count:>12.2f}")
    print(f"\ntarget: {TARGET_PER_SECOND:,} fills/s for decode + fold + encode on one core")


if __name__ == "__main__":
    main()
