"""Invariants of the ADL policy (SPEC section 9) over generated streams: the rolling peak against a
brute-force reference, the whole policy against a naive model, hysteresis, and v1 with it off."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from pathlib import Path
from typing import NamedTuple

from hypothesis import given, settings
from hypothesis import strategies as st

from processor import codec
from processor.codec import FillDecoder
from processor.config import ADL_VARIABLES, Settings
from processor.domain.drawdown import PeakWindow
from processor.domain.events import FundDelta, FundOperation, LiquidationFill
from processor.domain.fold import Outcome
from processor.domain.ledger import Ledger
from processor.domain.state import DrawdownPolicy, FundRules
from processor.pipeline import Pipeline
from processor.replay import OutputFiles, read_lines, replay_lines
from tests.conftest import scaled
from tests.golden.regenerate import FIXED_CLOCK_MS, GOLDEN, settings_of
from tests.strategies import FillEvent, drawdown_streams, fill_sequences
from tests.unit.codec.support import STATE_KEYS
from tests.unit.domain.test_properties import as_values, reference_fold

D = Decimal
HOUR = 3_600_000
DECODER = FillDecoder.from_schema_dir()
QUANTUM = D("1e-8")
#: Wider than any generated stream, so the duplicate window never forgets within a test.
NEVER_FORGET_MS = 10**12
V1_STATE_KEYS = set(STATE_KEYS)  # a fund's state without SPEC sections 8 and 9
Event = LiquidationFill | FundOperation


# --- the SPEC's definition of the peak, computed directly ---------------------------------------------


def reference_peak(
    history: Sequence[tuple[int, Decimal]], seed: Decimal | None, clock: int, window_ms: int
) -> Decimal:
    """The highest of: the balance at ``clock - window_ms`` (the last one recorded at or before it, or
    ``seed`` if none) and every balance recorded in ``(clock - window_ms, clock]``."""
    horizon = clock - window_ms
    at_horizon = [balance for recorded, balance in history if recorded <= horizon]
    candidates = [balance for recorded, balance in history if recorded > horizon]
    if at_horizon:
        candidates.append(at_horizon[-1])
    elif seed is not None:
        candidates.append(seed)
    return max(candidates)


@st.composite
def recordings(draw: st.DrawFn) -> tuple[int, Decimal | None, list[tuple[int, Decimal]]]:
    """A window, a seed (or none) and (event time, balance) pairs: small balances so that equal ones
    are common, negative ones included, event times that tie, go back and jump."""
    window_ms = draw(st.sampled_from([1, 2, 5, 10, 100]))
    seed = draw(st.none() | st.integers(-20, 20).map(D))
    steps = draw(
        st.lists(
            st.tuples(
                st.one_of(st.just(0), st.integers(-window_ms - 1, -1), st.integers(1, 2 * window_ms + 1)),
                st.integers(-20, 20).map(D),
            ),
            min_size=1,
            max_size=60,
        )
    )
    events, timestamp = [], 1_000
    for step, balance in steps:
        timestamp += step
        events.append((timestamp, balance))
    return window_ms, seed, events


@settings(max_examples=scaled(300))
@given(recordings())
def test_the_peak_window_equals_the_definition_and_holds_at_most_the_window_plus_one(
    recording: tuple[int, Decimal | None, list[tuple[int, Decimal]]],
) -> None:
    window_ms, seed, events = recording
    window = PeakWindow(window_ms, seed)
    history: list[tuple[int, Decimal]] = []
    clock: int | None = None
    for timestamp, balance in events:
        clock = timestamp if clock is None else max(clock, timestamp)  # records never go back in time
        history.append((clock, balance))
        assert window.record(clock, balance) == reference_peak(history, seed, clock, window_ms)
        in_window = sum(1 for recorded, _ in history if recorded > clock - window_ms)
        assert len(window) <= in_window + 1


# --- the whole policy against a naive model -----------------------------------------------------------


class Expected(NamedTuple):
    """What SPEC sections 3, 8 and 9 say one applied event does."""

    amount: Decimal
    shortfall: Decimal
    reason: str | None
    quantity: Decimal | None
    state: str
    peak: Decimal
    drawdown: Decimal  # rounded to 8 places
    change: tuple[str, str, Decimal, Decimal, Decimal, int, int] | None


@dataclass
class ModelFund:
    balance: Decimal
    initial: Decimal
    floor: Decimal
    policy: DrawdownPolicy
    applied: set[str] = field(default_factory=set)
    history: list[tuple[int, Decimal]] = field(default_factory=list)
    clock: int | None = None
    state: str = "normal"
    sequence: int = 0


def q(value: Decimal) -> Decimal:
    return value.quantize(QUANTUM, ROUND_HALF_EVEN)


def model(events: Sequence[Event], rules: FundRules) -> list[Expected | None]:
    """Each event's expected effect (None: not applied), written from the SPEC without the code's
    shortcuts: the peak recomputed from every balance ever recorded."""
    funds: dict[str, ModelFund] = {}
    expected: list[Expected | None] = []
    with localcontext() as context:
        context.prec = 200
        for event in events:
            name = event.margin_currency if isinstance(event, LiquidationFill) else event.fund
            policy = rules.drawdown.get(name, rules.default_drawdown)
            assert policy is not None
            fund = funds.get(name)
            if fund is None:
                initial = q(rules.initial_balance.get(name, D(0)))
                floor = q(rules.floor.get(name, rules.default_floor))
                fund = funds[name] = ModelFund(initial, initial, floor, policy)
            key = event.event_id
            if key in fund.applied:
                expected.append(None)
                continue
            reason = quantity = None
            shortfall = D(0)
            if isinstance(event, FundOperation):
                amount = q(event.amount)
                if event.type == "withdrawal":
                    if fund.balance - amount < fund.floor:
                        expected.append(None)  # refused, and not remembered
                        continue
                    amount = -amount
            else:
                move = event.fill_price - event.bankruptcy_price
                gross = q(move * event.quantity * event.contract_size * (1 if event.side == "long" else -1))
                net = gross - q(event.fee)
                if net >= 0:
                    amount = net
                else:
                    lost = -net
                    available = max(fund.balance - fund.floor, D(0))
                    paid = D(0) if fund.state == "drawdown" else min(lost, available)
                    amount, shortfall = -paid, lost - paid
                if shortfall > 0:
                    reason = "fund_drawdown" if fund.state == "drawdown" else "insufficient_fund"
                    quantity = q(event.quantity * shortfall / -net) + event.unfilled_quantity
                elif event.unfilled_quantity > 0:
                    reason, quantity = "no_liquidity", event.unfilled_quantity
            fund.applied.add(key)
            fund.sequence += 1
            fund.balance += amount
            fund.clock = event.timestamp if fund.clock is None else max(fund.clock, event.timestamp)
            fund.history.append((fund.clock, fund.balance))
            peak = reference_peak(fund.history, fund.initial, fund.clock, policy.window_ms)
            drawdown = (peak - fund.balance) / peak if peak > 0 else D(0)
            previous = fund.state
            if previous == "normal" and drawdown >= policy.start:
                fund.state = "drawdown"
            elif previous == "drawdown" and drawdown <= policy.stop:
                fund.state = "normal"
            change = None
            if fund.state != previous:
                change = (
                    fund.state,
                    previous,
                    q(drawdown),
                    peak,
                    fund.balance,
                    fund.sequence,
                    event.timestamp,
                )
            expected.append(
                Expected(amount, shortfall, reason, quantity, fund.state, peak, q(drawdown), change)
            )
    return expected


def fold_all(ledger: Ledger, events: Sequence[Event]) -> list[Outcome]:
    return [
        ledger.fold(event) if isinstance(event, LiquidationFill) else ledger.operate(event, event.fund)
        for event in events
    ]


def observed(outcome: Outcome) -> Expected | None:
    delta, trigger, change, state = outcome.delta, outcome.trigger, outcome.state_change, outcome.state
    if delta is None:
        return None
    shortfall = getattr(delta, "shortfall", D(0))
    assert state.peak is not None and state.drawdown is not None
    return Expected(
        delta.amount,
        shortfall,
        None if trigger is None else trigger.reason,
        None if trigger is None else trigger.quantity,
        state.adl_state,
        state.peak,
        state.drawdown,
        None
        if change is None
        else (
            change.state,
            change.previous_state,
            change.drawdown,
            change.peak,
            change.balance,
            change.sequence,
            change.timestamp,
        ),
    )


@st.composite
def policies(draw: st.DrawFn) -> DrawdownPolicy:
    """START and STOP: the exchanges' usual ones, or any 0 < STOP < START < 1 in thousandths."""
    usual = [(D("0.3"), D("0.25")), (D("0.3"), D("0.2")), (D("0.5"), D("0.1"))]
    if draw(st.booleans()):
        start, stop = draw(st.sampled_from(usual))
    else:
        start_thousandths = draw(st.integers(2, 999))
        start = D(start_thousandths) / 1000
        stop = D(draw(st.integers(1, start_thousandths - 1))) / 1000
    return DrawdownPolicy(start, stop, HOUR)


