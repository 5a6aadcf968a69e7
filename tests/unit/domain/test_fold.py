"""SPEC section 3, one rule at a time, through the pure ``apply`` and the in-memory ``Ledger``."""

from __future__ import annotations

from decimal import Decimal

import pytest

from processor import codec
from processor.domain.events import LiquidationFill
from processor.domain.fold import Outcome, apply
from processor.domain.ledger import Ledger
from processor.domain.state import FundPolicy, FundRules, FundState
from tests.strategies import BASE_TIMESTAMP, make_fill

D = Decimal
DEFAULT_RULES = FundRules()
USDT = DEFAULT_RULES.policy_for("USDT")
BTC = DEFAULT_RULES.policy_for("BTC")
HOUR = 3_600_000


def fold_one(fill: LiquidationFill, policy: FundPolicy = USDT, state: FundState | None = None) -> Outcome:
    """Apply one fresh (never seen) fill to ``state``, a newly opened fund by default."""
    if state is None:
        state = FundState.opened(fill.margin_currency, policy)
    return apply(state, fill, policy, None)


def inverse_fill(**changes: object) -> LiquidationFill:
    base: dict[str, object] = {
        "symbol": "BTCUSD",
        "margin_currency": "BTC",
        "contract_type": "inverse",
        "contract_size": "100",
        "bankruptcy_price": "25000",
        "fill_price": "25100",
        "quantity": "50",
        "fee": "0",
    }
    base.update(changes)
    return make_fill(**base)


def assert_same_decimal(actual: Decimal, expected: str) -> None:
    """Equal value *and* the fund's exponent, so the rendering is fixed."""
    assert actual == D(expected)
    assert str(actual) == expected or format(actual, "f") == expected


# --- 2./3. gross result, fee, net -----------------------------------------------------------------


def test_seed_example_long_surplus_goes_into_the_fund_minus_the_fee() -> None:
    # long, B = 28000, 1 BTC closed at 28200: gross = (28200 - 28000) x 1 = 200; fee 0.5 -> net 199.5
    outcome = fold_one(make_fill())
    delta = outcome.delta
    assert delta is not None
    assert delta.type == "liquidation_surplus"
    assert_same_decimal(delta.gross_pnl, "200.00000000")
    assert_same_decimal(delta.fee, "0.50000000")
    assert_same_decimal(delta.net, "199.50000000")
    assert_same_decimal(delta.amount, "199.50000000")
    assert_same_decimal(delta.shortfall, "0.00000000")
    assert_same_decimal(delta.balance_before, "0.00000000")
    assert_same_decimal(delta.balance_after, "199.50000000")
    assert (delta.sequence, delta.timestamp, delta.delta_id) == (1, BASE_TIMESTAMP, "fill-0001")
    assert (delta.fund, delta.symbol, delta.liquidation_id) == ("USDT", "BTCUSDT", "liq-0001")
    assert outcome.trigger is None
    assert outcome.conflict is None
    state = outcome.state
    assert state.balance == D("199.5")
    assert state.total_surplus == D("199.5")
    assert state.total_paid == 0
    assert (state.fills, state.sequence, state.duplicates, state.adl_triggers) == (1, 1, 0, 0)
    assert state.last_timestamp == BASE_TIMESTAMP
    assert dict(state.by_symbol) == {"BTCUSDT": D("199.5")}


def test_linear_short_profit_is_bankruptcy_minus_fill_price() -> None:
    # short, B = 2000, F = 1990, Q = 10: (2000 - 1990) x 10 = 100; fee 1.2 -> net 98.8
    outcome = fold_one(
        make_fill(side="short", bankruptcy_price="2000", fill_price="1990", quantity="10", fee="1.2")
    )
    assert outcome.delta is not None
    assert outcome.delta.gross_pnl == D("100")
    assert outcome.delta.net == D("98.8")
    assert outcome.delta.type == "liquidation_surplus"


def test_linear_short_closed_above_bankruptcy_is_a_loss() -> None:
    # short, B = 2000, F = 2030, Q = 10: (2000 - 2030) x 10 = -300; fee 1.2 -> net -301.2
    opened = FundState.opened("USDT", USDT)._replace(balance=D("1000.00000000"))
    outcome = fold_one(
        make_fill(side="short", bankruptcy_price="2000", fill_price="2030", quantity="10", fee="1.2"),
        state=opened,
    )
    delta = outcome.delta
    assert delta is not None
    assert delta.type == "bankruptcy_loss"
    assert_same_decimal(delta.gross_pnl, "-300.00000000")
    assert_same_decimal(delta.net, "-301.20000000")
    assert_same_decimal(delta.amount, "-301.20000000")
    assert_same_decimal(delta.shortfall, "0.00000000")
    assert_same_decimal(delta.balance_after, "698.80000000")
    assert outcome.trigger is None


