"""Top-ups and withdrawals (SPEC section 8), one rule at a time, through the pure ``apply_operation``
and the in-memory ``Ledger``; and how the duplicate window remembers operations."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.domain.events import FundOperation, LiquidationFill, OperationDelta
from processor.domain.fold import Outcome, apply_operation
from processor.domain.ledger import (
    DuplicateWindow,
    Ledger,
    pack_fill,
    pack_operation,
    unpack,
    unpack_operation,
)
from processor.domain.pools import FundPools, Pool
from processor.domain.state import FundPolicy, FundRules, FundState
from tests.strategies import BASE_TIMESTAMP, free_texts, identifiers, make_fill, make_operation

D = Decimal
T = BASE_TIMESTAMP
RULES = FundRules(
    precision={"BTC": 10},
    floor={"USDT": D("100")},
    initial_balance={"USDT": D("1000"), "BTC": D("2")},
    pools=FundPools([Pool("USDT-MEME", "USDT", ("MEME*",), D("500"), D("50"))]),
)
USDT = RULES.policy_for("USDT")


def operate(
    operation: FundOperation,
    policy: FundPolicy = USDT,
    state: FundState | None = None,
    currency: str = "USDT",
) -> Outcome:
    """Apply one fresh (never seen) operation to ``state``, a newly opened fund by default."""
    if state is None:
        state = FundState.opened(operation.fund, policy)
    return apply_operation(state, operation, policy, currency, None)


def withdrawal(amount: str, **changes: Any) -> FundOperation:
    return make_operation(type="withdrawal", amount=amount, **changes)


def operation_delta(outcome: Outcome) -> OperationDelta:
    assert isinstance(outcome.delta, OperationDelta), outcome
    return outcome.delta


# --- applying -------------------------------------------------------------------------------------


def test_a_top_up_adds_its_amount_and_yields_one_delta() -> None:
    outcome = operate(make_operation(amount="250.5", reason="refill", transfer_id="tr-9"))
    delta = operation_delta(outcome)
    assert delta == OperationDelta(
        fund="USDT",
        margin_currency="USDT",
        operation_id="op-0001",
        type="top_up",
        amount=D("250.5"),
        balance_before=D("1000"),
        balance_after=D("1250.5"),
        requested_by="treasury:alice",
        reason="refill",
        transfer_id="tr-9",
        sequence=1,
        timestamp=T,
    )
    assert delta.delta_id == "op-0001"
    assert str(delta.amount) == "250.50000000" and str(delta.balance_after) == "1250.50000000"
    assert (outcome.trigger, outcome.conflict, outcome.refusal) == (None, None, None)
    state = outcome.state
    assert (state.balance, state.total_top_ups, state.total_withdrawals) == (D("1250.5"), D("250.5"), 0)
    assert (state.operations, state.fills, state.sequence, state.last_timestamp) == (1, 0, 1, T)
    assert (state.total_surplus, state.total_paid, state.total_shortfall, state.by_symbol) == (0, 0, 0, {})


def test_a_withdrawal_subtracts_its_amount_and_its_delta_amount_is_negative() -> None:
    outcome = operate(withdrawal("400"))
    delta = operation_delta(outcome)
    assert (delta.type, delta.amount, delta.balance_before, delta.balance_after) == (
        "withdrawal",
        D("-400"),
        D("1000"),
        D("600"),
    )
    assert str(delta.amount) == "-400.00000000"
    state = outcome.state
    assert (state.balance, state.total_top_ups, state.total_withdrawals, state.operations) == (
        D("600"),
        0,
        D("400"),
        1,
    )


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("0.000000015", "0.00000002"),  # half to even: up
        ("0.000000025", "0.00000002"),  # half to even: down
        ("0.000000025000000001", "0.00000003"),
        ("12.345678904999", "12.34567890"),
        ("1E+3", "1000.00000000"),
    ],
)
def test_the_amount_is_rounded_half_even_to_the_funds_precision(amount: str, expected: str) -> None:
    assert format(operation_delta(operate(make_operation(amount=amount))).amount, "f") == expected
    rich = FundState.opened("USDT", USDT)._replace(balance=D("5000.00000000"))
    assert format(operation_delta(operate(withdrawal(amount), state=rich)).amount, "f") == "-" + expected


def test_the_currencys_precision_applies_to_a_btc_fund() -> None:
    btc = RULES.policy_for("BTC")
    delta = operation_delta(operate(make_operation(fund="BTC", amount="0.123456789012"), btc, currency="BTC"))
    assert str(delta.amount) == "0.1234567890"
    assert str(delta.balance_after) == "2.1234567890"


def test_a_withdrawal_down_to_exactly_the_floor_is_applied() -> None:
    outcome = operate(withdrawal("900"))  # 1000 - 900 == the floor of 100
    assert operation_delta(outcome).balance_after == D("100")
    assert outcome.refusal is None


def test_a_withdrawal_one_quantum_below_the_floor_is_refused_and_changes_nothing() -> None:
    opened = FundState.opened("USDT", USDT)
    outcome = operate(withdrawal("900.00000001"), state=opened)
    assert outcome == Outcome(opened, refusal=outcome.refusal)
    assert outcome.state is opened
    assert outcome.refusal is not None


def test_a_refusal_names_the_balance_the_floor_and_the_amount() -> None:
    outcome = operate(withdrawal("2000.123456789"))
    assert outcome.refusal == (
        "withdrawal of amount 2000.12345679 from fund USDT refused: balance 1000.00000000 - amount "
        "2000.12345679 would fall below the floor 100.00000000"
    )


def test_a_withdrawal_that_rounds_to_the_floor_is_applied() -> None:
    # 900.000000004 rounds to 900.00000000: the withdrawal is judged on q(amount)
    assert operation_delta(operate(withdrawal("900.000000004"))).balance_after == D("100")


def test_a_withdrawal_from_a_fund_already_below_its_floor_is_refused() -> None:
    below = FundState.opened("USDT", USDT)._replace(balance=D("80.00000000"))
    assert operate(withdrawal("0.00000001"), state=below).refusal is not None


def test_a_top_up_is_applied_whatever_the_balance_and_the_floor() -> None:
    below = FundState.opened("USDT", USDT)._replace(balance=D("-5.00000000"))
    assert operation_delta(operate(make_operation(amount="1"), state=below)).balance_after == D("-4")


def test_operations_and_fills_share_one_sequence_but_are_counted_apart() -> None:
    ledger = Ledger(RULES)
    sequences = [
        ledger.fold(make_fill(fill_id="f-1")).state.sequence,
        ledger.operate(make_operation(operation_id="op-1"), "USDT").state.sequence,
        ledger.fold(make_fill(fill_id="f-2")).state.sequence,
        ledger.operate(withdrawal("10", operation_id="op-2"), "USDT").state.sequence,
    ]
    assert sequences == [1, 2, 3, 4]
    state = ledger.funds["USDT"]
    assert (state.fills, state.operations, state.sequence) == (2, 2, 4)
    assert state.last_timestamp == T
    assert sum(state.by_symbol.values(), D(0)) == state.total_surplus - state.total_paid


def test_an_operation_on_a_fund_that_has_seen_nothing_starts_at_its_initial_balance() -> None:
    ledger = Ledger(RULES)
    assert operation_delta(ledger.operate(make_operation(fund="BTC", amount="1"), "BTC")).balance_before == D(
        2
    )
    assert operation_delta(ledger.operate(make_operation(fund="USDC"), "USDC")).balance_before == D(0)
    pool = operation_delta(ledger.operate(withdrawal("450", fund="USDT-MEME"), "USDT"))
    assert (pool.fund, pool.margin_currency, pool.balance_before, pool.balance_after) == (
        "USDT-MEME",
        "USDT",
        D("500"),
        D("50"),
    )


def test_a_pool_withdrawal_is_judged_against_the_pools_own_floor() -> None:
    ledger = Ledger(RULES)
    assert ledger.operate(withdrawal("450.00000001", fund="USDT-MEME"), "USDT").refusal is not None
    assert ledger.operate(withdrawal("450", fund="USDT-MEME"), "USDT").delta is not None


def test_apply_operation_does_not_mutate_its_inputs() -> None:
    state = FundState.opened("USDT", USDT)._replace(by_symbol={"BTCUSDT": D("1")})
    snapshot = (state, dict(state.by_symbol))
    operate(make_operation(), state=state)
    operate(withdrawal("1"), state=state)
    assert (state, dict(state.by_symbol)) == snapshot


def test_the_same_operation_twice_gives_equal_outcomes() -> None:
    assert operate(withdrawal("12.5")) == operate(withdrawal("12.5"))


# --- refusals are not remembered ------------------------------------------------------------------


def test_a_refused_withdrawal_is_not_remembered_and_applies_once_the_balance_allows() -> None:
    ledger = Ledger(RULES)
    refused = withdrawal("1500", operation_id="w-1")
    first = ledger.operate(refused, "USDT")
    assert first.refusal is not None and first.delta is None
    assert "USDT" not in ledger.windows or ledger.windows["USDT"].get("w-1") is None
    assert "USDT" not in ledger.funds  # a refusal opens no fund
    assert ledger.operate(refused, "USDT").refusal is not None  # refused again, not a duplicate
    assert "USDT" not in ledger.funds
    ledger.operate(make_operation(operation_id="top", amount="600"), "USDT")
    applied = operation_delta(ledger.operate(refused, "USDT"))
    assert (applied.balance_before, applied.balance_after, applied.sequence) == (D("1600"), D("100"), 2)
    assert ledger.windows["USDT"].get("w-1") == refused
    assert ledger.operate(refused, "USDT").state.duplicates == 1  # now it is a duplicate


# --- duplicates and conflicts ---------------------------------------------------------------------


def test_an_identical_resend_only_counts_a_duplicate() -> None:
    ledger = Ledger(RULES)
    first = ledger.operate(make_operation(), "USDT")
    again = ledger.operate(make_operation(amount=D("1000.000")), "USDT")  # equal by value
    assert again == Outcome(first.state._replace(duplicates=1))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", D("1000.01")),
        ("type", "withdrawal"),
        ("requested_by", "treasury:mallory"),
        ("reason", ""),
        ("transfer_id", "tr-1"),
        ("timestamp", T + 1),
    ],
)
def test_a_resend_with_other_content_is_a_conflict_naming_the_field_and_changes_nothing(
    field: str, value: object
) -> None:
    ledger = Ledger(RULES)
    ledger.operate(make_operation(), "USDT")
    before = ledger.funds["USDT"]
    outcome = ledger.operate(make_operation(**{field: value}), "USDT")
    assert outcome.delta is None and outcome.conflict is not None
    assert outcome.conflict.startswith(
        "operation_id 'op-0001' was already applied to fund USDT with different"
    )
    assert f"{field} " in outcome.conflict
    assert outcome.state == before == ledger.funds["USDT"]
    assert ledger.windows["USDT"].get("op-0001") == make_operation()  # the applied one stays


def test_an_operation_id_equal_to_a_fill_id_of_the_same_fund_is_a_conflict() -> None:
    ledger = Ledger(RULES)
    ledger.fold(make_fill(fill_id="shared"))
    before = ledger.funds["USDT"]
    outcome = ledger.operate(make_operation(operation_id="shared"), "USDT")
    assert outcome.conflict == "operation_id 'shared' was already used by a fill applied to fund USDT"
    assert outcome.state == before


def test_a_fill_id_equal_to_an_operation_id_of_the_same_fund_is_a_conflict() -> None:
    ledger = Ledger(RULES)
    ledger.operate(make_operation(operation_id="shared"), "USDT")
    before = ledger.funds["USDT"]
    outcome = ledger.fold(make_fill(fill_id="shared"))
    assert outcome.conflict == "fill_id 'shared' was already used by an operation applied to fund USDT"
    assert (outcome.state, outcome.delta) == (before, None)


def test_the_same_id_in_another_fund_is_applied() -> None:
    ledger = Ledger(RULES)
    ledger.fold(make_fill(fill_id="shared", symbol="MEMEUSDT"))  # the pool's fill
    assert ledger.operate(make_operation(operation_id="shared"), "USDT").delta is not None
    assert ledger.operate(make_operation(operation_id="shared", fund="BTC"), "BTC").delta is not None


# --- the duplicate window remembers operations ----------------------------------------------------

TRANSFER_IDS = st.none() | st.just("") | free_texts


@given(
    operation_id=identifiers,
    requested_by=free_texts,
    reason=free_texts,
    transfer_id=TRANSFER_IDS,
    amount=st.decimals(min_value=D("1E-18"), max_value=D("1E15"), allow_nan=False, allow_infinity=False),
    fund=st.sampled_from(["USDT", "USDT-MEME", "BTC_ALT-2"]),
    kind=st.sampled_from(["top_up", "withdrawal"]),
    timestamp=st.integers(0, 2**63 - 1),
)
def test_a_packed_operation_unpacks_equal_whatever_its_texts(
    operation_id: str,
    requested_by: str,
    reason: str,
    transfer_id: str | None,
    amount: Decimal,
    fund: str,
    kind: str,
    timestamp: int,
) -> None:
    operation = make_operation(
        operation_id=operation_id,
        type=kind,
        fund=fund,
        amount=amount,
        requested_by=requested_by,
        reason=reason,
        transfer_id=transfer_id,
        timestamp=timestamp,
    )
    packed = pack_operation(operation)
    for unpacked in (unpack_operation(operation_id, packed), unpack(operation_id, packed)):
        assert unpacked == operation
        assert type(unpacked) is FundOperation
        assert [str(value) for value in unpacked] == [str(value) for value in operation]  # exponents kept
        assert unpacked.transfer_id == transfer_id  # None and "" stay apart


@pytest.mark.parametrize(
    ("requested_by", "reason", "transfer_id"),
    [
        ("a", "", None),
        ("a", "", ""),
        ("\x1f", "\x1f", "\x1f"),
        ("x\x1fy", "", "tr\x1f1"),
        ("", "reason only", None),
        ("trésorerie", "réserve 💰 \x1f\x1f", "転送-1"),
        ("a" * 128, "b" * 512, "c" * 128),
        ("1", "2", "3"),  # texts that look like the lengths in front of them
        ("-1", "-1", "-1"),
    ],
)
def test_tricky_texts_survive_the_window(requested_by: str, reason: str, transfer_id: str | None) -> None:
    operation = make_operation(requested_by=requested_by, reason=reason, transfer_id=transfer_id)
    window = DuplicateWindow()
    window.remember_operation(operation)
    assert window.get(operation.operation_id) == operation
    assert list(window) == [operation]


def test_a_packed_fill_is_still_told_apart_from_a_packed_operation() -> None:
    fill = make_fill(liquidation_id="\x1f", symbol="\x1f\x1f")
    assert unpack(fill.fill_id, pack_fill(fill)) == fill
    assert type(unpack(fill.fill_id, pack_fill(fill))) is LiquidationFill


def test_a_window_holds_fills_and_operations_side_by_side_and_forgets_both_on_time() -> None:
    window = DuplicateWindow(1000)
    fill = make_fill(fill_id="f", timestamp=T)
    top_up = make_operation(operation_id="o", timestamp=T + 500)
    window.remember(fill)
    window.remember_operation(top_up)
    assert (window.get("f"), window.get("o"), len(window)) == (fill, top_up, 2)
    window.remember_operation(make_operation(operation_id="later", timestamp=T + 1001))
    assert window.get("f") is None and window.get("o") == top_up  # T < T + 1001 - 1000 <= T + 500
    window.remember(make_fill(fill_id="much-later", timestamp=T + 1501))
    assert window.get("o") is None and window.get("later") is not None


def test_an_operation_resent_after_the_window_is_applied_again() -> None:
    ledger = Ledger(RULES, duplicate_window_ms=1000)
    ledger.operate(make_operation(operation_id="o", timestamp=T), "USDT")
    ledger.fold(make_fill(fill_id="f", timestamp=T + 1001))
    outcome = ledger.operate(make_operation(operation_id="o", timestamp=T), "USDT")
    assert outcome.delta is not None and outcome.state.operations == 2
