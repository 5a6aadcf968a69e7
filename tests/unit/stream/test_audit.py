"""The audit's pure checks: the ledger chain with operations (SPEC section 8's invariant) and transfers
whose legs do not pair up."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from processor.stream.audit import check_chain, open_transfers


def delta(sequence: int, kind: str, amount: str, before: str, **extra: Any) -> dict[str, Any]:
    after = Decimal(before) + Decimal(amount)
    return {
        "fund": "USDT",
        "margin_currency": "USDT",
        "sequence": sequence,
        "type": kind,
        "amount": amount,
        "balance_before": before,
        "balance_after": str(after),
        **extra,
    }


def test_a_chain_of_fills_and_operations_passes() -> None:
    deltas = [
        delta(1, "liquidation_surplus", "10", "100"),
        delta(2, "bankruptcy_loss", "-30", "110"),
        delta(3, "top_up", "500", "80"),
        delta(4, "withdrawal", "-80", "580"),
    ]
    assert check_chain("USDT", deltas, Decimal(100)) == []


def test_an_amount_of_the_wrong_sign_for_its_type_is_a_finding() -> None:
    deltas = [delta(1, "top_up", "-5", "100"), delta(2, "withdrawal", "5", "95")]
    problems = [str(finding) for finding in check_chain("USDT", deltas, Decimal(100))]
    assert problems == [
        "fund USDT sequence 1: a top_up delta with amount -5",
        "fund USDT sequence 2: a withdrawal delta with amount 5",
    ]


def test_transfers_with_one_leg_or_unequal_legs_are_listed() -> None:
    deltas = [
        delta(1, "withdrawal", "-10", "100", transfer_id="tr-paired", fund="USDT-MEME"),
        delta(2, "top_up", "10", "0", transfer_id="tr-paired"),
        delta(3, "withdrawal", "-7", "90", transfer_id="tr-half", fund="USDT-MEME"),
        delta(4, "withdrawal", "-5", "83", transfer_id="tr-unequal", fund="USDT-MEME"),
        delta(5, "top_up", "6", "10", transfer_id="tr-unequal"),
        delta(6, "top_up", "1", "16"),
    ]
    found = open_transfers(deltas)
    assert [line.split(":")[0] for line in found] == ["transfer tr-half", "transfer tr-unequal"]
    assert "expected one withdrawal and one top-up" in found[0]
    assert "the legs do not match" in found[1]