def test_linear_contract_size_scales_the_quantity() -> None:
    # Q = 3 contracts x 0.1 = 0.3; long (110 - 100) x 0.3 = 3
    outcome = fold_one(
        make_fill(contract_size="0.1", bankruptcy_price="100", fill_price="110", quantity="3", fee="0")
    )
    assert outcome.delta is not None
    assert outcome.delta.gross_pnl == D("3")


def test_inverse_long_uses_the_exact_quotient_rounded_half_even() -> None:
    # Q = 50 x 100 = 5000; 5000 x (25100 - 25000) / (25000 x 25100) = 0.000796812749003984...
    # q8 -> 0.00079681; fee 0.00001 -> net 0.00078681
    outcome = fold_one(inverse_fill(fee="0.00001"), policy=BTC)
    delta = outcome.delta
    assert delta is not None
    assert_same_decimal(delta.gross_pnl, "0.00079681")
    assert_same_decimal(delta.fee, "0.00001000")
    assert_same_decimal(delta.net, "0.00078681")
    assert delta.type == "liquidation_surplus"
    assert delta.fund == "BTC"


def test_inverse_short_uses_the_exact_quotient_rounded_half_even() -> None:
    # Q = 20 x 100 = 2000; 2000 x (25000 - 24950) / (25000 x 24950) = 0.000160320641282565... -> 0.00016032
    outcome = fold_one(inverse_fill(side="short", fill_price="24950", quantity="20"), policy=BTC)
    assert outcome.delta is not None
    assert_same_decimal(outcome.delta.gross_pnl, "0.00016032")


def test_inverse_short_loss() -> None:
    # Q = 5000; 5000 x (25000 - 25100) / (25000 x 25100) = -0.000796812749... -> -0.00079681
    outcome = fold_one(inverse_fill(side="short"), policy=BTC)
    assert outcome.delta is not None
    assert_same_decimal(outcome.delta.gross_pnl, "-0.00079681")
    assert outcome.delta.type == "bankruptcy_loss"


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("0.00000001", "0.00000000"),  # 0.00000001 x (2 - 1) / (1 x 2) = 0.000000005 -> even 0
        ("0.00000003", "0.00000002"),  # 0.000000015 -> even 2
        ("0.00000005", "0.00000002"),  # 0.000000025 -> even 2
        ("0.00000007", "0.00000004"),  # 0.000000035 -> even 4
    ],
)
def test_inverse_quotient_ties_round_half_even(quantity: str, expected: str) -> None:
    fill = inverse_fill(contract_size="1", bankruptcy_price="1", fill_price="2", quantity=quantity)
    outcome = fold_one(fill, policy=BTC)
    assert outcome.delta is not None
    assert_same_decimal(outcome.delta.gross_pnl, expected)


@pytest.mark.parametrize(
    ("side", "fill_price", "expected"),
    [
        ("long", "1.000000005", "0.00000000"),
        ("long", "1.000000015", "0.00000002"),
        ("long", "1.000000025", "0.00000002"),
        ("long", "1.000000035", "0.00000004"),
        ("short", "1.000000005", "0.00000000"),  # -0.000000005 rounds to zero, never "-0"
        ("short", "1.000000015", "-0.00000002"),
    ],
)
def test_gross_ties_round_half_even(side: str, fill_price: str, expected: str) -> None:
    outcome = fold_one(make_fill(side=side, bankruptcy_price="1", fill_price=fill_price, fee="0"))
    delta = outcome.delta
    assert delta is not None
    assert_same_decimal(delta.gross_pnl, expected)
    assert not delta.gross_pnl.is_signed() or delta.gross_pnl < 0


@pytest.mark.parametrize(
    ("fee", "expected_fee", "expected_net"),
    [
        ("0.000000005", "0.00000000", "200.00000000"),
        ("0.000000015", "0.00000002", "199.99999998"),
        ("0.000000025", "0.00000002", "199.99999998"),
        ("0", "0.00000000", "200.00000000"),
        ("199.99999999", "199.99999999", "0.00000001"),
    ],
)
def test_fee_is_rounded_half_even_and_subtracted(fee: str, expected_fee: str, expected_net: str) -> None:
    outcome = fold_one(make_fill(fee=fee))
    assert outcome.delta is not None
    assert_same_decimal(outcome.delta.fee, expected_fee)
    assert_same_decimal(outcome.delta.net, expected_net)


