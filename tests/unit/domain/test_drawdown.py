"""SPEC section 9, one edge at a time: the drawdown states (``transition``), the rolling peak
(``PeakWindow``) and the policy as the ``Ledger`` applies it to fills and operations."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from processor import codec
from processor.codec import FillDecoder
from processor.domain.drawdown import DRAWDOWN, NORMAL, AdlState, PeakWindow, rounded_drawdown, transition
from processor.domain.events import AdlStateChange, FundDelta, FundOperation, LiquidationFill
from processor.domain.fold import Outcome
from processor.domain.ledger import Ledger
from processor.domain.state import DrawdownPolicy, FundRules
from processor.pipeline import Pipeline
from tests.conftest import load_schemas
from tests.strategies import BASE_TIMESTAMP, make_fill
from tests.unit.codec.support import STATE_KEYS

D = Decimal
T = BASE_TIMESTAMP
HOUR = 3_600_000
POLICY = DrawdownPolicy(D("0.3"), D("0.25"), HOUR)
RULES = FundRules(initial_balance={"USDT": D("1000")}, default_drawdown=POLICY)
B = D(28000)
SCHEMAS = load_schemas()
ADL_STATE_SCHEMA = Draft202012Validator(SCHEMAS["adl_state.v1"])
V1_STATE_KEYS = set(STATE_KEYS)  # a fund's state without SPEC sections 8 and 9


def loss(number: int, amount: str, timestamp: int = T, **changes: Any) -> LiquidationFill:
    """A USDT long closed ``amount`` below its bankruptcy price, no fee: net = -amount x quantity
    (1 contract unless told otherwise)."""
    values: dict[str, Any] = {"fill_price": B - D(amount), "fee": "0"} | changes
    return make_fill(fill_id=f"fill-{number}", liquidation_id=f"liq-{number}", timestamp=timestamp, **values)


def surplus(number: int, amount: str, timestamp: int = T, **changes: Any) -> LiquidationFill:
    return loss(number, f"-{amount}", timestamp, **changes)


def operation(number: int, kind: str, amount: str, timestamp: int = T) -> FundOperation:
    return FundOperation(f"op-{number}", kind, "USDT", D(amount), "treasury", "", None, timestamp)  # type: ignore[arg-type]


def ledger(policy: DrawdownPolicy = POLICY, initial: str = "1000", **rules: Any) -> Ledger:
    return Ledger(FundRules(initial_balance={"USDT": D(initial)}, default_drawdown=policy, **rules))


def run(target: Ledger, *events: LiquidationFill | FundOperation) -> list[Outcome]:
    return [
        target.fold(event) if isinstance(event, LiquidationFill) else target.operate(event, "USDT")
        for event in events
    ]


def states(outcomes: list[Outcome]) -> list[str]:
    return [outcome.state.adl_state for outcome in outcomes]


# --- transition: the states and their thresholds ---------------------------------------------------


@pytest.mark.parametrize(
    ("current", "balance", "expected"),
    [
        (NORMAL, "700", DRAWDOWN),  # exactly START: 300 >= 0.3 x 1000
        (NORMAL, "699.99999999", DRAWDOWN),  # just above START
        (NORMAL, "700.00000001", NORMAL),  # just below START
        (NORMAL, "730", NORMAL),  # between STOP and START: stays as it was
        (DRAWDOWN, "730", DRAWDOWN),
        (DRAWDOWN, "750", NORMAL),  # exactly STOP: 250 <= 0.25 x 1000
        (DRAWDOWN, "750.00000001", NORMAL),  # just below STOP
        (DRAWDOWN, "749.99999999", DRAWDOWN),  # just above STOP
        (DRAWDOWN, "1000", NORMAL),
        (DRAWDOWN, "0", DRAWDOWN),
    ],
)
def test_transition_compares_the_drawdown_with_start_and_stop_inclusively(
    current: AdlState, balance: str, expected: AdlState
) -> None:
    moved = transition(current, D("1000"), D(balance), POLICY)
    assert moved.state == expected
    assert moved.drawdown == (D(1000) - D(balance)) / D(1000)


@pytest.mark.parametrize("peak", ["0", "0.00000000", "-5", "-0.00000001"])
@pytest.mark.parametrize("current", [NORMAL, DRAWDOWN])
def test_a_peak_that_is_not_positive_means_drawdown_zero_and_normal(current: AdlState, peak: str) -> None:
    for balance in ("-10", "0", peak):
        moved = transition(current, D(peak), D(balance), POLICY)
        assert (moved.state, moved.drawdown) == (NORMAL, D(0))
        assert rounded_drawdown(moved.drawdown) == 0


def test_thresholds_are_compared_exactly_even_when_the_drawdown_is_not_a_finite_decimal() -> None:
    # a third of the peak lost: the drawdown 0.333... reaches a START of 0.333...3 (60 places), not
    # a START a hair above a third
    assert transition(NORMAL, D(3), D(2), DrawdownPolicy(D("0." + "3" * 60), D("0.1"))).state == DRAWDOWN
    below = DrawdownPolicy(D("0." + "3" * 60 + "4"), D("0.1"))
    assert transition(NORMAL, D(3), D(2), below).state == NORMAL
    # and in drawdown a STOP of a third (to 60 places) is not yet reached at a third lost
    assert transition(DRAWDOWN, D(3), D(2), DrawdownPolicy(D("0.5"), D("0." + "3" * 60))).state == DRAWDOWN


@pytest.mark.parametrize(
    ("exact", "written"),
    [
        ("0.300000005", "0.30000000"),  # a tie goes to the even neighbour
        ("0.300000015", "0.30000002"),
        ("0.3000000250", "0.30000002"),
        ("0.30000002500000001", "0.30000003"),
        ("0.300000004999", "0.30000000"),
        ("0.999999995", "1.00000000"),
        ("0", "0.00000000"),
    ],
)
def test_the_drawdown_is_written_with_eight_places_half_even(exact: str, written: str) -> None:
    assert codec.amount_text(rounded_drawdown(D(exact))) == written


# --- PeakWindow: the exact rolling peak -------------------------------------------------------------


def test_the_seed_is_the_balance_at_the_window_start_until_a_record_passes_the_horizon() -> None:
    window = PeakWindow(100, seed=D(500))
    assert window.record(0, D(400)) == 500
    assert window.record(99, D(300)) == 500
    # horizon 0: the record at 0 is the last one at or before it, so the seed no longer counts
    assert window.record(100, D(200)) == 400


def test_the_balance_at_c_minus_w_is_the_last_recorded_at_or_before_it() -> None:
    window = PeakWindow(100)
    assert window.record(0, D(100)) == 100
    assert window.record(10, D(50)) == 100
    assert window.record(100, D(40)) == 100  # horizon 0: the 100 recorded at 0 is at c - W exactly
    assert window.record(109, D(40)) == 100  # horizon 9: still the last one at or before it
    assert window.record(110, D(40)) == 50  # horizon 10: now the 50 recorded at 10 is
    assert window.record(209, D(30)) == 40  # horizon 109: the 40 recorded at 109
    assert window.record(211, D(30)) == 40  # horizon 111: the 40 recorded at 110, until 209 passes
    assert window.record(309, D(20)) == 30  # horizon 209: the 30 recorded at 209


def test_ties_in_the_clock_the_last_of_them_is_the_balance_at_c_minus_w() -> None:
    window = PeakWindow(100)
    for balance in (100, 50, 70):  # three records at one clock
        window.record(0, D(balance))
    assert window.record(99, D(10)) == 100  # horizon -1: all three are in (c - W, c]
    assert window.record(100, D(10)) == 70  # horizon 0: the last record at 0 is 70, not the highest


def test_a_negative_or_zero_peak() -> None:
    window = PeakWindow(10, seed=D(-5))
    assert window.record(0, D(-3)) == -3
    assert window.record(1, D(-10)) == -3
    assert window.record(20, D(-7)) == -7  # horizon 10: the -10 at 1 was the balance at c - W
    zero = PeakWindow(10, seed=D(0))
    assert zero.record(0, D(0)) == 0
    moved = transition(NORMAL, zero.record(5, D(0)), D(0), POLICY)
    assert (moved.state, moved.drawdown) == (NORMAL, D(0))


def test_memory_stays_within_the_window() -> None:
    window = PeakWindow(1000, seed=D(0))
    for step in range(10_000):  # rising: every record dominates the ones before it
        window.record(step, D(step))
    assert len(window) == 1
    flat = PeakWindow(1000, seed=D(5))
    for step in range(100):  # equal balances: a later one stands for the earlier ones
        assert flat.record(step, D(5)) == 5
    assert len(flat) == 1
    falling = PeakWindow(1000)
    for step in range(10_000):  # falling, one record a millisecond: the window holds 1000 + 1
        falling.record(step, D(-step))
        assert len(falling) <= min(step + 1, 1001)
    assert len(falling) == 1001
    assert falling.record(20_000, D(-20_000)) == -9999  # horizon 19_000: the last one before it
    assert len(falling) == 2


# --- the Ledger: the policy on fills and operations --------------------------------------------------


def test_exactly_at_start_the_fund_enters_drawdown_and_exactly_at_stop_it_returns() -> None:
    outcomes = run(
        ledger(), loss(1, "300"), surplus(2, "49.99999999", T + 1), surplus(3, "0.00000001", T + 2)
    )
    assert [outcome.state.balance for outcome in outcomes] == [D("700"), D("749.99999999"), D("750")]
    assert states(outcomes) == [DRAWDOWN, DRAWDOWN, NORMAL]
    assert [outcome.state.drawdown for outcome in outcomes] == [D("0.3"), D("0.25000000"), D("0.25")]
    assert [outcome.state_change is not None for outcome in outcomes] == [True, False, True]


def test_just_below_start_the_fund_keeps_paying() -> None:
    outcomes = run(ledger(), loss(1, "299.99999999"), loss(2, "0.00000001", T + 1), loss(3, "5", T + 2))
    assert states(outcomes) == [NORMAL, DRAWDOWN, DRAWDOWN]
    assert [outcome.delta.amount for outcome in outcomes if outcome.delta] == [
        D("-299.99999999"),
        D("-0.00000001"),  # paid: the fund was normal before this fill, though drawdown after it
        D("0"),
    ]


def test_between_stop_and_start_the_state_does_not_change() -> None:
    outcomes = run(
        ledger(), loss(1, "260"), loss(2, "60", T + 1), surplus(3, "30", T + 2), surplus(4, "15", T + 3)
    )
    # 0.26 normal; 0.32 drawdown; 0.29 still drawdown (above STOP); 0.275 still drawdown
    assert states(outcomes) == [NORMAL, DRAWDOWN, DRAWDOWN, DRAWDOWN]
    assert [outcome.state_change is not None for outcome in outcomes] == [False, True, False, False]


def test_the_first_delta_of_a_fund_starts_its_window_at_the_initial_balance() -> None:
    target = ledger()
    (outcome,) = run(target, loss(1, "300"))
    assert outcome.state.peak == D("1000")  # the balance before the first delta
    assert outcome.state.adl_state == DRAWDOWN
    assert outcome.state.clock == T
    (rising,) = run(ledger(), surplus(1, "10"))
    assert (rising.state.peak, rising.state.drawdown, rising.state.adl_state) == (D("1010"), D(0), NORMAL)
    assert FundRules().policy_for("USDT").drawdown is None  # off by default


def test_a_fund_at_zero_has_peak_zero_drawdown_zero_and_stays_normal() -> None:
    target = ledger(initial="0")
    outcomes = run(target, loss(1, "300"), loss(2, "5", T + 1))
    for outcome in outcomes:
        assert (outcome.state.peak, outcome.state.drawdown, outcome.state.adl_state) == (D(0), D(0), NORMAL)
        assert outcome.trigger is not None
        assert outcome.trigger.reason == "insufficient_fund"
        assert outcome.state_change is None
    document = codec.state_document(target.funds["USDT"])
    assert (document["adl_state"], document["drawdown"], document["peak"]) == (
        "normal",
        "0.00000000",
        "0.00000000",
    )


def test_a_peak_leaves_the_window_at_c_minus_w_exactly() -> None:
    """The balance at ``c - W`` is the last one recorded at or before it: at ``c = T + W - 1`` that
    is the initial 1000 (recorded before T), at ``c = T + W`` it is the 800 recorded at T."""
    inside = run(ledger(), loss(1, "200"), loss(2, "100", T + HOUR - 1))
    assert (inside[-1].state.peak, inside[-1].state.adl_state) == (D("1000"), DRAWDOWN)  # 300 / 1000
    boundary = run(ledger(), loss(1, "200"), loss(2, "100", T + HOUR))
    assert (boundary[-1].state.peak, boundary[-1].state.adl_state) == (D("800"), NORMAL)  # 100 / 800
    assert boundary[-1].state.drawdown == D("0.125")


def test_a_fund_in_drawdown_returns_to_normal_when_its_peak_leaves_the_window() -> None:
    outcomes = run(ledger(), loss(1, "300"), loss(2, "1", T + HOUR - 1), loss(3, "1", T + HOUR))
    assert states(outcomes) == [DRAWDOWN, DRAWDOWN, NORMAL]
    change = outcomes[-1].state_change
    assert change is not None
    assert (change.peak, change.balance, change.drawdown) == (D("700"), D("700"), D("0"))
    assert outcomes[1].delta is not None and outcomes[1].delta.amount == 0  # not paid in drawdown
    assert outcomes[2].delta is not None and outcomes[2].delta.amount == 0  # the state before decides


def test_operations_count_in_the_window_and_can_change_the_state() -> None:
    target = ledger()
    top_up, fall, withdrawal, refill = run(
        target,
        operation(1, "top_up", "500", T),
        loss(2, "449.99999999", T + 1),
        operation(3, "withdrawal", "0.00000001", T + 2),
        operation(4, "top_up", "75", T + 3),
    )
    assert top_up.state.peak == D("1500")  # the top-up is a balance of the window
    assert fall.state.adl_state == NORMAL  # 449.99999999 / 1500 < 0.3
    assert withdrawal.state.adl_state == DRAWDOWN  # a withdrawal reaches START: 450 / 1500
    assert withdrawal.state_change is not None
    assert (withdrawal.state_change.sequence, withdrawal.state_change.timestamp) == (3, T + 2)
    assert refill.state.adl_state == NORMAL  # 375 / 1500 = STOP
    assert refill.state_change is not None and refill.state_change.sequence == 4


def test_a_refused_withdrawal_a_duplicate_and_a_conflict_leave_the_window_alone() -> None:
    target = ledger()
    run(target, loss(1, "250"))
    before = target.funds["USDT"]
    window = list(target.peaks["USDT"])
    refused, duplicate, conflict = run(
        target, operation(2, "withdrawal", "5000", T + HOUR * 5), loss(1, "250"), loss(1, "251")
    )
    assert refused.refusal is not None and duplicate.delta is None and conflict.conflict is not None
    assert list(target.peaks["USDT"]) == window
    assert target.funds["USDT"] == before._replace(duplicates=1)


def test_ties_in_event_time_several_deltas_at_one_clock() -> None:
    target = ledger()
    outcomes = run(target, loss(1, "100"), surplus(2, "50"), loss(3, "150"), loss(4, "100"))
    assert [outcome.state.clock for outcome in outcomes] == [T] * 4
    # balances 900, 950, 800, 700 at one clock: the peak is the initial 1000 throughout
    assert [outcome.state.peak for outcome in outcomes] == [D("1000")] * 4
    assert states(outcomes) == [NORMAL, NORMAL, NORMAL, DRAWDOWN]
    # one window later the balance at c - W is the last one recorded at T (700), not the highest (950)
    (later,) = run(target, loss(5, "0.00000001", T + HOUR))
    assert (later.state.peak, later.state.adl_state) == (D("700"), NORMAL)


def test_a_late_event_never_moves_the_clock_back_its_balance_is_recorded_at_the_current_clock() -> None:
    """What the window does with an event older than the newest one: nothing special. The fund's
    clock stays at the newest event time seen, and the late delta's ``balance_after`` is recorded at
    that clock, as if it had happened then (SPEC: ``c = max(c, timestamp)``). So a late balance
    stays in the window for a full window from the clock, not from its own timestamp.

    Here the late surplus (event time T) is recorded at T + 2h; at T + 3h it is the balance at
    ``c - W`` and so the peak. Recorded at its own time it would have been superseded by the 900
    recorded at T + 2h, the peak 900, and the fund normal.
    """
    target = ledger()
    first, late, last = run(
        target, loss(1, "100", T + 2 * HOUR), surplus(2, "100", T), loss(3, "300", T + 3 * HOUR)
    )
    assert (first.state.clock, late.state.clock, last.state.clock) == (
        T + 2 * HOUR,
        T + 2 * HOUR,
        T + 3 * HOUR,
    )
    assert late.state.last_timestamp == T  # the state's last event time is the delta's own
    assert late.delta is not None and late.delta.timestamp == T
    assert last.state.peak == D("1000")
    assert last.state.adl_state == DRAWDOWN
    assert last.state.drawdown == D("0.3")


def test_a_state_change_caused_by_a_late_event_carries_its_own_event_time() -> None:
    target = ledger()
    _, late = run(target, surplus(1, "1", T + HOUR), loss(2, "303", T))
    assert late.state.clock == T + HOUR
    assert late.state_change is not None
    assert (late.state_change.sequence, late.state_change.timestamp) == (2, T)


def test_a_loss_in_drawdown_is_not_paid_the_whole_loss_is_shortfall_and_deleveraged() -> None:
    target = ledger(floor={"USDT": D("100")})
    run(target, loss(1, "300"))
    assert target.funds["USDT"].adl_state == DRAWDOWN
    fill = loss(2, "10", T + 1, quantity="0.123456789", fee="0.25", unfilled_quantity="2")
    (outcome,) = run(target, fill)
    delta, trigger = outcome.delta, outcome.trigger
    assert isinstance(delta, FundDelta) and trigger is not None
    loss_amount = D("0.25") - (D(-10) * D("0.123456789")).quantize(D("1e-8"))  # fee minus gross
    assert (delta.type, delta.net) == ("bankruptcy_loss", -loss_amount)
    assert (delta.amount, delta.shortfall) == (D(0), loss_amount)
    assert delta.balance_before == delta.balance_after == D("700")  # 600 above the floor, unpaid
    assert trigger.reason == "fund_drawdown"
    assert trigger.shortfall == loss_amount
    assert trigger.quantity == D("0.12345679") + D("2")  # q(quantity x shortfall / loss) + unfilled
    assert (trigger.fund_balance, trigger.sequence) == (D("700"), 2)
    state = outcome.state
    assert (state.total_paid, state.total_shortfall, state.adl_triggers) == (D("300"), loss_amount, 1)
    assert state.by_symbol["BTCUSDT"] == D("-300")


def test_a_surplus_in_drawdown_is_applied_as_usual() -> None:
    target = ledger()
    run(target, loss(1, "300"))
    (outcome,) = run(target, surplus(2, "20", T + 1, unfilled_quantity="3"))
    delta, trigger = outcome.delta, outcome.trigger
    assert isinstance(delta, FundDelta) and trigger is not None
    assert (delta.type, delta.amount, delta.balance_after) == ("liquidation_surplus", D("20"), D("720"))
    assert (trigger.reason, trigger.quantity, trigger.shortfall) == ("no_liquidity", D("3"), D(0))
    assert outcome.state.adl_state == DRAWDOWN  # 280 / 1000 is above STOP
    assert outcome.state.total_surplus == D("20")


def test_the_state_change_event_fields() -> None:
    policy = DrawdownPolicy(D("0.30"), D("0.250"), HOUR)  # written in their shortest form
    target = ledger(policy, initial="2000000000")
    big = D(100_000)
    # fall 600000010 of 2e9: 0.300000005, a tie, rounded to the even 0.30000000
    (down,) = run(target, loss(1, "6000.0001", T + 5, quantity=big))
    assert down.state_change == AdlStateChange(
        "USDT",
        DRAWDOWN,
        NORMAL,
        D("0.30000000"),
        D("2000000000"),
        D("1399999990"),
        D("0.30"),
        D("0.250"),
        1,
        T + 5,
    )
    document = codec.adl_state_document(down.state_change)
    assert document == {
        "fund": "USDT",
        "state": "drawdown",
        "previous_state": "normal",
        "drawdown": "0.30000000",
        "peak": "2000000000.00000000",
        "balance": "1399999990.00000000",
        "start": "0.3",
        "stop": "0.25",
        "sequence": 1,
        "timestamp": T + 5,
        "version": 1,
    }
    assert not list(ADL_STATE_SCHEMA.iter_errors(document))
    (up,) = run(target, surplus(2, "1000.0002", T + 6, quantity=big))  # fall 499999990: 0.249999995
    assert up.state_change is not None
    document = codec.adl_state_document(up.state_change)
    assert (document["state"], document["previous_state"], document["drawdown"]) == (
        "normal",
        "drawdown",
        "0.25000000",  # a tie after an odd digit: rounded up
    )
    assert (document["sequence"], document["timestamp"]) == (2, T + 6)
    assert not list(ADL_STATE_SCHEMA.iter_errors(document))
    (third,) = run(ledger(policy, initial="2000000000"), loss(3, "6000.0003", T + 7, quantity=big))
    assert third.state_change is not None  # fall 600000030: 0.300000015, a tie after an odd digit
    assert codec.adl_state_document(third.state_change)["drawdown"] == "0.30000002"


def test_the_state_document_shows_the_policy_only_when_it_is_on() -> None:
    on = ledger()
    run(on, loss(1, "300"))
    document = codec.state_document(on.funds["USDT"])
    assert set(document) == V1_STATE_KEYS | {"adl_state", "drawdown", "peak"}
    assert (document["adl_state"], document["drawdown"], document["peak"]) == (
        "drawdown",
        "0.30000000",
        "1000.00000000",
    )
    off = Ledger(FundRules(initial_balance={"USDT": D("1000")}))
    (outcome,) = run(off, loss(1, "300"))
    assert set(codec.state_document(off.funds["USDT"])) == V1_STATE_KEYS
    assert (outcome.state.peak, outcome.state.drawdown, outcome.state.clock) == (None, None, None)
    assert outcome.state_change is None and off.peaks == {}


def test_a_policy_for_one_fund_leaves_the_others_as_in_v1() -> None:
    target = Ledger(FundRules(initial_balance={"USDT": D("1000")}, drawdown={"BTC": POLICY}))
    (outcome,) = run(target, loss(1, "300"))
    assert outcome.state_change is None
    assert set(codec.state_document(outcome.state)) == V1_STATE_KEYS


def test_the_pipeline_emits_the_encoded_state_change_with_the_delta() -> None:
    pipeline = Pipeline(FillDecoder.from_schema_dir(), ledger(), clock_ms=lambda: 0)
    fill = codec.encode_fill(loss(1, "300"))
    emitted = pipeline.process(fill, b"USDT", "liquidation-fills", 0, 0)
    assert emitted.delta is not None and emitted.adl_state is not None
    assert json.loads(emitted.adl_state) | {"drawdown": None} == {
        "fund": "USDT",
        "state": "drawdown",
        "previous_state": "normal",
        "drawdown": None,
        "peak": "1000.00000000",
        "balance": "700.00000000",
        "start": "0.3",
        "stop": "0.25",
        "sequence": 1,
        "timestamp": T,
        "version": 1,
    }
    operation_bytes = codec.encode_operation(operation(2, "top_up", "100", T + 1))
    emitted = pipeline.process(operation_bytes, b"USDT", "liquidation-fills", 0, 1)
    assert emitted.delta is not None and emitted.adl_state is not None  # 200 / 1000 <= STOP
    assert json.loads(emitted.adl_state)["state"] == "normal"
    assert pipeline.process(fill, b"USDT", "liquidation-fills", 0, 2).adl_state is None  # a duplicate