@st.composite
def scenarios(
    draw: st.DrawFn, max_size: int = 40, windows: Sequence[int] = (1, 10, 60_000, HOUR)
) -> tuple[FundRules, list[Event]]:
    """Two funds under an ADL policy (USDC sometimes with its own), and a stream of their events."""
    window_ms = draw(st.sampled_from(windows))
    default = draw(policies())._replace(window_ms=window_ms)
    usdc = draw(st.none() | policies())
    if usdc is not None:
        usdc = usdc._replace(window_ms=draw(st.sampled_from([1, 7_200_000])))
    rules = FundRules(
        initial_balance={"USDT": D("1000"), "USDC": draw(st.sampled_from([D(0), D("500")]))},
        floor={"USDC": draw(st.sampled_from([D(0), D("100")]))},
        default_drawdown=default,
        drawdown={} if usdc is None else {"USDC": usdc},
    )
    return rules, draw(drawdown_streams(window_ms=window_ms, max_size=max_size))


@settings(max_examples=scaled(150))
@given(scenarios())
def test_the_ledger_follows_the_naive_model_of_sections_3_8_and_9(
    scenario: tuple[FundRules, list[Event]],
) -> None:
    rules, events = scenario
    outcomes = fold_all(Ledger(rules, NEVER_FORGET_MS), events)
    assert [observed(outcome) for outcome in outcomes] == model(events, rules)


