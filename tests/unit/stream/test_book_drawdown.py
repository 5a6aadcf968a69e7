"""The ADL policy's state in the fund book's changelog records (SPEC section 9): the marks the segments
carry, the peak windows a restore rebuilds from them, and the segments kept while a peak needs them.

As in ``test_book``, the tables are dicts (the compacted view) that outlive any number of books; here
they also keep every committed write in order (the changelog before compaction, tombstones included),
and a book can restore from either.
"""

from __future__ import annotations

from decimal import Decimal
from functools import partial
from typing import Any
from unittest import mock

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from processor import codec
from processor.domain.events import FundDelta, FundOperation, LiquidationFill
from processor.domain.fold import Outcome
from processor.domain.ledger import DEFAULT_DUPLICATE_WINDOW_MS, Ledger
from processor.domain.pools import FundPools, Pool
from processor.domain.state import DrawdownPolicy, FundRules
from processor.stream import book as book_module
from processor.stream.book import FundBook
from tests.conftest import scaled
from tests.strategies import BASE_TIMESTAMP, make_fill
from tests.unit.domain.test_drawdown_properties import Event, scenarios
from tests.unit.stream.changelog import Tables as ChangelogTables

D = Decimal
T = BASE_TIMESTAMP
HOUR = 3_600_000
POLICY = DrawdownPolicy(D("0.3"), D("0.25"), HOUR)
RULES = FundRules(initial_balance={"USDT": D("1000"), "USDC": D("500")}, default_drawdown=POLICY)
HOMES = {"USDT": 0, "USDC": 1}


def home(fund: str) -> int:
    """A currency's partition; a pool lives on its currency's."""
    return HOMES[fund.split("-", maxsplit=1)[0]]


Tables = partial(ChangelogTables, home=home, rules=RULES)


def fold(ledger: Ledger, event: Event) -> Outcome:
    return ledger.fold(event) if isinstance(event, LiquidationFill) else ledger.operate(event, event.fund)


def published(ledger: Ledger, outcome: Outcome) -> tuple[Any, ...]:
    """Everything an outcome publishes, as bytes, and the state it leaves, as its document."""
    delta, trigger, change = outcome.delta, outcome.trigger, outcome.state_change
    if delta is None:
        delta_bytes = None
    elif isinstance(delta, FundDelta):
        delta_bytes = codec.encode_delta(delta)
    else:
        delta_bytes = codec.encode_operation_delta(delta)
    return (
        delta_bytes,
        None if trigger is None else codec.encode_trigger(trigger, ledger.policy(trigger.fund)),
        None if change is None else codec.encode_adl_state(change),
        outcome.conflict,
        outcome.refusal,
        codec.dumps(codec.state_document(outcome.state)),
    )


def loss(number: int, amount: str, timestamp: int, fund: str = "USDT", symbol: str = "") -> LiquidationFill:
    """A long of ``fund`` closed ``amount`` below its bankruptcy price: net = -amount."""
    return make_fill(
        fill_id=f"{fund}-{number}",
        margin_currency=fund,
        symbol=symbol or "BTC" + fund,
        fill_price=D(28000) - D(amount),
        fee="0",
        timestamp=timestamp,
    )


def top_up(number: int, amount: str, timestamp: int, fund: str = "USDT") -> FundOperation:
    return FundOperation(f"op-{number}", "top_up", fund, D(amount), "treasury", "", None, timestamp)


# --- the records -------------------------------------------------------------------------------------


