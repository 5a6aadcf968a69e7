"""The worker's ``FundBook`` over plain dicts standing in for its two changelog-backed tables.

A restarted worker is a new ``FundBook`` over the same dicts: whatever it folds after a restart must be
exactly what one uninterrupted ``Ledger`` run folds (SPEC section 6).
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import attrs
from hypothesis import given
from hypothesis import strategies as st

from processor import codec
from processor.domain.events import LiquidationFill
from processor.domain.fold import Outcome
from processor.domain.ledger import DEFAULT_DUPLICATE_WINDOW_MS, Ledger
from processor.domain.state import FundRules
from processor.stream.book import FundBook
from tests.strategies import BASE_TIMESTAMP, fill_sequences, make_fill

D = Decimal
T = BASE_TIMESTAMP
SOURCE = "liquidation-fills:0"
FORWARDED = "insurance-fund-fills-by-fund:0"
RULES = FundRules(
    precision={"BTC": 10},
    floor={"USDC": D("100")},
    initial_balance={"USDT": D("500"), "USDC": D("150"), "BTC": D("0.01")},
)

Published = tuple[bytes | None, bytes | None, str | None, bytes]


class ChangelogDict(dict[bytes, bytes]):
    """A plain dict that also keeps the changelog its writes would produce (``None``: a tombstone)."""

    def __init__(self) -> None:
        super().__init__()
        self.changelog: list[tuple[bytes, bytes | None]] = []

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.changelog.append((key, value))
        super().__setitem__(key, value)

    def __delitem__(self, key: bytes) -> None:
        self.changelog.append((key, None))
        super().__delitem__(key)


@attrs.define
class Tables:
    """The two tables, which outlive any number of workers (``FundBook``s) started over them."""

    rules: FundRules = RULES
    window_ms: int = DEFAULT_DUPLICATE_WINDOW_MS
    funds: ChangelogDict = attrs.field(factory=ChangelogDict)
    seen: ChangelogDict = attrs.field(factory=ChangelogDict)

    def start(self) -> FundBook:
        return FundBook(self.funds, self.seen, self.ledger())

    def ledger(self) -> Ledger:
        return Ledger(self.rules, self.window_ms)

    def record(self, fund: str) -> codec.FundRecord:
        return codec.decode_fund_record(self.funds[fund.encode()])

    def segments(self, fund: str) -> dict[bytes, list[str]]:
        """Segment key -> the fill ids in it (the anchor left out)."""
        prefix = fund.encode() + b"/"
        return {
            key: [fill.fill_id for fill in codec.decode_fill_segment(fund, value)]
            for key, value in sorted(self.seen.items())
            if key.startswith(prefix) and key != prefix + b"~"
        }

    def changes(self) -> int:
        return len(self.funds.changelog) + len(self.seen.changelog)


def published(outcome: Outcome, ledger: Ledger) -> Published:
    """What an outcome publishes (delta, trigger, conflict detail) and the state it leaves, as bytes."""
    policy = ledger.policy(outcome.state.fund)
    return (
        codec.encode_delta(outcome.delta) if outcome.delta is not None else None,
        codec.encode_trigger(outcome.trigger, policy) if outcome.trigger is not None else None,
        outcome.conflict,
        codec.dumps(codec.state_document(outcome.state)),
    )


def usdt(number: int, timestamp: int = T, **changes: Any) -> LiquidationFill:
    return make_fill(fill_id=f"usdt-{number}", timestamp=timestamp, **changes)


def btc(number: int, timestamp: int = T, **changes: Any) -> LiquidationFill:
    values: dict[str, Any] = {
        "margin_currency": "BTC",
        "symbol": "BTCUSD",
        "contract_type": "inverse",
        "contract_size": "100",
        "bankruptcy_price": "30000",
        "fill_price": "30300",
        "quantity": "10",
        "fee": "0.0000001",
    }
    return make_fill(fill_id=f"btc-{number}", timestamp=timestamp, **(values | changes))


#: Surpluses, a loss the fund cannot cover, an unfilled remainder, a duplicate and a conflict.
MIXED_STREAM = [
    usdt(1, T),
    btc(1, T + 1),
    usdt(2, T + 2, fill_price="27000", quantity="1"),
    usdt(3, T + 3, fill_price="28000", quantity="0", unfilled_quantity="2", fee="0"),
    usdt(1, T),
    usdt(2, T + 2, fill_price="27000", quantity="1", fee="9"),
    btc(1, T + 1),
    btc(2, T + 4, fill_price="26000"),
    usdt(4, T + 5, fill_price="27990", quantity="3"),
]


def fold_all(book: FundBook, fills: list[LiquidationFill], first_offset: int = 0) -> list[Outcome | None]:
    return [book.fold(fill, SOURCE, first_offset + index) for index, fill in enumerate(fills)]


# --- folding ---------------------------------------------------------------------------------------------


def test_folding_gives_the_outcomes_of_a_plain_ledger() -> None:
    book, ledger = Tables().start(), Ledger(RULES)
    outcomes = fold_all(book, MIXED_STREAM)
    expected = [ledger.fold(fill) for fill in MIXED_STREAM]
    assert outcomes == expected
    assert [published(o, book.ledger) for o in outcomes if o] == [published(o, ledger) for o in expected]
    assert book.ledger.funds == ledger.funds
    kinds = Counter(
        "conflict" if o.conflict else "trigger" if o.trigger else "delta" if o.delta else "duplicate"
        for o in expected
    )
    assert kinds == {"delta": 3, "trigger": 3, "duplicate": 2, "conflict": 1}


def test_flushing_between_fills_changes_no_outcome() -> None:
    book, ledger = Tables().start(), Ledger(RULES)
    for offset, fill in enumerate(MIXED_STREAM):
        outcome = book.fold(fill, SOURCE, offset)
        book.flush()
        assert outcome == ledger.fold(fill)


# --- flush -----------------------------------------------------------------------------------------------


def test_flush_writes_one_record_per_touched_fund_and_one_segment_per_batch() -> None:
    tables = Tables()
    book = tables.start()
    fold_all(book, [usdt(1), usdt(2), btc(1)])
    assert book.flush() == 4
    assert set(tables.funds) == {b"USDT", b"BTC"}
    assert tables.segments("USDT") == {b"USDT/000000000001": ["usdt-1", "usdt-2"]}
    assert tables.segments("BTC") == {b"BTC/000000000001": ["btc-1"]}
    assert codec.decode_fill_segment("USDT", tables.seen[b"USDT/000000000001"]) == [usdt(1), usdt(2)]
    assert tables.record("USDT") == codec.FundRecord(book.ledger.funds["USDT"], {SOURCE: 1})
    assert tables.record("BTC") == codec.FundRecord(book.ledger.funds["BTC"], {SOURCE: 2})

    before = tables.changes()
    book.fold(usdt(3), SOURCE, 3)
    book.fold(usdt(4), FORWARDED, 0)
    assert book.flush() == 2
    assert tables.changes() == before + 2
    assert tables.funds.changelog[-1][0] == b"USDT"  # BTC was not touched, so not rewritten
    assert tables.seen.changelog[-1] == (b"USDT/000000000003", tables.seen[b"USDT/000000000003"])
    assert tables.segments("USDT")[b"USDT/000000000003"] == ["usdt-3", "usdt-4"]
    assert tables.record("USDT").applied_offsets == {SOURCE: 3, FORWARDED: 0}


def test_flush_can_select_funds_and_leaves_the_others_for_later() -> None:
    tables = Tables()
    book = tables.start()
    fold_all(book, [usdt(1), btc(1), usdt(2)])
    assert book.flush(lambda fund: fund == "USDT") == 2
    assert set(tables.funds) == {b"USDT"}
    assert list(tables.seen) == [b"USDT/000000000001"]
    assert book.flush(lambda fund: fund == "USDT") == 0
    assert book.flush() == 2
    assert tables.record("BTC") == codec.FundRecord(book.ledger.funds["BTC"], {SOURCE: 1})
    assert tables.segments("BTC") == {b"BTC/000000000001": ["btc-1"]}


def test_a_batch_without_accepted_fills_writes_only_the_fund_record() -> None:
    tables = Tables()
    book = tables.start()
    book.fold(usdt(1), SOURCE, 0)
    book.flush()
    before = dict(tables.seen)
    book.fold(usdt(1), SOURCE, 1)  # duplicate
    book.fold(usdt(1, fee="3"), SOURCE, 2)  # conflict
    assert book.flush() == 1
    assert dict(tables.seen) == before
    assert tables.record("USDT").applied_offsets == {SOURCE: 2}
    assert tables.record("USDT").state.duplicates == 1


def test_flush_with_nothing_new_writes_nothing() -> None:
    tables = Tables()
    book = tables.start()
    assert book.flush() == 0
    fold_all(book, [usdt(1), btc(1)])
    book.flush()
    before = tables.changes()
    assert book.flush() == 0
    assert book.fold(usdt(1), SOURCE, 0) is None  # an applied offset
    assert book.flush() == 0
    assert tables.changes() == before


# --- restart ---------------------------------------------------------------------------------------------


def test_a_restarted_book_restores_state_and_continues_sequences() -> None:
    tables = Tables()
    book = tables.start()
    for offset in range(12):  # twelve batches: segment keys must sort in sequence order past 9
        book.fold(usdt(offset, T + offset), SOURCE, offset)
        book.flush()
    book.fold(btc(1), SOURCE, 12)
    book.flush()
    assert list(tables.segments("USDT")) == [b"USDT/%012d" % sequence for sequence in range(1, 13)]

    restarted = tables.start()
    outcome = restarted.fold(usdt(12, T + 12), SOURCE, 13)
    assert outcome is not None and outcome.delta is not None
    assert outcome.delta.sequence == 13
    assert outcome.delta.balance_before == book.ledger.funds["USDT"].balance
    assert restarted.fold(btc(2), SOURCE, 14) == book.ledger.fold(btc(2))


def test_a_restarted_book_still_knows_its_duplicates_and_conflicts() -> None:
    tables, ledger = Tables(), Ledger(RULES)
    book = tables.start()
    originals = [usdt(1, T), btc(1, T), usdt(2, T + 1)]
    fold_all(book, originals[:2])
    book.flush()
    book.fold(originals[2], SOURCE, 2)
    book.flush()
    for fill in originals:
        ledger.fold(fill)

    restarted = tables.start()
    resends = [usdt(2, T + 1), usdt(1, T, fee="0.6"), btc(1, T), btc(1, T, fill_price="30301"), usdt(1, T)]
    for offset, fill in enumerate(resends, start=3):
        outcome = restarted.fold(fill, SOURCE, offset)
        assert outcome is not None
        assert outcome == ledger.fold(fill)
        assert outcome.delta is None
    assert restarted.ledger.funds["USDT"].duplicates == 2
    assert restarted.ledger.funds["BTC"].duplicates == 1
    restarted.flush()
    assert tables.start().fold(usdt(2, T + 1, fee="0"), SOURCE, 99) == ledger.fold(usdt(2, T + 1, fee="0"))


def test_a_restarted_book_skips_offsets_it_already_applied() -> None:
    tables = Tables()
    book = tables.start()
    fold_all(book, [usdt(1), usdt(2), btc(1)])
    book.flush()
    funds_before, seen_before = dict(tables.funds), dict(tables.seen)

    restarted = tables.start()
    assert restarted.fold(usdt(2), SOURCE, 1) is None
    assert restarted.fold(usdt(99), SOURCE, 0) is None  # whatever sits at an applied offset
    assert restarted.fold(btc(1), SOURCE, 2) is None
    assert restarted.fold(btc(7), SOURCE, 1) is None  # below BTC's last applied offset
    assert restarted.ledger.funds == book.ledger.funds
    assert restarted.flush() == 0
    assert (dict(tables.funds), dict(tables.seen)) == (funds_before, seen_before)

    later = restarted.fold(usdt(3), SOURCE, 3)
    assert later is not None and later.delta is not None and later.delta.sequence == 3
    forwarded = restarted.fold(usdt(4), FORWARDED, 0)  # another source: its own offsets
    assert forwarded is not None and forwarded.delta is not None and forwarded.delta.sequence == 4
    restarted.flush()
    assert tables.record("USDT").applied_offsets == {SOURCE: 3, FORWARDED: 0}
    assert tables.record("BTC").applied_offsets == {SOURCE: 2}


def test_forget_drops_the_cache_and_reloads_from_the_tables() -> None:
    tables = Tables()
    book = tables.start()
    book.fold(usdt(1), SOURCE, 0)
    book.flush()
    unflushed = book.fold(usdt(2), SOURCE, 1)

    book.forget()
    assert book.ledger.funds == {}
    assert book.ledger.windows == {}
    assert book.fold(usdt(2), SOURCE, 1) == unflushed  # the unflushed fold is redone, identically
    assert book.fold(usdt(1), SOURCE, 0) is None
    duplicate = book.fold(usdt(1), SOURCE, 2)
    assert duplicate is not None and duplicate.delta is None and duplicate.conflict is None


def test_forget_picks_up_what_another_worker_wrote() -> None:
    tables = Tables()
    first, second = tables.start(), tables.start()
    first.fold(usdt(1), SOURCE, 0)
    first.flush()
    second.fold(usdt(2), SOURCE, 1)  # the partition moved to the second worker
    second.flush()

    first.forget()  # ... and back
    outcome = first.fold(usdt(3), SOURCE, 2)
    assert outcome is not None and outcome.delta is not None
    assert outcome.delta.sequence == 3
    assert outcome.delta.balance_before == second.ledger.funds["USDT"].balance


# --- expiry of the duplicate window ------------------------------------------------------------------------


def test_segments_older_than_the_window_are_deleted_at_the_next_flush() -> None:
    tables = Tables(window_ms=1000)
    book = tables.start()
    for offset, timestamp in enumerate([T, T + 500, T + 1600]):
        book.fold(usdt(offset, timestamp), SOURCE, offset)
        book.flush()
    assert tables.segments("USDT") == {b"USDT/000000000003": ["usdt-2"]}
    assert tables.seen.changelog[-3:] == [
        (b"USDT/000000000001", None),
        (b"USDT/000000000002", None),
        (b"USDT/000000000003", tables.seen[b"USDT/000000000003"]),
    ]
    assert b"USDT/~" not in tables.seen  # a segment was written after the deletions: no anchor needed

    book.fold(usdt(3, T + 2600), SOURCE, 3)  # horizon T + 1600: segment 3 (newest T + 1600) stays
    book.flush()
    assert list(tables.segments("USDT")) == [b"USDT/000000000003", b"USDT/000000000004"]

    ledger = Ledger(RULES, 1000)
    for fill in [usdt(0, T), usdt(1, T + 500), usdt(2, T + 1600), usdt(3, T + 2600)]:
        ledger.fold(fill)
    restarted = tables.start()
    for offset, fill in enumerate([usdt(2, T + 1600), usdt(3, T + 2600), usdt(1, T + 500)], start=4):
        assert restarted.fold(fill, SOURCE, offset) == ledger.fold(fill)


def test_an_anchor_follows_deletions_when_nothing_else_does() -> None:
    tables = Tables(window_ms=1000)
    book = tables.start()
    book.fold(usdt(1, T + 5000), SOURCE, 0)
    book.flush()
    book.fold(usdt(2, T + 100), SOURCE, 1)  # already older than the window: expires at the next flush
    book.flush()
    assert list(tables.segments("USDT")) == [b"USDT/000000000001", b"USDT/000000000002"]

    book.fold(usdt(1, T + 5000), SOURCE, 2)  # a duplicate: the batch writes no segment
    book.flush()
    assert tables.seen.changelog[-2:] == [(b"USDT/000000000002", None), (b"USDT/~", b"[]")]
    assert list(tables.segments("USDT")) == [b"USDT/000000000001"]

    restarted = tables.start()  # the anchor is not a segment
    duplicate = restarted.fold(usdt(1, T + 5000), SOURCE, 3)
    assert duplicate is not None and duplicate.delta is None and duplicate.conflict is None
    assert [fill.fill_id for fill in restarted.ledger.windows["USDT"]] == ["usdt-1"]


def test_an_anchor_is_ignored_on_load() -> None:
    tables = Tables()
    book = tables.start()
    book.fold(usdt(1), SOURCE, 0)
    book.flush()
    tables.seen[b"USDT/~"] = b"[]"
    restarted = tables.start()
    outcome = restarted.fold(usdt(2), SOURCE, 1)
    assert outcome is not None and outcome.delta is not None and outcome.delta.sequence == 2
    assert [fill.fill_id for fill in restarted.ledger.windows["USDT"]] == ["usdt-1", "usdt-2"]


def test_flush_counts_every_record_it_writes() -> None:
    tables = Tables(window_ms=1000)
    book = tables.start()
    for offset, fill in enumerate([usdt(1, T + 5000), usdt(2, T + 100), usdt(1, T + 5000)]):
        book.fold(fill, SOURCE, offset)
        before = tables.changes()
        assert book.flush() == tables.changes() - before


def test_a_restart_never_changes_what_an_old_resend_does() -> None:
    stream = [usdt(1, T + 5000), usdt(2, T + 100), usdt(3, T + 6000)]
    tables = Tables(window_ms=1000)
    book = tables.start()
    for offset, fill in enumerate(stream):
        book.fold(fill, SOURCE, offset)
        book.flush()
    ledger = Ledger(RULES, 1000)
    for fill in stream:
        ledger.fold(fill)

    resend = usdt(2, T + 100)
    assert tables.start().fold(resend, SOURCE, 3) == ledger.fold(resend)


# --- crash and resume, against one uninterrupted run --------------------------------------------------------


def check_interrupted_run(data: st.DataObject, tables: Tables, fills: list[LiquidationFill]) -> None:
    """Fold ``fills`` in random batches, with clean restarts, rebalances and crashes (a batch lost before
    its flush, input re-read from any committed offset), and compare with one uninterrupted ``Ledger`` run.
    """
    sources = data.draw(
        st.lists(st.sampled_from([SOURCE, FORWARDED]), min_size=len(fills), max_size=len(fills))
    )
    counters: Counter[str] = Counter()
    coordinates = []
    for source in sources:
        coordinates.append((source, counters[source]))
        counters[source] += 1

    book = tables.start()
    outputs: list[Published] = []
    position = durable = interruptions = 0
    while position < len(fills):
        end = min(len(fills), position + data.draw(st.integers(1, 6), label="batch size"))
        batch = []
        for index in range(position, end):
            outcome = book.fold(fills[index], *coordinates[index])
            if outcome is not None:
                batch.append(published(outcome, book.ledger))
        actions = ["flush", "restart", "forget", "crash"] if interruptions < 4 else ["flush"]
        action = data.draw(st.sampled_from(actions), label="then")
        if action == "crash":
            interruptions += 1
            book = tables.start()
            position = data.draw(st.integers(0, durable), label="re-read from")
            continue
        book.flush()
        assert tables.seen.changelog == [] or tables.seen.changelog[-1][1] is not None
        outputs += batch
        position = durable = end
        if action in ("restart", "forget"):
            interruptions += 1
            if action == "restart":
                book = tables.start()
            else:
                book.forget()
            position = data.draw(st.integers(0, durable), label="re-read from")

    ledger = tables.ledger()
    expected = [published(ledger.fold(fill), ledger) for fill in fills]
    assert outputs == expected
    assert codec.encode_states(tables.record(fund).state for fund in ledger.funds) == codec.encode_states(
        ledger.funds.values()
    )
    for fund in ledger.funds:
        last_offsets = {
            source: offset
            for fill, (source, offset) in zip(fills, coordinates, strict=True)
            if fill.margin_currency == fund
        }
        assert tables.record(fund).applied_offsets == last_offsets

    # A fresh worker knows every duplicate the uninterrupted run knows.
    fresh = tables.start()
    for offset, fill in enumerate(fills):
        outcome = fresh.fold(fill, "resent:0", offset)
        assert outcome is not None
        assert published(outcome, fresh.ledger) == published(ledger.fold(fill), ledger)


def with_conflicts(data: st.DataObject, fills: list[LiquidationFill]) -> list[LiquidationFill]:
    """Slip re-sends with different content (a conflicting duplicate) in after some originals."""
    fills = list(fills)
    for _ in range(data.draw(st.integers(0, 3), label="conflicts")):
        original = data.draw(st.integers(0, len(fills) - 1), label="conflicting with")
        position = data.draw(st.integers(original + 1, len(fills)), label="at")
        fills.insert(position, fills[original]._replace(fee=fills[original].fee + D("0.01")))
    return fills


@given(events=fill_sequences(max_size=30), data=st.data())
def test_interrupted_runs_publish_exactly_what_one_uninterrupted_run_publishes(
    events: list[Any], data: st.DataObject
) -> None:
    fills = with_conflicts(data, [event.expected() for event in events])
    check_interrupted_run(data, Tables(), fills)


@st.composite
def in_order_streams(draw: st.DrawFn, window_ms: int) -> list[LiquidationFill]:
    """Fills with non-decreasing event times whose re-sends all arrive within the duplicate window."""
    events = draw(fill_sequences(max_size=30))
    times: dict[str, int] = {}
    clock = T
    fills = []
    newest = -1
    for event in events:
        fill = event.expected()
        if fill.fill_id not in times:
            clock += draw(st.integers(0, 2 * window_ms))
            times[fill.fill_id] = clock
        fill = fill._replace(timestamp=times[fill.fill_id])
        if fill.timestamp < newest - window_ms:
            continue  # a re-send from beyond the window (see the xfail above)
        newest = max(newest, fill.timestamp)
        fills.append(fill)
    return fills


@given(window_ms=st.sampled_from([1, 60_000, 600_000, 3_600_000]), data=st.data())
def test_interrupted_runs_with_a_short_window_expire_segments_without_changing_outputs(
    window_ms: int, data: st.DataObject
) -> None:
    fills = data.draw(in_order_streams(window_ms), label="fills")
    check_interrupted_run(data, Tables(window_ms=window_ms), fills)