@settings(max_examples=scaled(150))
@given(scenarios())
def test_states_never_change_without_crossing_start_or_stop(scenario: tuple[FundRules, list[Event]]) -> None:
    """Judged from the published events alone: each change's peak and balance (exact) against its
    own start and stop, and between changes the state a fund reports never moves."""
    rules, events = scenario
    pipeline = Pipeline(DECODER, Ledger(rules, NEVER_FORGET_MS), clock_ms=lambda: 0)
    current: dict[str, str] = {}
    for offset, event in enumerate(events):
        raw = (
            codec.encode_fill(event) if isinstance(event, LiquidationFill) else codec.encode_operation(event)
        )
        emitted = pipeline.process(raw, None, "liquidation-fills", 0, offset)
        if emitted.adl_state is not None:
            assert emitted.delta is not None
            change = json.loads(emitted.adl_state)
            fund, peak, balance = change["fund"], D(change["peak"]), D(change["balance"])
            start, stop = D(change["start"]), D(change["stop"])
            assert change["previous_state"] == current.get(fund, "normal")
            assert (change["sequence"], change["timestamp"]) == (
                json.loads(emitted.delta)["sequence"],
                json.loads(emitted.delta)["timestamp"],
            )
            if change["state"] == "drawdown":
                assert peak > 0 and peak - balance >= start * peak
                assert D(change["drawdown"]) >= q(start)
            else:
                assert peak <= 0 or peak - balance <= stop * peak
                assert D(change["drawdown"]) <= q(stop)
            current[fund] = change["state"]
        if emitted.fund is not None and emitted.fund in pipeline.ledger.funds:
            state = pipeline.ledger.funds[emitted.fund]
            if state.peak is not None:
                assert state.adl_state == current.get(emitted.fund, "normal")
    assert {name: state.adl_state for name, state in pipeline.ledger.funds.items()} == {
        name: current.get(name, "normal") for name in pipeline.ledger.funds
    }


def encoded(ledger: Ledger, outcome: Outcome) -> tuple[bytes | None, bytes | None]:
    delta, trigger = outcome.delta, outcome.trigger
    if delta is None:
        return None, None
    delta_bytes = (
        codec.encode_delta(delta) if isinstance(delta, FundDelta) else codec.encode_operation_delta(delta)
    )
    trigger_bytes = None if trigger is None else codec.encode_trigger(trigger, ledger.policy(trigger.fund))
    return delta_bytes, trigger_bytes