def test_segments_carry_each_event_s_mark_and_the_fund_record_the_clock() -> None:
    tables = Tables()
    book = tables.start()
    fold(book.ledger, loss(1, "100", T + 10))
    fold(book.ledger, top_up(2, "50", T + 5))  # late: recorded at the clock T + 10
    fold(book.ledger, loss(1, "100", T + 11))  # a duplicate: no row, no mark
    tables.flush(book, 3)
    fill_row, operation_row = tables.rows("USDT")
    assert fill_row[12] == {"mark": [T + 10, "1000.00000000", "900.00000000"]}
    assert operation_row["mark"] == [T + 10, "900.00000000", "950.00000000"]
    assert operation_row["timestamp"] == T + 5
    record = orjson.loads(tables.funds[0][b"USDT"])
    assert record["adl_clock"] == T + 10
    assert (record["state"]["adl_state"], record["state"]["peak"]) == ("normal", "1000.00000000")
    assert codec.decode_fund_record(tables.funds[0][b"USDT"]).state == book.ledger.funds["USDT"]
    assert book.ledger.marks == {}  # handed to the changelog


def test_with_the_policy_off_the_records_are_as_in_v1() -> None:
    tables = Tables(rules=FundRules(initial_balance={"USDT": D("1000")}))
    book = tables.start()
    fold(book.ledger, loss(1, "100", T))
    fold(book.ledger, top_up(2, "50", T))
    tables.flush(book)
    fill_row, operation_row = tables.rows("USDT")
    assert len(fill_row) == 12 and "mark" not in operation_row
    record = orjson.loads(tables.funds[0][b"USDT"])
    assert "adl_clock" not in record and "peak" not in record["state"]
    assert book.ledger.marks == {} and book.ledger.peaks == {}


def test_a_restored_book_continues_the_window_and_the_state() -> None:
    tables = Tables()
    book, ledger = tables.start(), Ledger(RULES)
    events: list[Event] = [loss(1, "100", T), top_up(2, "400", T + 60_000), loss(3, "300", T + 120_000)]
    for event in events:
        assert published(book.ledger, fold(book.ledger, event)) == published(ledger, fold(ledger, event))
    tables.flush(book)
    restored = [tables.start(compacted=compacted) for compacted in (True, False)]
    for book in restored:
        assert book.ledger.funds == ledger.funds
        assert book.ledger.funds["USDT"].clock == T + 120_000
    # the peak is the top-up's 1300 (at T + 60 s); 1000 - 90 = 910 is 390 / 1300 = START
    probe = loss(4, "90", T + 180_000)
    expected = published(ledger, fold(ledger, probe))
    for book in restored:
        outcome = fold(book.ledger, probe)
        assert outcome.state_change is not None and outcome.state_change.peak == D("1300")
        assert published(book.ledger, outcome) == expected


def test_segments_stay_while_the_peak_window_needs_them() -> None:
    """With a duplicate window of 1 ms every segment is forgotten by duplicates at once; what keeps a
    segment is the peak window: a segment goes only once the next one starts at or before ``c - W``
    (its balances then all lie before the balance the window starts from)."""
    tables = Tables(window_ms=1)
    book = tables.start()
    ledger = Ledger(RULES, 1)
    events: list[Event] = [
        top_up(1, "500", T),  # 1500: the peak
        loss(2, "10", T + 60_000),
        loss(3, "10", T + 120_000),
    ]
    for event in events:  # one batch each: three segments
        fold(book.ledger, event)
        fold(ledger, event)
        tables.flush(book)
    assert tables.segment_keys("USDT") == [b"USDT/%012d" % sequence for sequence in (1, 2, 3)]
    restored = tables.start()  # the peak 1500 survives: 1480 - 470 = 1010 is 490 / 1500 > START
    probe = loss(4, "470", T + 180_000)
    assert published(restored.ledger, fold(restored.ledger, probe)) == published(ledger, fold(ledger, probe))
    assert restored.ledger.funds["USDT"].adl_state == "drawdown"
    tables.flush(restored)

    later = loss(5, "1", T + 60_000 + HOUR + 1)  # c - W = T + 60 s + 1: segment 2 starts before it
    fold(restored.ledger, later)
    fold(ledger, later)
    tables.flush(restored)  # segment 1 goes (segment 2 starts before c - W); 2 holds the balance at it
    assert tables.segment_keys("USDT") == [b"USDT/%012d" % sequence for sequence in (2, 3, 4, 5)]
    again = tables.start()
    probe = loss(6, "0.00000001", T + 60_000 + HOUR + 2)
    assert published(again.ledger, fold(again.ledger, probe)) == published(ledger, fold(ledger, probe))
    assert again.ledger.funds == ledger.funds