def test_fee_larger_than_the_gross_turns_a_profit_into_a_loss() -> None:
    # gross (100.5 - 100) x 1 = 0.5, fee 1 -> net -0.5: a loss the empty fund cannot pay
    outcome = fold_one(make_fill(bankruptcy_price="100", fill_price="100.5", fee="1"))
    delta, trigger = outcome.delta, outcome.trigger
    assert delta is not None
    assert trigger is not None
    assert delta.type == "bankruptcy_loss"
    assert delta.net == D("-0.5")
    assert delta.shortfall == D("0.5")
    assert trigger.reason == "insufficient_fund"
    assert trigger.quantity == D("1")  # q(1 x 0.5 / 0.5)


def test_zero_net_is_a_surplus_of_zero() -> None:
    outcome = fold_one(make_fill(fill_price="28000", fee="0"))
    assert outcome.delta is not None
    assert outcome.delta.type == "liquidation_surplus"
    assert_same_decimal(outcome.delta.amount, "0.00000000")
    assert outcome.trigger is None
    assert outcome.state.fills == 1


# --- precision ------------------------------------------------------------------------------------


def test_precision_is_configurable_per_currency() -> None:
    rules = FundRules(precision={"BTC": 10})
    btc, usdt = rules.policy_for("BTC"), rules.policy_for("USDT")
    assert (btc.precision, usdt.precision) == (10, 8)
    # 0.000796812749003984... -> q10 = 0.0007968127; fee 0.00001 -> 0.0000100000
    outcome = fold_one(inverse_fill(fee="0.00001"), policy=btc)
    assert outcome.delta is not None
    assert_same_decimal(outcome.delta.gross_pnl, "0.0007968127")
    assert_same_decimal(outcome.delta.fee, "0.0000100000")
    assert_same_decimal(outcome.delta.net, "0.0007868127")
    assert_same_decimal(outcome.state.balance, "0.0007868127")
    seed = fold_one(make_fill(), policy=usdt)
    assert seed.delta is not None
    assert_same_decimal(seed.delta.net, "199.50000000")


@pytest.mark.parametrize(
    ("fill_price", "expected"), [("100.125", "0.12"), ("100.135", "0.14"), ("100.145", "0.14")]
)
def test_coarse_precision_rounds_half_even(fill_price: str, expected: str) -> None:
    policy = FundRules(precision={"USDT": 2}).policy_for("USDT")
    outcome = fold_one(make_fill(bankruptcy_price="100", fill_price=fill_price, fee="0"), policy=policy)
    assert outcome.delta is not None
    assert_same_decimal(outcome.delta.gross_pnl, expected)


def test_default_precision_applies_to_unlisted_currencies() -> None:
    rules = FundRules(default_precision=6, precision={"BTC": 10})
    assert rules.policy_for("USDC").precision == 6
    assert rules.policy_for("BTC").precision == 10


# --- 4. apply: floor, available, loss larger than the fund ----------------------------------------


def test_loss_is_paid_down_to_the_floor_and_the_rest_is_shortfall() -> None:
    # initial 150, floor 100 -> available 50; loss (20 - 100) x 1 = -80 -> paid 50, shortfall 30
    rules = FundRules(floor={"USDT": D("100")}, initial_balance={"USDT": D("150")})
    ledger = Ledger(rules)
    outcome = ledger.fold(make_fill(bankruptcy_price="100", fill_price="20", fee="0"))
    delta, trigger = outcome.delta, outcome.trigger
    assert delta is not None
    assert trigger is not None
    assert_same_decimal(delta.amount, "-50.00000000")
    assert_same_decimal(delta.shortfall, "30.00000000")
    assert_same_decimal(delta.balance_before, "150.00000000")
    assert_same_decimal(delta.balance_after, "100.00000000")
    assert trigger.quantity == D("0.375")  # q(1 x 30 / 80)
    assert trigger.fund_balance == D("100")
    # At the floor nothing more is available: the next loss is all shortfall.
    second = ledger.fold(make_fill(fill_id="fill-0002", bankruptcy_price="100", fill_price="90", fee="0"))
    assert second.delta is not None
    assert_same_decimal(second.delta.amount, "0.00000000")
    assert second.delta.shortfall == D("10")
    assert second.state.balance == D("100")
    assert second.state.total_paid == D("50")
    assert second.state.total_shortfall == D("40")


