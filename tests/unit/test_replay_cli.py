"""``python -m processor replay``: a JSONL file in, state/delta/ADL/dead-letter files and a summary out."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from processor.cli import main
from tests.strategies import seed_bytes

INVERSE = seed_bytes(
    fill_id="btc-1",
    liquidation_id="liq-b1",
    symbol="BTCUSD",
    margin_currency="BTC",
    contract_type="inverse",
    contract_size="100",
    bankruptcy_price="25000",
    fill_price="25100",
    quantity="50",
    fee="0.00001",
)
LINES = [
    seed_bytes(),  # 1: USDT +199.5
    b'{"fill_id": "broken", "liquidation_id":',  # 2: invalid_json
    INVERSE,  # 3: BTC +0.00078681 (inverse)
    seed_bytes(fill_price="28200.0", fee=0.5),  # 4: identical duplicate of line 1
    seed_bytes(fill_price="28300"),  # 5: conflicting duplicate of line 1
    seed_bytes(  # 6: USDT loss 301.2, pays 199.5, shortfall 101.7 -> ADL insufficient_fund 5.87649402
        fill_id="fill-0002",
        liquidation_id="liq-0002",
        symbol="ETHUSDT",
        side="short",
        bankruptcy_price="2000",
        fill_price="2030",
        quantity="10",
        unfilled_quantity="2.5",
        fee="1.2",
        timestamp=1_700_000_060_000,
    ),
    seed_bytes(  # 7: BTC nothing filled -> ADL no_liquidity 7
        fill_id="btc-2",
        liquidation_id="liq-b2",
        symbol="BTCUSD",
        margin_currency="BTC",
        contract_type="inverse",
        contract_size="100",
        bankruptcy_price="26000",
        fill_price="26000",
        quantity="0",
        unfilled_quantity="7",
        fee="0",
        side="short",
    ),
    seed_bytes(fill_id="v2", version=2),  # 8: unsupported_version
]
EXPECTED_SUMMARY = [
    "BTC: balance 0.00078681 surplus 0.00078681 paid 0.00000000 shortfall 0.00000000 fills 2 duplicates 0 "
    "adl_triggers 1 sequence 2",
    "USDT: balance 0.00000000 surplus 199.50000000 paid 199.50000000 shortfall 101.70000000 fills 2 "
    "duplicates 1 adl_triggers 1 sequence 2",
]


@pytest.fixture(autouse=True)
def hermetic_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fund rules come from flags here, never from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("FUND_") or name in ("DUPLICATE_WINDOW_MS", "STORE", "PROCESSING_GUARANTEE"):
            monkeypatch.delenv(name)


@pytest.fixture
def input_file(tmp_path: Path) -> Path:
    path = tmp_path / "fills.jsonl"
    path.write_bytes(b"\n".join(LINES) + b"\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def replay(input_path: str, out: Path | None, *extra: str) -> int:
    argv = ["replay", "--input", input_path]
    if out is not None:
        argv += [
            "--state-out",
            str(out / "state.json"),
            "--deltas-out",
            str(out / "deltas.jsonl"),
            "--adl-out",
            str(out / "adl.jsonl"),
            "--dlq-out",
            str(out / "dlq.jsonl"),
        ]
    return main([*argv, *extra])


def test_replay_writes_every_output(
    input_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "nested"  # parent directories are created
    assert replay(str(input_file), out) == 0

    deltas = read_jsonl(out / "deltas.jsonl")
    assert [(d["fund"], d["fill_id"], d["sequence"]) for d in deltas] == [
        ("USDT", "fill-0001", 1),
        ("BTC", "btc-1", 1),
        ("USDT", "fill-0002", 2),
        ("BTC", "btc-2", 2),
    ]
    assert deltas[0]["amount"] == "199.50000000"
    assert deltas[1]["gross_pnl"] == "0.00079681"  # 5000 x 100 / (25000 x 25100), q8
    assert deltas[1]["net"] == "0.00078681"
    assert (deltas[2]["amount"], deltas[2]["shortfall"], deltas[2]["balance_after"]) == (
        "-199.50000000",
        "101.70000000",
        "0.00000000",
    )

    triggers = read_jsonl(out / "adl.jsonl")
    assert [
        (t["fund"], t["reason"], t["quantity"], t["deleverage_side"], t["sequence"]) for t in triggers
    ] == [
        ("USDT", "insufficient_fund", "5.87649402", "long", 2),
        ("BTC", "no_liquidity", "7.00000000", "long", 2),
    ]

    letters = read_jsonl(out / "dlq.jsonl")
    assert [(letter["error"], letter["source_offset"]) for letter in letters] == [
        ("invalid_json", 2),
        ("conflicting_duplicate", 5),
        ("unsupported_version", 8),
    ]
    for letter, line in zip(letters, (2, 5, 8), strict=True):
        assert letter["source_partition"] is None
        assert letter["source_topic"] == str(input_file)
        assert letter["key"] is None
        assert letter["value"] == LINES[line - 1].decode()
    assert "fill_price" in letters[1]["detail"]
    assert "version" in letters[2]["detail"]

    state = json.loads((out / "state.json").read_text())
    assert list(state) == ["BTC", "USDT"]
    assert state["USDT"] == {
        "fund": "USDT",
        "balance": "0.00000000",
        "total_surplus": "199.50000000",
        "total_paid": "199.50000000",
        "total_shortfall": "101.70000000",
        "fills": 2,
        "duplicates": 1,
        "adl_triggers": 1,
        "sequence": 2,
        "last_timestamp": 1_700_000_060_000,
        "by_symbol": {"BTCUSDT": "199.50000000", "ETHUSDT": "-199.50000000"},
    }
    assert state["BTC"]["balance"] == "0.00078681"
    assert state["BTC"]["by_symbol"] == {"BTCUSD": "0.00078681"}

    captured = capsys.readouterr()
    assert captured.out.splitlines() == EXPECTED_SUMMARY
    assert "8 messages: 4 deltas, 2 ADL triggers, 3 dead letters" in captured.err


def test_replay_is_reproducible(input_file: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert replay(str(input_file), first) == 0
    assert replay(str(input_file), second) == 0
    for name in ("state.json", "deltas.jsonl", "adl.jsonl"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    strip_clock = [{**letter, "timestamp": 0} for letter in read_jsonl(first / "dlq.jsonl")]
    assert strip_clock == [{**letter, "timestamp": 0} for letter in read_jsonl(second / "dlq.jsonl")]


def test_omitted_output_flags_are_fine(
    input_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = set(tmp_path.rglob("*"))
    assert replay(str(input_file), None) == 0
    assert set(tmp_path.rglob("*")) == before
    assert capsys.readouterr().out.splitlines() == EXPECTED_SUMMARY


def test_only_some_outputs(input_file: Path, tmp_path: Path) -> None:
    assert main(["replay", "--input", str(input_file), "--dlq-out", str(tmp_path / "dlq.jsonl")]) == 0
    assert len(read_jsonl(tmp_path / "dlq.jsonl")) == 3
    assert not (tmp_path / "deltas.jsonl").exists()


def test_dash_reads_standard_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\n".join(LINES) + b"\n")))
    assert replay("-", tmp_path) == 0
    letters = read_jsonl(tmp_path / "dlq.jsonl")
    assert [letter["source_topic"] for letter in letters] == ["-", "-", "-"]
    assert [letter["source_offset"] for letter in letters] == [2, 5, 8]
    assert len(read_jsonl(tmp_path / "deltas.jsonl")) == 4
    assert capsys.readouterr().out.splitlines() == EXPECTED_SUMMARY


def test_crlf_line_endings_and_no_final_newline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b"\r\n".join(LINES))
    assert replay(str(path), tmp_path / "out") == 0
    assert len(read_jsonl(tmp_path / "out" / "deltas.jsonl")) == 4
    assert capsys.readouterr().out.splitlines() == EXPECTED_SUMMARY


def test_quiet_prints_no_summary(input_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert replay(str(input_file), None, "--quiet") == 0
    assert capsys.readouterr().out == ""


def test_fund_rule_flags(input_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        replay(
            str(input_file),
            tmp_path,
            "--initial-balance",
            "USDT=1000",
            "--precision",
            "BTC=10",
            "--floor",
            "USDT=900",
        )
        == 0
    )
    state = json.loads((tmp_path / "state.json").read_text())
    # 1000 + 199.5 = 1199.5; the loss of 301.2 may only take the fund down to the floor of 900
    assert state["USDT"]["balance"] == "900.00000000"
    assert state["USDT"]["total_paid"] == "299.50000000"
    assert state["USDT"]["total_shortfall"] == "1.70000000"
    assert state["BTC"]["balance"] == "0.0007868127"
    summary = capsys.readouterr().out.splitlines()
    assert summary[0].startswith("BTC: balance 0.0007868127 ")


def test_missing_input_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert replay(str(tmp_path / "absent.jsonl"), None) == 2
    assert "error" in capsys.readouterr().err


def test_input_is_required() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["replay"])
    assert exit_info.value.code == 2
