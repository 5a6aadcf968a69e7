"""Invariants of the fold with pools and treasury operations (SPEC sections 7 and 8), over generated
streams of fills and operations interleaved in any order."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor import codec
from processor.codec import FillDecoder
from processor.domain.events import FundOperation
from processor.domain.ledger import Ledger
from processor.domain.pools import FundPools, Pool
from processor.domain.state import FundRules, FundState
from processor.pipeline import Emitted, Pipeline
from processor.replay import OutputFiles, read_lines, replay_lines
from tests.conftest import scaled
from tests.golden.regenerate import FIXED_CLOCK_MS, GOLDEN, rules_of
from tests.strategies import (
    CURRENCIES,
    FillEvent,
    InputEvent,
    OperationEvent,
    fill_sequences,
    make_operation,
    mixed_sequences,
    pool_lists,
)
from tests.unit.codec.support import STATE_KEYS
from tests.unit.domain.test_pools import reference_fund_of

DECODER = FillDecoder.from_schema_dir()
D = Decimal
ZERO_FIELDS = ("gross_pnl", "fee", "net", "shortfall")


class Run(NamedTuple):
    """Every message of a stream and what it produced, in order, plus the ledger it left."""

    emitted: list[tuple[InputEvent, Emitted]]
    ledger: Ledger

    @property
    def deltas(self) -> list[bytes]:
        return [emitted.delta for _, emitted in self.emitted if emitted.delta is not None]

    @property
    def triggers(self) -> list[bytes]:
        return [emitted.trigger for _, emitted in self.emitted if emitted.trigger is not None]

    @property
    def dead_letters(self) -> list[dict[str, Any]]:
        """The dead letters without their coordinates (a re-send moves the offsets)."""
        letters = [json.loads(e.dead_letter) for _, e in self.emitted if e.dead_letter is not None]
        return [{key: letter[key] for key in ("error", "detail", "value")} for letter in letters]

    @property
    def ignored(self) -> int:
        return sum(1 for _, emitted in self.emitted if emitted == Emitted(emitted.fund, emitted.symbol))

    def state_bytes(self) -> bytes:
        return codec.encode_states(self.ledger.funds.values())


def run(events: Sequence[InputEvent], rules: FundRules) -> Run:
    pipeline = Pipeline(DECODER, Ledger(rules), clock_ms=lambda: 0)
    emitted = [
        (event, pipeline.process(event.encode(), None, "generated", None, offset))
        for offset, event in enumerate(events)
    ]
    return Run(emitted, pipeline.ledger)


class Opening(NamedTuple):
    """How a fund opens, straight from the rules (SPEC sections 5 and 7)."""

    quantum: Decimal
    initial: Decimal
    floor: Decimal

    def q(self, value: Decimal) -> Decimal:
        return value.quantize(self.quantum, ROUND_HALF_EVEN)


def opening(rules: FundRules, fund: str) -> Opening:
    pool = next((pool for pool in rules.pools.pools if pool.fund == fund), None)
    currency = fund if pool is None else pool.currency
    quantum = D(1).scaleb(-rules.precision.get(currency, rules.default_precision))
    if pool is None:
        initial = rules.initial_balance.get(fund, D(0))
        floor = rules.floor.get(fund, rules.default_floor)
    else:
        initial = pool.initial_balance if pool.initial_balance is not None else D(0)
        floor = pool.floor if pool.floor is not None else rules.default_floor
    return Opening(
        quantum, initial.quantize(quantum, ROUND_HALF_EVEN), floor.quantize(quantum, ROUND_HALF_EVEN)
    )


def fund_of(rules: FundRules, event: InputEvent) -> str:
    if isinstance(event, OperationEvent):
        return event.fund
    return reference_fund_of(rules.pools.pools, event.margin_currency, event.symbol, event.timestamp)


@st.composite
def rules_with_pools(draw: st.DrawFn, pools: Sequence[Pool] = ()) -> FundRules:
    amounts = st.decimals(min_value=0, max_value=5000, places=2)
    chosen = draw(st.lists(st.sampled_from(CURRENCIES), unique=True))
    return FundRules(
        precision={currency: draw(st.sampled_from([6, 8, 10])) for currency in chosen},
        floor={
            currency: draw(amounts) for currency in draw(st.lists(st.sampled_from(CURRENCIES), unique=True))
        },
        default_floor=draw(st.sampled_from([D(0), D(0), D("50")])),
        initial_balance={currency: draw(amounts) for currency in chosen},
        pools=FundPools(pools),
    )


@st.composite
def scenarios(draw: st.DrawFn, max_size: int = 30) -> tuple[list[InputEvent], FundRules]:
    """Pools, rules, and a stream of fills and operations on any of the funds (pools included)."""
    pools = draw(pool_lists())
    rules = draw(rules_with_pools(pools))
    funds = [*CURRENCIES, *(pool.fund for pool in pools)]
    return draw(mixed_sequences(funds=funds, max_size=max_size)), rules


# --- conservation ---------------------------------------------------------------------------------


@settings(max_examples=scaled(60))
@given(scenarios())
def test_conservation_with_operations(scenario: tuple[list[InputEvent], FundRules]) -> None:
    events, rules = scenario
    result = run(events, rules)
    assert {letter["error"] for letter in result.dead_letters} <= {"operation_refused"}
    balances: dict[str, Decimal] = {}
    chains: dict[str, list[dict[str, Any]]] = {}
    for event, emitted in result.emitted:
        fund = fund_of(rules, event)
        fund_opening = opening(rules, fund)
        balance = balances.get(fund, fund_opening.initial)
        if isinstance(event, OperationEvent) and event.type == "withdrawal":
            # applied exactly when balance - q(amount) >= floor; refused otherwise
            allowed = balance - fund_opening.q(event.amount) >= fund_opening.floor
            assert (emitted.delta is not None) is allowed
            assert (emitted.error == "operation_refused") is not allowed
        if emitted.delta is None:
            continue
        document = json.loads(emitted.delta)
        assert document["fund"] == emitted.fund == fund
        assert D(document["balance_before"]) == balance
        assert D(document["balance_after"]) == balance + D(document["amount"])
        balances[fund] = D(document["balance_after"])
        chains.setdefault(fund, []).append(document)
        if isinstance(event, OperationEvent):
            sign = 1 if event.type == "top_up" else -1
            assert D(document["amount"]) == sign * fund_opening.q(event.amount)
            assert (document["type"], document["delta_id"], document["operation_id"]) == (
                event.type,
                event.operation_id,
                event.operation_id,
            )
            assert (document["symbol"], document["liquidation_id"], document["fill_id"]) == (None, None, None)
            assert all(D(document[name]) == 0 for name in ZERO_FIELDS)
            assert (document["requested_by"], document["reason"]) == (event.requested_by, event.reason)
            assert document.get("transfer_id") == event.transfer_id
            assert document["margin_currency"] == (rules.pools.currency_of(fund) or fund)
            if event.type == "withdrawal":
                assert D(document["balance_after"]) >= fund_opening.floor
    for fund, state in result.ledger.funds.items():
        start = opening(rules, fund).initial
        moved = state.total_top_ups - state.total_withdrawals
        assert state.balance == start + state.total_surplus - state.total_paid + moved
        assert sum(state.by_symbol.values(), D(0)) == state.balance - start - moved
        assert min(state.total_top_ups, state.total_withdrawals, state.total_surplus, state.total_paid) >= 0
        documents = chains.get(fund, [])
        assert state.sequence == state.fills + state.operations == len(documents)
        assert [document["sequence"] for document in documents] == list(range(1, len(documents) + 1))
        operations = [document for document in documents if document["type"] in ("top_up", "withdrawal")]
        assert state.operations == len(operations)
        assert state.total_top_ups == sum((D(d["amount"]) for d in operations if d["type"] == "top_up"), D(0))
        assert state.total_withdrawals == -sum(
            (D(d["amount"]) for d in operations if d["type"] == "withdrawal"), D(0)
        )
        assert state.balance == balances.get(fund, start)


@settings(max_examples=scaled(50))
@given(scenarios())
def test_determinism_with_pools_and_operations(scenario: tuple[list[InputEvent], FundRules]) -> None:
    events, rules = scenario
    first, second = run(events, rules), run(events, rules)
    assert first.deltas == second.deltas
    assert first.triggers == second.triggers
    assert first.dead_letters == second.dead_letters
    assert first.state_bytes() == second.state_bytes()


@settings(max_examples=scaled(50))
@given(scenarios(max_size=25))
def test_each_fund_is_independent_of_the_others(scenario: tuple[list[InputEvent], FundRules]) -> None:
    """A pool and its currency fund share a partition but nothing else: each fund's outputs are
    those of its own events alone."""
    events, rules = scenario
    mixed = run(events, rules)
    for fund in {fund_of(rules, event) for event in events}:
        alone = run([event for event in events if fund_of(rules, event) == fund], rules)
        mine = [emitted for event, emitted in mixed.emitted if fund_of(rules, event) == fund]
        assert [emitted.delta for emitted in mine] == [emitted.delta for _, emitted in alone.emitted]
        assert [emitted.trigger for emitted in mine] == [emitted.trigger for _, emitted in alone.emitted]
        assert [emitted.error for emitted in mine] == [emitted.error for _, emitted in alone.emitted]
        assert mixed.ledger.funds.get(fund) == alone.ledger.funds.get(fund)


# --- idempotence ----------------------------------------------------------------------------------


@settings(max_examples=scaled(60))
@given(scenarios(max_size=20), st.data())
def test_resending_applied_operations_changes_only_duplicates(
    scenario: tuple[list[InputEvent], FundRules], data: st.DataObject
) -> None:
    events, rules = scenario
    baseline = run(events, rules)
    applied = [
        index
        for index, (event, emitted) in enumerate(baseline.emitted)
        if isinstance(event, OperationEvent) and emitted.delta is not None
    ]
    chosen = data.draw(
        st.lists(st.sampled_from(applied), max_size=2 * len(applied)) if applied else st.just([])
    )
    stream: list[InputEvent] = list(events)
    for index in chosen:
        original = events[index]
        assert isinstance(original, OperationEvent)
        position = data.draw(st.integers(stream.index(original) + 1, len(stream)), label="at")
        stream.insert(position, original.respelled(data.draw))  # a faithful re-send, spelled anew
    resent = run(stream, rules)
    assert resent.deltas == baseline.deltas
    assert resent.triggers == baseline.triggers
    assert resent.dead_letters == baseline.dead_letters  # the same refusals: duplicates move no money
    assert resent.ignored == baseline.ignored + len(chosen)
    per_fund = Counter(fund_of(rules, events[index]) for index in chosen)
    assert set(resent.ledger.funds) == set(baseline.ledger.funds)
    for fund, state in resent.ledger.funds.items():
        expected = baseline.ledger.funds[fund]
        assert state == expected._replace(duplicates=expected.duplicates + per_fund[fund])


# --- refusals -------------------------------------------------------------------------------------


@settings(max_examples=scaled(60))
@given(scenarios(max_size=20), st.data())
def test_a_refused_withdrawal_changes_nothing_and_is_tried_again_when_sent_again(
    scenario: tuple[list[InputEvent], FundRules], data: st.DataObject
) -> None:
    events, rules = scenario
    ledger = run(events, rules).ledger
    fund = data.draw(st.sampled_from(sorted(ledger.funds)), label="fund") if ledger.funds else "USDT"
    currency = rules.pools.currency_of(fund) or fund
    fund_opening = opening(rules, fund)
    state = ledger.funds.get(fund) or FundState.opened(fund, ledger.policy(fund))
    excess = data.draw(st.integers(1, 10**6), label="quanta beyond the floor") * fund_opening.quantum
    amount = max(state.balance - fund_opening.floor, D(0)) + excess
    refused = make_operation(operation_id="w-refused", type="withdrawal", fund=fund, amount=amount)

    funds_before = dict(ledger.funds)
    window = ledger.windows.get(fund)
    remembered = sorted(map(repr, window)) if window is not None else []
    outcome = ledger.operate(refused, currency)
    assert outcome.refusal is not None and outcome.delta is None and outcome.conflict is None
    assert outcome.state == state
    assert ledger.funds == funds_before  # not even a fund that has seen nothing is opened
    assert sorted(map(repr, ledger.windows.get(fund, ()))) == remembered
    assert f"balance {state.balance:f}" in outcome.refusal
    assert f"floor {fund_opening.floor:f}" in outcome.refusal
    assert f"amount {fund_opening.q(amount):f}" in outcome.refusal

    assert ledger.operate(refused, currency).refusal is not None  # still refused, not a duplicate
    assert ledger.funds.get(fund, state).duplicates == state.duplicates
    shortfall = max(fund_opening.floor - state.balance, D(0))
    top_up = make_operation(operation_id="t-enough", fund=fund, amount=amount + shortfall)
    assert ledger.operate(top_up, currency).delta is not None
    applied = ledger.operate(refused, currency)
    assert applied.delta is not None and applied.refusal is None
    assert applied.state.balance == max(state.balance, fund_opening.floor)
    assert ledger.operate(refused, currency).state.duplicates == state.duplicates + 1


def test_a_refused_withdrawal_through_the_pipeline_is_a_dead_letter_and_leaves_the_fund_as_it_was() -> None:
    rules = FundRules(floor={"USDT": D("10")}, initial_balance={"USDT": D("100")})
    pipeline = Pipeline(DECODER, Ledger(rules), clock_ms=lambda: 0)
    pipeline.process(
        OperationEvent("t-1", "top_up", "USDT", D("5"), "a", "", None, 1).encode(), None, "in", 0, 0
    )
    before = dict(pipeline.ledger.funds)
    raw = OperationEvent("w-1", "withdrawal", "USDT", D("95.00000001"), "a", "", None, 2).encode()
    emitted = pipeline.process(raw, b"USDT", "in", 0, 1)
    assert (emitted.delta, emitted.error, emitted.fund) == (None, "operation_refused", "USDT")
    assert emitted.dead_letter is not None
    letter = json.loads(emitted.dead_letter)
    assert letter["detail"] == (
        "withdrawal of amount 95.00000001 from fund USDT refused: balance 105.00000000 - amount "
        "95.00000001 would fall below the floor 10.00000000"
    )
    assert (letter["value"], letter["key"], letter["source_offset"]) == (raw.decode(), "USDT", 1)
    assert pipeline.ledger.funds == before
    assert pipeline.ledger.windows["USDT"].get("w-1") is None


def test_a_refused_withdrawal_on_a_fund_that_has_seen_nothing_opens_no_fund() -> None:
    ledger = Ledger()
    outcome = ledger.operate(make_operation(type="withdrawal", fund="USDC", amount="1"), "USDC")
    assert outcome.refusal is not None
    assert ledger.funds == {}


# --- with no pools and no operations, v1 exactly ---------------------------------------------------

#: Pools that take none of the crash scenario's fills: another currency, symbols it never trades,
#: lower-case names (matching is case-sensitive), and time ranges before or after all of its fills.
IDLE_POOLS = FundPools(
    [
        Pool("EUR-ALL", "EUR", ("*",)),
        Pool("USDT-MEME", "USDT", ("MEME*USDT", "btcusdt"), D("20000"), D("1000")),
        Pool("USDT_BEFORE", "USDT", ("*",), until_timestamp=1),
        Pool("BTC-AFTER", "BTC", ("*",), D("1"), from_timestamp=1_700_000_100_001),
    ]
)


@pytest.mark.parametrize("pools", [FundPools(), IDLE_POOLS], ids=["empty-pools-file", "idle-pools"])
def test_pools_that_take_no_fill_leave_the_crash_scenario_byte_for_byte_as_in_v1(
    pools: FundPools, tmp_path: Path
) -> None:
    scenario = GOLDEN / "crash"
    rules = rules_of(scenario)
    assert not rules.pools
    pipeline = Pipeline(DECODER, Ledger(rules._replace(pools=pools)), clock_ms=lambda: FIXED_CLOCK_MS)
    outputs = OutputFiles(
        tmp_path / "state.json", tmp_path / "deltas.jsonl", tmp_path / "adl.jsonl", tmp_path / "dlq.jsonl"
    )
    replay_lines(read_lines(str(scenario / "input.jsonl")), pipeline, outputs, "input.jsonl")
    for name in ("deltas.jsonl", "adl.jsonl", "dlq.jsonl", "state.json"):
        assert (tmp_path / name).read_bytes() == (scenario / "expected" / name).read_bytes(), name
    for document in json.loads((tmp_path / "state.json").read_bytes()).values():
        assert list(document) == STATE_KEYS


@settings(max_examples=scaled(60))
@given(pool_lists(), fill_sequences(max_size=20), rules_with_pools())
def test_pools_that_take_no_fill_change_no_byte(
    pools: list[Pool], events: list[FillEvent], rules: FundRules
) -> None:
    idle = [
        pool
        for pool in pools
        if all(
            reference_fund_of([pool], event.margin_currency, event.symbol, event.timestamp)
            == event.margin_currency
            for event in events
        )
    ]
    v1, with_pools = run(events, rules), run(events, rules._replace(pools=FundPools(idle)))
    assert with_pools.deltas == v1.deltas
    assert with_pools.triggers == v1.triggers
    assert with_pools.dead_letters == v1.dead_letters
    assert with_pools.state_bytes() == v1.state_bytes()
    for state in with_pools.ledger.funds.values():
        assert list(codec.state_document(state)) == STATE_KEYS


def test_make_operation_builds_the_documented_defaults() -> None:
    assert make_operation() == FundOperation(
        "op-0001",
        "top_up",
        "USDT",
        D("1000"),
        "treasury:alice",
        "refill after the crash",
        None,
        1_700_000_000_000,
    )