def test_balance_below_the_floor_pays_nothing_but_still_takes_surpluses() -> None:
    rules = FundRules(floor={"USDT": D("100")}, initial_balance={"USDT": D("50")})
    ledger = Ledger(rules)
    loss = ledger.fold(make_fill(fill_id="a", bankruptcy_price="100", fill_price="90", fee="0"))
    assert loss.delta is not None
    assert loss.delta.amount == 0
    assert loss.delta.shortfall == D("10")
    assert loss.state.balance == D("50")
    surplus = ledger.fold(make_fill(fill_id="b", bankruptcy_price="100", fill_price="120", fee="0"))
    assert surplus.state.balance == D("70")


def test_default_floor_applies_to_every_fund() -> None:
    rules = FundRules(default_floor=D("10"), initial_balance={"USDC": D("15")})
    outcome = Ledger(rules).fold(
        make_fill(margin_currency="USDC", bankruptcy_price="100", fill_price="90", fee="0")
    )
    assert outcome.delta is not None
    assert outcome.delta.amount == D("-5")
    assert outcome.delta.shortfall == D("5")


def test_loss_larger_than_an_empty_fund_is_all_shortfall() -> None:
    # long, B 28000, F 27900, Q 1: gross -100, fee 0.5 -> loss 100.5, nothing available
    outcome = fold_one(make_fill(fill_price="27900"))
    delta, trigger = outcome.delta, outcome.trigger
    assert delta is not None
    assert trigger is not None
    assert delta.type == "bankruptcy_loss"
    assert_same_decimal(delta.amount, "0.00000000")
    assert_same_decimal(delta.shortfall, "100.50000000")
    assert_same_decimal(delta.balance_after, "0.00000000")
    assert trigger.reason == "insufficient_fund"
    assert trigger.quantity == D("1")  # q(1 x 100.5 / 100.5)
    assert outcome.state.total_shortfall == D("100.5")
    assert outcome.state.adl_triggers == 1


def test_loss_the_fund_can_cover_is_paid_in_full_without_a_trigger() -> None:
    rules = FundRules(initial_balance={"USDT": D("1000")})
    outcome = Ledger(rules).fold(make_fill(fill_price="27700"))  # gross -300, net -300.5
    assert outcome.delta is not None
    assert_same_decimal(outcome.delta.amount, "-300.50000000")
    assert outcome.delta.shortfall == 0
    assert outcome.trigger is None
    assert outcome.state.balance == D("699.5")
    assert outcome.state.total_paid == D("300.5")


def test_initial_balances_open_the_fund() -> None:
    rules = FundRules(initial_balance={"USDT": D("1000"), "BTC": D("1.000000005")})
    usdt = FundState.opened("USDT", rules.policy_for("USDT"))
    btc = FundState.opened("BTC", rules.policy_for("BTC"))
    eth = FundState.opened("ETH", rules.policy_for("ETH"))
    assert_same_decimal(usdt.balance, "1000.00000000")
    assert_same_decimal(btc.balance, "1.00000000")  # rounded half-even to the fund's precision
    assert_same_decimal(eth.balance, "0.00000000")
    assert (usdt.fills, usdt.sequence, usdt.last_timestamp, dict(usdt.by_symbol)) == (0, 0, None, {})
    outcome = Ledger(rules).fold(make_fill())
    assert outcome.delta is not None
    assert outcome.delta.balance_before == D("1000")
    assert outcome.delta.balance_after == D("1199.5")


# --- partial fills, unfilled remainder, triggers --------------------------------------------------


def test_partial_fills_of_one_liquidation_each_yield_a_delta() -> None:
    ledger = Ledger()
    common = {"liquidation_id": "liq-7", "bankruptcy_price": "28000", "fee": "0"}
    first = ledger.fold(make_fill(fill_id="p1", fill_price="28100", quantity="0.4", **common))  # +40
    second = ledger.fold(make_fill(fill_id="p2", fill_price="27950", quantity="0.4", **common))  # -20, paid
    third = ledger.fold(
        make_fill(fill_id="p3", fill_price="28000", quantity="0", unfilled_quantity="0.2", **common)
    )
    deltas = [outcome.delta for outcome in (first, second, third)]
    assert all(delta is not None for delta in deltas)
    assert [delta.sequence for delta in deltas if delta] == [1, 2, 3]
    assert [delta.amount for delta in deltas if delta] == [D("40"), D("-20"), D("0")]
    assert [delta.balance_after for delta in deltas if delta] == [D("40"), D("20"), D("20")]
    assert first.trigger is None
    assert second.trigger is None
    assert third.trigger is not None
    assert third.trigger.reason == "no_liquidity"
    assert third.trigger.quantity == D("0.2")
    assert third.trigger.liquidation_id == "liq-7"
    assert ledger.funds["USDT"].by_symbol == {"BTCUSDT": D("20")}


