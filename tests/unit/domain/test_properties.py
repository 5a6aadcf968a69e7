"""Invariants of the fold over generated multi-currency streams (SPEC sections 3 and 5)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any, NamedTuple

from hypothesis import given, settings
from hypothesis import strategies as st

from processor import codec
from processor.codec import FillDecoder
from processor.domain.events import LiquidationFill
from processor.domain.ledger import Ledger
from processor.domain.state import FundRules
from processor.pipeline import Pipeline
from tests.conftest import scaled
from tests.strategies import (
    CURRENCIES,
    FillEvent,
    fill_events,
    fill_sequences,
    spellings,
    unique_fills,
)

DECODER = FillDecoder.from_schema_dir()
D = Decimal


class Run(NamedTuple):
    """Everything one pass over a stream wrote, as bytes, plus the ledger it left."""

    deltas: list[bytes]
    triggers: list[bytes]
    dead_letters: list[bytes]
    duplicates_seen: int
    ledger: Ledger

    def by_fund(self, outputs: Iterable[bytes]) -> dict[str, list[bytes]]:
        grouped: dict[str, list[bytes]] = defaultdict(list)
        for raw in outputs:
            grouped[json.loads(raw)["fund"]].append(raw)
        return dict(grouped)

    def state_bytes(self) -> bytes:
        return codec.encode_states(self.ledger.funds.values())


def run(events: Sequence[FillEvent], rules: FundRules | None = None) -> Run:
    pipeline = Pipeline(DECODER, Ledger(rules), clock_ms=lambda: 0)
    deltas, triggers, dead_letters = [], [], []
    duplicates = 0
    for offset, event in enumerate(events):
        emitted = pipeline.process(event.encode(), None, "generated", None, offset)
        if emitted.delta is not None:
            deltas.append(emitted.delta)
            if emitted.trigger is not None:
                triggers.append(emitted.trigger)
        elif emitted.dead_letter is not None:
            dead_letters.append(emitted.dead_letter)
        else:
            duplicates += 1
    return Run(deltas, triggers, dead_letters, duplicates, pipeline.ledger)


@st.composite
def fund_rules(draw: st.DrawFn) -> FundRules:
    """Floors, initial balances and precisions for some of the generated currencies."""
    amounts = st.decimals(min_value=0, max_value=5000, places=2)
    chosen = draw(st.lists(st.sampled_from(CURRENCIES), unique=True))
    return FundRules(
        precision={currency: draw(st.sampled_from([6, 8, 10])) for currency in chosen},
        floor={
            currency: draw(amounts) for currency in draw(st.lists(st.sampled_from(CURRENCIES), unique=True))
        },
        default_floor=draw(st.sampled_from([D(0), D(0), D("50")])),
        initial_balance={currency: draw(amounts) for currency in chosen},
    )


def initial(rules: FundRules, fund: str) -> Decimal:
    quantum = D(1).scaleb(-rules.precision.get(fund, rules.default_precision))
    return rules.initial_balance.get(fund, D(0)).quantize(quantum, ROUND_HALF_EVEN)


# --- a reference model: SPEC section 3 written out again, naively ---------------------------------


def reference_fold(
    events: Sequence[FillEvent], rules: FundRules
) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Expected (delta values, trigger values) of every accepted fill, straight from the SPEC's formulas."""
    balances: dict[str, Decimal] = {}
    sequences: Counter[str] = Counter()
    applied: set[tuple[str, str]] = set()
    expected = []
    with localcontext() as context:
        context.prec = 200
        for event in events:
            fill: LiquidationFill = event.expected()
            fund = fill.margin_currency
            if (fund, fill.fill_id) in applied:
                continue
            applied.add((fund, fill.fill_id))
            quantum = D(1).scaleb(-rules.precision.get(fund, rules.default_precision))

            def q(value: Decimal, quantum: Decimal = quantum) -> Decimal:
                return value.quantize(quantum, ROUND_HALF_EVEN)

            floor = q(rules.floor.get(fund, rules.default_floor))
            balance = balances.get(fund, initial(rules, fund))
            contracts = fill.quantity * fill.contract_size
            bankruptcy, price = fill.bankruptcy_price, fill.fill_price
            if fill.contract_type == "linear":
                gross_exact = (
                    (price - bankruptcy) * contracts
                    if fill.side == "long"
                    else (bankruptcy - price) * contracts
                )
            elif fill.side == "long":
                gross_exact = contracts * (price - bankruptcy) / (bankruptcy * price)
            else:
                gross_exact = contracts * (bankruptcy - price) / (bankruptcy * price)
            gross, fee = q(gross_exact), q(fill.fee)
            net = gross - fee
            available = max(balance - floor, D(0))
            if net >= 0:
                amount, shortfall, loss = net, D(0), D(0)
            else:
                loss = -net
                paid = min(loss, available)
                amount, shortfall = -paid, loss - paid
            sequences[fund] += 1
            balances[fund] = balance + amount
            delta = {
                "gross_pnl": gross,
                "fee": fee,
                "net": net,
                "amount": amount,
                "shortfall": shortfall,
                "balance_before": balance,
                "balance_after": balance + amount,
                "sequence": D(sequences[fund]),
                "type": "liquidation_surplus" if net >= 0 else "bankruptcy_loss",
            }
            trigger = None
            if shortfall > 0 or fill.unfilled_quantity > 0:
                first = q(fill.quantity * shortfall / loss) if shortfall > 0 else D(0)
                trigger = {
                    "reason": "insufficient_fund" if shortfall > 0 else "no_liquidity",
                    "quantity": first + fill.unfilled_quantity,
                    "unfilled_quantity": fill.unfilled_quantity,
                    "shortfall": shortfall,
                    "fund_balance": balance + amount,
                    "bankruptcy_price": bankruptcy,
                    "deleverage_side": "short" if fill.side == "long" else "long",
                    "sequence": D(sequences[fund]),
                }
            expected.append((delta, trigger))
    return expected