@settings(max_examples=scaled(100))
@given(scenarios())
def test_until_its_first_state_change_a_fund_publishes_what_it_would_without_the_policy(
    scenario: tuple[FundRules, list[Event]],
) -> None:
    rules, events = scenario
    on, off = (
        Ledger(rules, NEVER_FORGET_MS),
        Ledger(rules._replace(default_drawdown=None, drawdown={}), NEVER_FORGET_MS),
    )
    changed: set[str] = set()
    for event in events:
        fund = event.margin_currency if isinstance(event, LiquidationFill) else event.fund
        with_policy, without = fold_all(on, [event])[0], fold_all(off, [event])[0]
        if fund in changed:
            continue
        assert encoded(on, with_policy) == encoded(off, without)
        assert (with_policy.conflict, with_policy.refusal) == (without.conflict, without.refusal)
        assert without.state_change is None
        if with_policy.state_change is not None:
            changed.add(fund)
        else:
            assert with_policy.state._replace(peak=None, drawdown=None, clock=None) == without.state


# --- with the policy off, v1 exactly --------------------------------------------------------------------


def unset_policy_rules(**environment: str) -> FundRules:
    """The rules a worker builds when every ADL variable is present but empty (unset)."""
    return Settings.from_env({**environment, **dict.fromkeys(ADL_VARIABLES, "")}).rules


def test_an_unset_policy_is_off() -> None:
    rules = unset_policy_rules()
    assert rules == FundRules()
    assert (rules.default_drawdown, dict(rules.drawdown)) == (None, {})


@settings(max_examples=scaled(50))
@given(fill_sequences(extremes=True))
def test_with_the_policy_off_outputs_are_v1(events: list[FillEvent]) -> None:
    pipeline = Pipeline(DECODER, Ledger(unset_policy_rules()), clock_ms=lambda: 0)
    expected = iter(reference_fold(events, FundRules()))
    for offset, event in enumerate(events):
        emitted = pipeline.process(event.encode(), None, "liquidation-fills", 0, offset)
        assert emitted.adl_state is None
        if emitted.delta is None:
            continue
        delta, trigger = next(expected)
        assert as_values(json.loads(emitted.delta), delta) == delta
        assert (emitted.trigger is None) == (trigger is None)
        if trigger is not None and emitted.trigger is not None:
            assert as_values(json.loads(emitted.trigger), trigger) == trigger
    assert next(expected, None) is None
    assert pipeline.ledger.peaks == {} and pipeline.ledger.marks == {}
    for state in pipeline.ledger.funds.values():
        assert set(codec.state_document(state)) == V1_STATE_KEYS
        assert (state.peak, state.drawdown, state.clock, state.adl_state) == (None, None, None, "normal")


def replay_golden(scenario: Path, rules: FundRules, out: Path) -> None:
    pipeline = Pipeline(DECODER, Ledger(rules), clock_ms=lambda: FIXED_CLOCK_MS)
    outputs = OutputFiles(
        out / "state.json",
        out / "deltas.jsonl",
        out / "adl.jsonl",
        out / "dlq.jsonl",
        out / "adl_states.jsonl",
    )
    replay_lines(read_lines(str(scenario / "input.jsonl")), pipeline, outputs, "input.jsonl")


def test_the_v1_golden_streams_replay_byte_for_byte_with_the_policy_unset_or_elsewhere(
    tmp_path: Path,
) -> None:
    """The recorded v1 outputs (and the pools scenario's) are unchanged with every ADL variable empty,
    and with a policy for a fund none of their fills belongs to."""
    scenarios = [GOLDEN / "crash", GOLDEN / "pools"]
    for scenario in scenarios:
        environment = settings_of(scenario)
        elsewhere = environment | {"ADL_DRAWDOWN_STARTS": "XRP=0.3", "ADL_DRAWDOWN_STOPS": "XRP=0.25"}
        for name, rules in [
            ("unset", unset_policy_rules(**environment)),
            ("elsewhere", Settings.from_env(elsewhere).rules),
        ]:
            out = tmp_path / scenario.name / name
            out.mkdir(parents=True)
            replay_golden(scenario, rules, out)
            for output in ("deltas.jsonl", "adl.jsonl", "dlq.jsonl", "state.json"):
                expected = (scenario / "expected" / output).read_bytes()
                assert (out / output).read_bytes() == expected, (
                    f"{scenario.name}/{output} with the policy {name}"
                )
            assert (out / "adl_states.jsonl").read_bytes() == b""