def test_unfilled_remainder_triggers_no_liquidity_for_the_unfilled_quantity() -> None:
    outcome = fold_one(make_fill(fill_price="28000", quantity="0", unfilled_quantity="3", fee="0"))
    delta, trigger = outcome.delta, outcome.trigger
    assert delta is not None
    assert trigger is not None
    assert delta.type == "liquidation_surplus"
    assert delta.amount == 0
    assert trigger.reason == "no_liquidity"
    assert trigger.quantity == D("3")
    assert trigger.unfilled_quantity == D("3")
    assert trigger.shortfall == 0
    assert trigger.fund_balance == delta.balance_after
    assert trigger.sequence == delta.sequence == 1
    assert trigger.trigger_id == "adl-fill-0001"
    assert trigger.bankruptcy_price == D("28000")
    assert outcome.state.adl_triggers == 1


def test_profitable_fill_with_unfilled_remainder_asks_only_for_the_unfilled_quantity() -> None:
    outcome = fold_one(make_fill(quantity="1", unfilled_quantity="0.25"))
    assert outcome.trigger is not None
    assert outcome.trigger.reason == "no_liquidity"
    assert outcome.trigger.quantity == D("0.25")
    assert outcome.delta is not None
    assert outcome.delta.amount == D("199.5")


def test_insufficient_fund_and_unfilled_at_once_is_insufficient_fund_including_unfilled() -> None:
    # The schema example: balance 199.5; short B 2000 F 2030 Q 10 fee 1.2 unfilled 2.5
    # loss 301.2, paid 199.5, shortfall 101.7; quantity = q(10 x 101.7 / 301.2) + 2.5
    #   = q(3.376494023904382...) + 2.5 = 3.37649402 + 2.5 = 5.87649402
    state = FundState.opened("USDT", USDT)._replace(balance=D("199.50000000"))
    fill = make_fill(
        fill_id="fill-0002",
        liquidation_id="liq-0002",
        symbol="ETHUSDT",
        side="short",
        bankruptcy_price="2000",
        fill_price="2030",
        quantity="10",
        unfilled_quantity="2.5",
        fee="1.2",
    )
    outcome = fold_one(fill, state=state)
    delta, trigger = outcome.delta, outcome.trigger
    assert delta is not None
    assert trigger is not None
    assert_same_decimal(delta.amount, "-199.50000000")
    assert_same_decimal(delta.shortfall, "101.70000000")
    assert_same_decimal(delta.balance_after, "0.00000000")
    assert trigger.reason == "insufficient_fund"
    assert trigger.quantity == D("5.87649402")
    assert trigger.unfilled_quantity == D("2.5")
    assert trigger.shortfall == D("101.7")
    assert trigger.liquidated_side == "short"
    assert trigger.deleverage_side == "long"
    assert trigger.bankruptcy_price == D("2000")
    assert trigger.fund_balance == D("0")


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("0.00000001", "0"),  # 0.00000001 x 1 / 2 = 0.000000005 -> even 0 (an insufficient_fund trigger of 0)
        ("0.00000003", "0.00000002"),  # 0.000000015 -> even 2
    ],
)
def test_insufficient_fund_quantity_is_rounded_half_even(quantity: str, expected: str) -> None:
    # gross 0 (F = B), fee 2 -> loss 2; balance 1 -> paid 1, shortfall 1; quantity x 1 / 2
    state = FundState.opened("USDT", USDT)._replace(balance=D("1.00000000"))
    outcome = fold_one(make_fill(fill_price="28000", quantity=quantity, fee="2"), state=state)
    assert outcome.trigger is not None
    assert outcome.trigger.reason == "insufficient_fund"
    assert outcome.trigger.quantity == D(expected)
    assert outcome.trigger.shortfall == D("1")