def test_a_pool_s_rows_carry_its_currency_and_its_mark_and_restore_both() -> None:
    pools = FundPools([Pool("USDT-MEME", "USDT", ("MEME*",), D("1000"))])
    tables = Tables(rules=FundRules(pools=pools, drawdown={"USDT-MEME": POLICY}))
    book = tables.start()
    ledger = Ledger(tables.rules)
    first = loss(1, "200", T, symbol="MEMEUSDT")
    events: list[Event] = [first, top_up(2, "100", T + 1, fund="USDT-MEME")]
    for event in events:
        assert published(book.ledger, fold(book.ledger, event)) == published(ledger, fold(ledger, event))
    tables.flush(book)
    fill_row, operation_row = tables.rows("USDT-MEME")
    assert fill_row[12] == {"currency": "USDT", "mark": [T, "1000.00000000", "800.00000000"]}
    assert operation_row["mark"] == [T + 1, "800.00000000", "900.00000000"]
    restored = tables.start()
    assert restored.ledger.funds == ledger.funds
    for event in [first, loss(3, "270", T + 2, symbol="MEMEUSDT")]:  # a duplicate; 370 / 1000
        expected = published(ledger, fold(ledger, event))
        assert published(restored.ledger, fold(restored.ledger, event)) == expected
    assert restored.ledger.funds["USDT-MEME"].adl_state == "drawdown"


def test_releasing_a_partition_forgets_its_peak_windows_and_marks() -> None:
    tables = Tables()
    book = tables.start()
    fold(book.ledger, loss(1, "100", T))
    fold(book.ledger, loss(1, "100", T, fund="USDC"))
    tables.flush(book)
    fold(book.ledger, loss(2, "100", T))  # applied, not flushed
    book.release(0)
    assert set(book.ledger.peaks) == {"USDC"} and "USDT" not in book.ledger.marks
    assert set(book.ledger.funds) == {"USDC"}


# --- a prefix, a restart, then the rest, against one run --------------------------------------------------

#: Peak windows that span several batches, so that segments are expired while the peak still needs them.
BOOK_SCENARIOS = scenarios(windows=(10, 60_000, HOUR))
#: A duplicate window of 1 ms forgets at once: what keeps a segment then is the peak window alone.
DUPLICATE_WINDOWS = st.sampled_from([1, 1, 60_000, DEFAULT_DUPLICATE_WINDOW_MS])
#: Far below any balance: recorded, it shows the highest balance the window still holds.
LOW = D(-(10**12))


def uninterrupted(tables: Tables, events: list[Event]) -> tuple[list[Any], Ledger]:
    ledger = Ledger(tables.rules, tables.window_ms)
    return [published(ledger, fold(ledger, event)) for event in events], ledger