def as_values(document: Mapping[str, Any], expected: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of an output document named in ``expected``, read as Decimals where ``expected`` has one."""
    return {
        name: D(document[name]) if isinstance(value, Decimal) else document[name]
        for name, value in expected.items()
    }


# --- properties -----------------------------------------------------------------------------------


@given(fill_sequences(extremes=True), fund_rules())
def test_fold_matches_the_reference_model(events: list[FillEvent], rules: FundRules) -> None:
    result = run(events, rules)
    expected = reference_fold(events, rules)
    assert not result.dead_letters
    assert len(result.deltas) == len(expected)
    triggers = iter(result.triggers)
    for raw_delta, (delta, trigger) in zip(result.deltas, expected, strict=True):
        document = json.loads(raw_delta)
        assert as_values(document, delta) == delta
        if trigger is None:
            continue
        trigger_document = json.loads(next(triggers))
        assert trigger_document["fill_id"] == document["fill_id"]
        assert as_values(trigger_document, trigger) == trigger
    assert next(triggers, None) is None


@given(fill_sequences(), fund_rules())
def test_conservation(events: list[FillEvent], rules: FundRules) -> None:
    result = run(events, rules)
    for fund, state in result.ledger.funds.items():
        start = initial(rules, fund)
        assert state.balance == start + state.total_surplus - state.total_paid
        assert sum(state.by_symbol.values(), D(0)) == state.balance - start
        assert state.total_surplus >= 0
        assert state.total_paid >= 0
    for fund, deltas in result.by_fund(result.deltas).items():
        documents = [json.loads(raw) for raw in deltas]
        balance = initial(rules, fund)
        surplus = paid = D(0)
        for document in documents:
            amount = D(document["amount"])
            assert D(document["balance_before"]) == balance
            assert D(document["balance_after"]) == balance + amount
            assert D(document["net"]) == D(document["gross_pnl"]) - D(document["fee"])
            if document["type"] == "liquidation_surplus":
                assert amount == D(document["net"]) >= 0
                assert D(document["shortfall"]) == 0
            else:
                assert D(document["net"]) < 0
                assert amount <= 0
                assert D(document["shortfall"]) == -D(document["net"]) + amount
            surplus += max(amount, D(0))
            paid += max(-amount, D(0))
            balance += amount
        state = result.ledger.funds[fund]
        assert (state.balance, state.total_surplus, state.total_paid) == (balance, surplus, paid)


@given(fill_sequences(), fund_rules())
def test_determinism(events: list[FillEvent], rules: FundRules) -> None:
    first, second = run(events, rules), run(events, rules)
    assert first.deltas == second.deltas
    assert first.triggers == second.triggers
    assert first.dead_letters == second.dead_letters
    assert first.state_bytes() == second.state_bytes()


@given(fill_sequences(resends=False), st.data())
def test_idempotence_resending_applied_fills_changes_only_duplicates(
    events: list[FillEvent], data: st.DataObject
) -> None:
    baseline = run(events)
    resent = data.draw(st.lists(st.sampled_from(events), max_size=2 * len(events)), label="resent")
    respelled = [event.respelled(data.draw(spellings)) for event in resent]
    # Re-sends arrive after everything (the tail) and interleaved after their originals.
    tail = run([*events, *respelled])
    interleaved_stream: list[FillEvent] = []
    pending = list(respelled)
    for event in events:
        interleaved_stream.append(event)
        interleaved_stream.extend(r for r in pending if r.fill_id == event.fill_id)
    interleaved = run(interleaved_stream)
    per_fund = Counter(event.margin_currency for event in resent)
    for result in (tail, interleaved):
        assert result.deltas == baseline.deltas
        assert result.triggers == baseline.triggers
        assert not result.dead_letters
        assert result.duplicates_seen == len(resent)
        assert set(result.ledger.funds) == set(baseline.ledger.funds)
        for fund, state in result.ledger.funds.items():
            assert state == baseline.ledger.funds[fund]._replace(duplicates=per_fund[fund])


@given(fill_sequences())
def test_generated_resends_are_only_counted(events: list[FillEvent]) -> None:
    with_resends, without = run(events), run(unique_fills(events))
    assert with_resends.deltas == without.deltas
    assert with_resends.triggers == without.triggers
    assert with_resends.duplicates_seen == len(events) - len(unique_fills(events))
    assert (
        sum(state.duplicates for state in with_resends.ledger.funds.values()) == with_resends.duplicates_seen
    )


@given(fill_sequences(min_size=2, max_size=30), fund_rules())
def test_funds_are_independent_of_interleaving(events: list[FillEvent], rules: FundRules) -> None:
    mixed = run(events, rules)
    deltas, triggers = mixed.by_fund(mixed.deltas), mixed.by_fund(mixed.triggers)
    for fund in {event.margin_currency for event in events}:
        alone = run([event for event in events if event.margin_currency == fund], rules)
        assert deltas.get(fund, []) == alone.deltas
        assert triggers.get(fund, []) == alone.triggers
        assert mixed.ledger.funds[fund] == alone.ledger.funds[fund]


@given(fill_sequences(max_size=30), fund_rules())
def test_balance_never_goes_below_the_floor_by_a_fill(events: list[FillEvent], rules: FundRules) -> None:
    result = run(events, rules)
    for raw in result.deltas:
        document = json.loads(raw)
        fund = document["fund"]
        quantum = D(1).scaleb(-rules.precision.get(fund, rules.default_precision))
        floor = rules.floor.get(fund, rules.default_floor).quantize(quantum, ROUND_HALF_EVEN)
        before, after = D(document["balance_before"]), D(document["balance_after"])
        assert after >= min(before, floor)
        if document["type"] == "bankruptcy_loss":
            # paid = min(loss, available): never more than what lies above the floor
            assert -D(document["amount"]) <= max(before - floor, D(0))
            if D(document["shortfall"]) > 0:
                assert after == (floor if before >= floor else before)


@given(fill_sequences(), fund_rules())
def test_counters_match_the_outputs(events: list[FillEvent], rules: FundRules) -> None:
    result = run(events, rules)
    deltas, triggers = result.by_fund(result.deltas), result.by_fund(result.triggers)
    for fund, state in result.ledger.funds.items():
        documents = [json.loads(raw) for raw in deltas.get(fund, [])]
        assert state.sequence == state.fills == len(documents)
        assert [document["sequence"] for document in documents] == list(range(1, state.fills + 1))
        assert state.total_shortfall == sum((D(document["shortfall"]) for document in documents), D(0))
        assert state.adl_triggers == len(triggers.get(fund, []))
        assert state.last_timestamp == (documents[-1]["timestamp"] if documents else None)
        trigger_sequences = {json.loads(raw)["sequence"] for raw in triggers.get(fund, [])}
        with_shortfall = {document["sequence"] for document in documents if D(document["shortfall"]) > 0}
        assert with_shortfall <= trigger_sequences


@settings(max_examples=scaled(200))
@given(fill_events(extremes=True))
def test_every_spelling_of_a_valid_fill_decodes_to_the_same_fill(event: FillEvent) -> None:
    decoded = DECODER.decode(event.encode())
    assert isinstance(decoded, LiquidationFill), (event.encode(), decoded)
    assert decoded == event.expected()