def test_insufficient_fund_trigger_for_a_zero_quantity_fill_with_a_fee() -> None:
    # quantity 0, unfilled 4, fee 3: net -3, all shortfall -> reason insufficient_fund, quantity 0 + 4
    outcome = fold_one(make_fill(fill_price="28000", quantity="0", unfilled_quantity="4", fee="3"))
    assert outcome.trigger is not None
    assert outcome.trigger.reason == "insufficient_fund"
    assert outcome.trigger.quantity == D("4")


@pytest.mark.parametrize(("side", "opposite"), [("long", "short"), ("short", "long")])
def test_deleverage_side_is_opposite_of_the_liquidated_side(side: str, opposite: str) -> None:
    outcome = fold_one(make_fill(side=side, fill_price="28000", quantity="0", unfilled_quantity="1", fee="0"))
    assert outcome.trigger is not None
    assert outcome.trigger.liquidated_side == side
    assert outcome.trigger.deleverage_side == opposite


def test_at_most_one_trigger_per_fill_and_none_without_shortfall_or_unfilled() -> None:
    outcome = fold_one(make_fill(fill_price="27000", unfilled_quantity="1"))
    assert outcome.trigger is not None  # one trigger carries both the shortfall and the unfilled part
    assert outcome.state.adl_triggers == 1
    assert fold_one(make_fill()).trigger is None


# --- 6. sequence, by_symbol -----------------------------------------------------------------------


def test_sequence_numbers_accepted_fills_per_fund_without_gaps() -> None:
    ledger = Ledger()
    usdt_sequences, btc_sequences = [], []
    for index in range(4):
        outcome = ledger.fold(make_fill(fill_id=f"u{index}", fill_price="27000" if index % 2 else "28500"))
        assert outcome.delta is not None
        usdt_sequences.append(outcome.delta.sequence)
        if outcome.trigger is not None:
            assert outcome.trigger.sequence == outcome.delta.sequence
        btc = ledger.fold(inverse_fill(fill_id=f"b{index}"))
        assert btc.delta is not None
        btc_sequences.append(btc.delta.sequence)
        # A duplicate and a conflicting duplicate do not take a number.
        assert (
            ledger.fold(make_fill(fill_id=f"u{index}", fill_price="27000" if index % 2 else "28500")).delta
            is None
        )
        assert ledger.fold(make_fill(fill_id=f"u{index}", fill_price="1")).delta is None
    assert usdt_sequences == [1, 2, 3, 4]
    assert btc_sequences == [1, 2, 3, 4]
    assert ledger.funds["USDT"].sequence == ledger.funds["USDT"].fills == 4
    assert ledger.funds["USDT"].duplicates == 4


def test_by_symbol_sums_the_amounts_of_each_symbol() -> None:
    ledger = Ledger(FundRules(initial_balance={"USDT": D("100")}))
    ledger.fold(make_fill(fill_id="a", symbol="BTCUSDT"))  # +199.5
    ledger.fold(
        make_fill(fill_id="b", symbol="ETHUSDT", bankruptcy_price="2000", fill_price="1990", fee="0")
    )  # -10
    ledger.fold(make_fill(fill_id="c", symbol="BTCUSDT", fill_price="28010", fee="0.1"))  # +9.9
    ledger.fold(make_fill(fill_id="d", symbol="SOLUSDT", fill_price="28000", fee="0"))  # 0
    state = ledger.funds["USDT"]
    assert dict(state.by_symbol) == {"BTCUSDT": D("209.4"), "ETHUSDT": D("-10"), "SOLUSDT": D("0")}
    assert sum(state.by_symbol.values()) == state.balance - D("100")
    assert state.balance == D("299.4")
    assert state.total_surplus == D("209.4")
    assert state.total_paid == D("10")


# --- 1. duplicates --------------------------------------------------------------------------------


def test_identical_duplicate_is_counted_and_yields_nothing() -> None:
    applied = make_fill(fill_price=D("28200"))
    first = fold_one(applied)
    resent = make_fill(fill_price=D("28200.0"))  # compared by value: "28200.0" equals 28200
    outcome = apply(first.state, resent, USDT, applied)
    assert outcome.delta is None
    assert outcome.trigger is None
    assert outcome.conflict is None
    assert outcome.state == first.state._replace(duplicates=1)


