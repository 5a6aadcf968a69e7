"""The hot modules compiled by mypyc behave as their source does: a replay of a hostile corpus writes
the same bytes compiled and interpreted, and the switches that choose between them work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from processor import native
from testkit.hostile import hostile_messages

ROOT = Path(__file__).resolve().parent.parent.parent
OUTPUTS = ("state.json", "deltas.jsonl", "adl.jsonl", "dlq.jsonl", "adl_states.jsonl")
POOLS = """
[[pools]]
fund = "USDC-BTC"
currency = "USDC"
symbols = ["BTC*"]
initial_balance = "500000"
floor = "1000"
"""
#: Under the ADL policy with a tight window, so funds go into drawdown and out again.
POLICY = {"ADL_DRAWDOWN_START": "0.02", "ADL_DRAWDOWN_STOP": "0.01", "ADL_DRAWDOWN_WINDOW_MS": "60000"}


def operations(count: int) -> list[bytes]:
    """Top-ups and withdrawals of the funds the corpus fills (some refused at the floor)."""
    funds = ("USDT", "USDC", "USDC-BTC", "BTC", "ETH")
    return [
        orjson.dumps(
            {
                "type": "top_up" if number % 3 else "withdrawal",
                "operation_id": f"op-{number % (count - 5)}",  # the last five are duplicates
                "fund": funds[number % len(funds)],
                "amount": f"{1000 + 37 * number}.5",
                "requested_by": "treasury",
                "timestamp": 1_700_000_000_000 + 997 * number,
            }
        )
        for number in range(count)
    ]


def replay(corpus: Path, pools: Path, out: Path, *, pure: bool) -> None:
    out.mkdir()
    command = [sys.executable, "-m", "processor", "replay", "--input", str(corpus), "--quiet"]
    command += ["--pools-file", str(pools)]
    for name in OUTPUTS:
        flag = "--state-out" if name == "state.json" else f"--{name.removesuffix('.jsonl')}-out"
        command += [flag.replace("_", "-"), str(out / name)]
    environment = {**os.environ, **POLICY, "PROCESSOR_PURE": "1" if pure else "0"}
    subprocess.run(command, env=environment, cwd=ROOT, check=True, capture_output=True)


def without_timestamps(lines: bytes) -> list[bytes]:
    return [orjson.dumps({**orjson.loads(line), "timestamp": None}) for line in lines.splitlines()]


@pytest.mark.skipif(not native.compiled_modules(), reason="nothing compiled here to compare (make native)")
def test_compiled_and_interpreted_replays_write_the_same_bytes(tmp_path: Path) -> None:
    """100k+ messages: every hostile kind among valid fills, duplicates and conflicts, operations,
    a pool and the ADL policy; the compiled modules and their source write identical files."""
    messages = [message.value for message in hostile_messages(50_000, 50_000, seed=29, huge=0)]
    messages[::97] = operations(len(messages[::97]))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b"\n".join(value or b"" for value in messages) + b"\n")
    pools = tmp_path / "pools.toml"
    pools.write_text(POOLS)
    replay(corpus, pools, tmp_path / "compiled", pure=False)
    replay(corpus, pools, tmp_path / "interpreted", pure=True)
    for name in OUTPUTS:
        compiled = (tmp_path / "compiled" / name).read_bytes()
        interpreted = (tmp_path / "interpreted" / name).read_bytes()
        if name == "dlq.jsonl":  # a file replay's dead letters carry the time it ran
            compiled, interpreted = without_timestamps(compiled), without_timestamps(interpreted)
        assert compiled == interpreted, name
    deltas = (tmp_path / "compiled" / "deltas.jsonl").read_bytes()
    assert deltas.count(b"\n") > 40_000
    assert b'"top_up"' in deltas and b'"withdrawal"' in deltas and b'"USDC-BTC"' in deltas
    assert (tmp_path / "compiled" / "adl_states.jsonl").read_bytes().count(b'"drawdown"') > 0
    assert (tmp_path / "compiled" / "dlq.jsonl").read_bytes().count(b"\n") > 40_000


def test_processor_pure_runs_the_hot_modules_from_source() -> None:
    probe = "from processor import native; print(native.compiled_modules())"
    environment = {**os.environ, "PROCESSOR_PURE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=environment, cwd=ROOT, capture_output=True, check=False
    )
    assert done.stdout.strip() == b"[]", done.stderr


@pytest.mark.skipif(
    os.environ.get("PROCESSOR_COMPILE") == "0" or os.environ.get("PROCESSOR_PURE") == "1",
    reason="told to run the hot modules interpreted",
)
def test_the_hot_modules_run_compiled() -> None:
    """``make install`` compiles them (``make native``); a failed build would otherwise leave every
    test running the slow path unnoticed."""
    assert native.compiled_modules() == list(native.HOT_MODULES), native.describe()
    assert native.scanner_built(), native.describe()


def test_an_extension_older_than_its_source_is_stale(tmp_path: Path) -> None:
    source = tmp_path / "processor" / "domain" / "fold.py"
    source.parent.mkdir(parents=True)
    source.write_text("")
    extension = source.with_name(f"fold{native.EXTENSION_SUFFIXES[0]}")
    extension.write_bytes(b"")
    os.utime(extension, (1_000_000, 1_000_000))
    assert native.stale_extensions(tmp_path) == ["processor.domain.fold"]
    os.utime(extension)  # compiled after the edit
    assert native.stale_extensions(tmp_path) == []