def assert_same_windows(restored: Ledger, reference: Ledger) -> None:
    """The restored book holds the same states, and its peak windows give the same peaks as the
    reference's for whatever comes next: probed, on copies, with low balances up to a window ahead."""
    assert restored.funds == reference.funds
    assert set(restored.peaks) == set(reference.peaks)
    for fund, window in reference.peaks.items():
        clock = reference.funds[fund].clock
        assert clock is not None
        mine, theirs = restored.peaks[fund].copy(), window.copy()
        width = window.window_ms
        for ahead in sorted({0, 1, width // 2, width - 1, width, width + 1, 2 * width + 1}):
            assert mine.record(clock + ahead, LOW) == theirs.record(clock + ahead, LOW), (fund, ahead)


def commit_in_batches(tables: Tables, book: FundBook, events: list[Event], data: st.DataObject) -> list[Any]:
    """Fold ``events`` into ``book`` and flush after batches of random sizes; what they published."""
    outputs: list[Any] = []
    position = 0
    while position < len(events):
        end = min(len(events), position + data.draw(st.integers(1, 6), label="batch size"))
        outputs += [published(book.ledger, fold(book.ledger, event)) for event in events[position:end]]
        tables.flush(book, end - 1)
        position = end
    return outputs


@settings(max_examples=scaled(100))
@given(scenario=BOOK_SCENARIOS, window_ms=DUPLICATE_WINDOWS, data=st.data())
def test_a_prefix_flushed_and_restored_then_the_rest_equals_one_run(
    scenario: tuple[FundRules, list[Event]], window_ms: int, data: st.DataObject
) -> None:
    rules, events = scenario
    tables = Tables(rules=rules, window_ms=window_ms)
    cut = data.draw(st.integers(0, len(events)), label="prefix")
    outputs = commit_in_batches(tables, tables.start(), events[:cut], data)
    restored = tables.start(compacted=data.draw(st.booleans(), label="compacted"))
    assert_same_windows(restored.ledger, uninterrupted(tables, events[:cut])[1])
    outputs += commit_in_batches(tables, restored, events[cut:], data)
    expected, ledger = uninterrupted(tables, events)
    assert outputs == expected
    assert restored.ledger.funds == ledger.funds


@settings(max_examples=scaled(100))
@given(
    scenario=BOOK_SCENARIOS,
    window_ms=DUPLICATE_WINDOWS,
    segment_fills=st.sampled_from([book_module.OPERATION_WEIGHT, 10, book_module.SEGMENT_FILLS]),
    data=st.data(),
)
def test_interrupted_runs_publish_exactly_what_one_uninterrupted_run_publishes(
    scenario: tuple[FundRules, list[Event]], window_ms: int, segment_fills: int, data: st.DataObject
) -> None:
    """Random batches; after each, commit it, or crash before the commit (the batch is lost and read
    again by a new book), or restart cleanly, restoring from the compacted tables or the whole log.
    Segments of 8 or 10 fills' weight (an operation weighs 8: alone in its segment, or nearly) make
    many segments for the two windows to expire."""
    with mock.patch.object(book_module, "SEGMENT_FILLS", segment_fills):
        check_interrupted_run(scenario, window_ms, data)


def check_interrupted_run(
    scenario: tuple[FundRules, list[Event]], window_ms: int, data: st.DataObject
) -> None:
    rules, events = scenario
    tables = Tables(rules=rules, window_ms=window_ms)
    book = tables.start()
    reference = Ledger(rules, window_ms)  # folds each batch once it is committed
    outputs: list[Any] = []
    position = crashes = 0
    while position < len(events):
        end = min(len(events), position + data.draw(st.integers(1, 6), label="batch size"))
        batch = [published(book.ledger, fold(book.ledger, event)) for event in events[position:end]]
        actions = ["commit", "restart", "restart", "crash"] if crashes < 4 else ["commit", "restart"]
        action = data.draw(st.sampled_from(actions))
        if action == "crash":
            crashes += 1
            book = tables.start(compacted=data.draw(st.booleans(), label="compacted"))
            assert_same_windows(book.ledger, reference)
            continue
        tables.flush(book, end - 1)
        for event in events[position:end]:
            fold(reference, event)
        outputs += batch
        position = end
        if action == "restart":
            book = tables.start(compacted=data.draw(st.booleans(), label="compacted"))
            assert_same_windows(book.ledger, reference)
    expected, ledger = uninterrupted(tables, events)
    assert outputs == expected
    for compacted in (True, False):
        assert_same_windows(tables.start(compacted=compacted).ledger, ledger)