def test_identical_duplicate_through_the_ledger() -> None:
    ledger = Ledger()
    ledger.fold(make_fill())
    outcome = ledger.fold(make_fill(fill_price=D("28200.000"), fee=D("0.50")))
    assert outcome.delta is None
    assert outcome.conflict is None
    state = ledger.funds["USDT"]
    assert (state.fills, state.duplicates, state.sequence, state.balance) == (1, 1, 1, D("199.5"))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("fill_price", D("28300")),
        ("quantity", D("2")),
        ("timestamp", BASE_TIMESTAMP + 1),
        ("side", "short"),
        ("liquidation_id", "liq-other"),
        ("unfilled_quantity", D("1")),
    ],
)
def test_conflicting_duplicate_names_the_field_and_leaves_the_state_unchanged(
    field: str, value: object
) -> None:
    ledger = Ledger()
    ledger.fold(make_fill())
    before = ledger.funds["USDT"]
    outcome = ledger.fold(make_fill(**{field: value}))
    assert outcome.delta is None
    assert outcome.trigger is None
    assert outcome.conflict is not None
    assert field in outcome.conflict
    assert "fill-0001" in outcome.conflict
    assert outcome.state == before
    assert ledger.funds["USDT"] == before
    assert ledger.funds["USDT"].duplicates == 0


def test_conflict_detail_names_only_the_differing_fields() -> None:
    applied = make_fill()
    outcome = apply(fold_one(applied).state, make_fill(fill_price="28300"), USDT, applied)
    assert outcome.conflict is not None
    assert "fill_price" in outcome.conflict
    assert "28300" in outcome.conflict
    assert "28200" in outcome.conflict
    for same in ("quantity", "bankruptcy_price", "timestamp", "side", "fee"):
        assert same not in outcome.conflict


def test_a_conflicting_resend_does_not_replace_the_applied_fill() -> None:
    ledger = Ledger()
    ledger.fold(make_fill())
    ledger.fold(make_fill(fill_price="28300"))
    assert ledger.fold(make_fill()).conflict is None  # still a duplicate of the original
    assert ledger.fold(make_fill(fill_price="28300")).conflict is not None
    assert ledger.funds["USDT"].duplicates == 1


def test_duplicate_within_the_window_is_a_duplicate() -> None:
    ledger = Ledger(duplicate_window_ms=1000)
    ledger.fold(make_fill(fill_id="a", timestamp=BASE_TIMESTAMP))
    ledger.fold(make_fill(fill_id="b", timestamp=BASE_TIMESTAMP + 1000))  # exactly the window later
    outcome = ledger.fold(make_fill(fill_id="a", timestamp=BASE_TIMESTAMP))
    assert outcome.delta is None
    assert ledger.funds["USDT"].duplicates == 1


def test_fill_resent_after_the_window_is_applied_again() -> None:
    ledger = Ledger(duplicate_window_ms=1000)
    ledger.fold(make_fill(fill_id="a", timestamp=BASE_TIMESTAMP))
    ledger.fold(make_fill(fill_id="b", timestamp=BASE_TIMESTAMP + 1001))
    again = ledger.fold(make_fill(fill_id="a", timestamp=BASE_TIMESTAMP))
    assert again.delta is not None
    assert again.delta.sequence == 3
    assert ledger.funds["USDT"].duplicates == 0
    # Once applied again it is remembered again.
    assert ledger.fold(make_fill(fill_id="a", timestamp=BASE_TIMESTAMP)).delta is None


def test_out_of_order_fill_is_remembered_within_the_window() -> None:
    ledger = Ledger(duplicate_window_ms=1000)
    ledger.fold(make_fill(fill_id="late", timestamp=BASE_TIMESTAMP + 5000))
    ledger.fold(make_fill(fill_id="early", timestamp=BASE_TIMESTAMP + 4500))  # arrives after a newer fill
    assert ledger.fold(make_fill(fill_id="early", timestamp=BASE_TIMESTAMP + 4500)).delta is None
    ledger.fold(make_fill(fill_id="newer", timestamp=BASE_TIMESTAMP + 5400))  # early is 900 ms older: kept
    assert ledger.fold(make_fill(fill_id="early", timestamp=BASE_TIMESTAMP + 4500)).delta is None
    assert ledger.fold(make_fill(fill_id="late", timestamp=BASE_TIMESTAMP + 5000)).delta is None
    assert ledger.funds["USDT"].duplicates == 3
    assert ledger.funds["USDT"].fills == 3


def test_default_window_remembers_fills_for_seven_days_of_event_time() -> None:
    ledger = Ledger()
    week = 7 * 24 * HOUR
    ledger.fold(make_fill(fill_id="a", timestamp=BASE_TIMESTAMP))
    ledger.fold(make_fill(fill_id="b", timestamp=BASE_TIMESTAMP + week))
    assert ledger.fold(make_fill(fill_id="a", timestamp=BASE_TIMESTAMP)).delta is None


def test_duplicate_window_is_per_fund() -> None:
    ledger = Ledger(duplicate_window_ms=1000)
    ledger.fold(make_fill(fill_id="a", timestamp=BASE_TIMESTAMP))
    ledger.fold(inverse_fill(fill_id="b", timestamp=BASE_TIMESTAMP + 10_000))  # another fund's clock
    assert ledger.fold(make_fill(fill_id="a", timestamp=BASE_TIMESTAMP)).delta is None


# --- fund independence, purity, signs -------------------------------------------------------------


def test_funds_are_independent() -> None:
    alone = Ledger()
    usdt_fills = [
        make_fill(fill_id="x1"),
        make_fill(fill_id="x2", fill_price="27000"),
        make_fill(fill_id="x3", fill_price="28999"),
    ]
    expected = [alone.fold(fill) for fill in usdt_fills]
    mixed = Ledger()
    outcomes = []
    for fill in usdt_fills:
        mixed.fold(inverse_fill(fill_id=fill.fill_id))  # same fill_id, other fund: not a duplicate
        outcomes.append(mixed.fold(fill))
        mixed.fold(inverse_fill(fill_id=fill.fill_id + "-btc", side="short"))
    assert [o.delta for o in outcomes] == [o.delta for o in expected]
    assert [o.trigger for o in outcomes] == [o.trigger for o in expected]
    assert mixed.funds["USDT"] == alone.funds["USDT"]
    assert mixed.funds["BTC"].fills == 6
    assert mixed.funds["BTC"].duplicates == 0


def test_apply_does_not_mutate_its_inputs() -> None:
    first = fold_one(make_fill())
    snapshot = (first.state, dict(first.state.by_symbol))
    second = apply(first.state, make_fill(fill_id="fill-0002", fill_price="27000"), USDT, None)
    assert (first.state, dict(first.state.by_symbol)) == snapshot
    assert second.state.by_symbol["BTCUSDT"] == D("0")
    assert first.state.by_symbol["BTCUSDT"] == D("199.5")


def test_the_same_fold_twice_gives_equal_outcomes() -> None:
    fill = make_fill(fill_price="27000", unfilled_quantity="1")
    assert fold_one(fill) == fold_one(fill)


ZERO_SCENARIOS = {
    "gross rounds to -0": make_fill(side="short", bankruptcy_price="1", fill_price="1.000000004", fee="0"),
    "gross rounds to -0 with a fee": make_fill(side="short", bankruptcy_price="1", fill_price="1.000000004"),
    "break even": make_fill(fill_price="28000", fee="0"),
    "unfilled only": make_fill(fill_price="28000", quantity="0", unfilled_quantity="1", fee="0"),
    "loss on an empty fund": make_fill(fill_price="27000", fee="0"),
    "inverse -0": inverse_fill(
        side="short", contract_size="1", bankruptcy_price="1", fill_price="1.00000001", quantity="0.1"
    ),
}


@pytest.mark.parametrize("fill", list(ZERO_SCENARIOS.values()), ids=list(ZERO_SCENARIOS))
def test_no_negative_zero_in_any_output(fill: LiquidationFill) -> None:
    ledger = Ledger()
    outcome = ledger.fold(fill)
    policy = ledger.policy(fill.margin_currency)
    assert outcome.delta is not None
    encoded = codec.encode_delta(outcome.delta)
    if outcome.trigger is not None:
        encoded += codec.encode_trigger(outcome.trigger, policy)
    encoded += codec.encode_states(ledger.funds.values())
    assert b'"-0.0' not in encoded
    assert b'"-0"' not in encoded
    delta = outcome.delta
    amounts = (delta.gross_pnl, delta.fee, delta.net, delta.amount, delta.shortfall, delta.balance_before)
    for value in (*amounts, delta.balance_after):
        assert not (value == 0 and value.is_signed())


def test_no_negative_zero_from_a_tiny_negative_initial_balance() -> None:
    ledger = Ledger(FundRules(initial_balance={"USDT": D("-0.000000001")}))
    outcome = ledger.fold(make_fill())
    assert outcome.delta is not None
    assert b"-0.00000000" not in codec.encode_delta(outcome.delta)
