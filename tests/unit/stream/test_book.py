"""The fund book: the ledger of the owned partitions, flushed to and restored from table records.

The tables here are plain dicts that outlive any number of books (workers); a batch's writes reach
them only when its "transaction" commits, as in the worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from functools import partial
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from processor import codec
from processor.domain.events import LiquidationFill, OperationDelta
from processor.domain.fold import Applied, Outcome
from processor.domain.ledger import Ledger
from processor.domain.pools import FundPools, Pool
from processor.domain.state import FundRules
from processor.stream.book import (
    OPERATION_WEIGHT,
    SEGMENT_BYTES,
    SEGMENT_FILLS,
    TAIL_KEY,
)
from tests.conftest import scaled
from tests.strategies import (
    BASE_TIMESTAMP,
    CURRENCIES,
    fill_sequences,
    make_fill,
    make_operation,
    mixed_sequences,
)
from tests.unit.stream.changelog import SOURCE
from tests.unit.stream.changelog import Tables as ChangelogTables

D = Decimal
T = BASE_TIMESTAMP
RULES = FundRules(
    precision={"BTC": 10},
    floor={"USDC": D("100")},
    initial_balance={"USDT": D("500"), "USDC": D("150"), "BTC": D("0.01")},
)
HOMES = {"USDT": 0, "BTC": 1, "USDC": 0, "ETH": 1}
#: The same rules with pools: each lives on its currency's partition (SPEC section 7).
POOL_RULES = RULES._replace(
    pools=FundPools(
        [
            Pool("USDT-MEME", "USDT", ("ETH*",), D("500"), D("50")),
            Pool("BTC_PERP", "BTC", ("BTCUSD_*",), from_timestamp=T),
        ]
    )
)


def home(fund: str) -> int:
    return HOMES[POOL_RULES.pools.currency_of(fund) or fund]


Tables = partial(ChangelogTables, home=home, rules=RULES)


def published(
    outcome: Outcome, ledger: Ledger
) -> tuple[bytes | None, bytes | None, str | None, str | None, bytes]:
    """What an outcome publishes (delta, trigger, conflict or refusal detail) and the state it leaves,
    as bytes."""
    policy = ledger.policy(outcome.state.fund)
    delta = outcome.delta
    return (
        codec.encode_operation_delta(delta)
        if isinstance(delta, OperationDelta)
        else (codec.encode_delta(delta) if delta is not None else None),
        codec.encode_trigger(outcome.trigger, policy) if outcome.trigger is not None else None,
        outcome.conflict,
        outcome.refusal,
        codec.dumps(codec.state_document(outcome.state)),
    )


def apply_event(ledger: Ledger, event: Applied) -> Outcome:
    """Fold a fill, or apply an operation to its fund (whose currency the rules know)."""
    if isinstance(event, LiquidationFill):
        return ledger.fold(event)
    currency = ledger.currency_of(event.fund)
    assert currency is not None
    return ledger.operate(event, currency)


def with_conflicts(data: st.DataObject, fills: list[Applied]) -> list[Applied]:
    """Slip re-sends with different content (a conflicting duplicate) in after some originals."""
    fills = list(fills)
    for _ in range(data.draw(st.integers(0, 3), label="conflicts")):
        if not fills:
            break
        original = data.draw(st.integers(0, len(fills) - 1), label="conflicting with")
        position = data.draw(st.integers(original + 1, len(fills)), label="at")
        event = fills[original]
        changed: Applied = (
            event._replace(fee=event.fee + D("0.01"))
            if isinstance(event, LiquidationFill)
            else event._replace(amount=event.amount + D("0.01"))
        )
        fills.insert(position, changed)
    return fills


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


def test_flush_writes_one_record_per_touched_fund_and_one_segment_per_batch_on_its_partition() -> None:
    tables = Tables()
    book = tables.start()
    for fill in [usdt(1), usdt(2), btc(1)]:
        book.ledger.fold(fill)
    assert tables.flush(book, 7) == 4
    assert set(tables.funds[0]) == {b"USDT"} and set(tables.funds[1]) == {b"BTC"}
    assert tables.segments("USDT") == {b"USDT/000000000001": ["usdt-1", "usdt-2"]}
    assert tables.segments("BTC") == {b"BTC/000000000001": ["btc-1"]}
    assert tables.record("USDT") == codec.FundRecord(book.ledger.funds["USDT"], {SOURCE: 7})

    book.ledger.fold(usdt(3))
    assert tables.flush(book, 8) == 2  # BTC was not touched, so not rewritten
    assert tables.segments("USDT")[b"USDT/000000000003"] == ["usdt-3"]
    assert tables.flush(book) == 0


def test_a_batch_without_accepted_fills_writes_only_the_fund_record() -> None:
    tables = Tables()
    book = tables.start()
    book.ledger.fold(usdt(1))
    tables.flush(book)
    before = dict(tables.seen[0])
    book.ledger.fold(usdt(1))  # duplicate
    book.ledger.fold(usdt(1, fee="3"))  # conflict
    assert tables.flush(book) == 1
    assert tables.seen[0] == before
    assert tables.record("USDT").state.duplicates == 1


def test_a_restarted_book_continues_sequences_and_knows_its_duplicates_and_conflicts() -> None:
    tables, ledger = Tables(), Ledger(RULES)
    book = tables.start()
    for offset in range(12):  # twelve batches: segment keys must sort in sequence order past 9
        for fold in (book.ledger.fold, ledger.fold):
            fold(usdt(offset, T + offset))
        tables.flush(book)
    for fold in (book.ledger.fold, ledger.fold):
        fold(btc(1))
    tables.flush(book)
    assert list(tables.segments("USDT")) == [b"USDT/%012d" % sequence for sequence in range(1, 13)]

    restarted = tables.start()
    assert restarted.ledger.funds == ledger.funds
    for fill in [usdt(12, T + 12), usdt(3, T + 3), usdt(1, T + 1, fee="0.6"), btc(1), btc(1, fill_price="1")]:
        assert restarted.ledger.fold(fill) == ledger.fold(fill)


def test_a_book_restores_only_the_partitions_it_claims_and_releases_them() -> None:
    tables = Tables()
    book = tables.start()
    book.ledger.fold(usdt(1))
    book.ledger.fold(btc(1))
    tables.flush(book)

    only_btc = tables.start(partitions=(1,))
    assert set(only_btc.ledger.funds) == {"BTC"}
    assert [state.fund for state in only_btc.states()] == ["BTC"]
    only_btc.release(1)
    assert only_btc.ledger.funds == {} and only_btc.ledger.windows == {}


def test_tail_records_of_the_v1_worker_and_empty_values_are_ignored() -> None:
    tables = Tables()
    book = tables.start()
    book.ledger.fold(usdt(1))
    tables.flush(book)
    tables.funds[0][TAIL_KEY] = b""
    tables.seen[0][TAIL_KEY] = b""
    tables.seen[0][b"USDT/~"] = b"[]"
    restarted = tables.start()
    assert set(restarted.ledger.funds) == {"USDT"}
    assert restarted.ledger.fold(usdt(1)).delta is None


def test_applied_offsets_are_the_highest_of_each_source_on_the_partition() -> None:
    tables = Tables()
    book = tables.start()
    book.ledger.fold(usdt(1))
    tables.commit(0, book.flush(0, {SOURCE: 41, "fills-by-fund:0": 3})[0])
    assert tables.start().applied_offsets(0) == {SOURCE: 41, "fills-by-fund:0": 3}
    assert tables.start().applied_offsets(1) == {}


def test_segments_older_than_the_window_are_deleted_at_the_next_flush() -> None:
    tables = Tables(window_ms=1000)
    book = tables.start()
    for timestamp in [T, T + 500, T + 1400]:
        book.ledger.fold(usdt(timestamp, timestamp))
        tables.flush(book)
    assert list(tables.segments("USDT")) == [b"USDT/000000000002", b"USDT/000000000003"]
    book.ledger.fold(usdt(99, T + 5000))
    tables.flush(book)
    assert list(tables.segments("USDT")) == [b"USDT/000000000004"]


# --- crash and resume, against one uninterrupted run --------------------------------------------------------


def check_interrupted_run(data: st.DataObject, tables: Tables, fills: Sequence[Applied]) -> None:
    """Fold ``fills`` in random batches; after each, commit it, or crash before the commit (the batch
    is lost and read again by a new book), or restart cleanly; compare with one uninterrupted run."""
    book = tables.start()
    outputs: list[Any] = []
    position = 0
    crashes = 0
    while position < len(fills):
        end = min(len(fills), position + data.draw(st.integers(1, 6), label="batch size"))
        batch = [published(apply_event(book.ledger, fill), book.ledger) for fill in fills[position:end]]
        action = data.draw(st.sampled_from(["commit", "restart", "crash"] if crashes < 4 else ["commit"]))
        if action == "crash":
            crashes += 1
            book = tables.start()
            continue
        tables.flush(book, end - 1)
        outputs += batch
        position = end
        if action == "restart":
            book = tables.start()

    ledger = Ledger(tables.rules, tables.window_ms)
    expected = [published(apply_event(ledger, fill), ledger) for fill in fills]
    assert outputs == expected
    fresh = tables.start()
    assert fresh.ledger.funds == ledger.funds
    for fill in fills:  # a fresh worker knows every duplicate the uninterrupted run knows
        assert published(apply_event(fresh.ledger, fill), fresh.ledger) == published(
            apply_event(ledger, fill), ledger
        )


@given(events=fill_sequences(max_size=30), data=st.data())
def test_interrupted_runs_publish_exactly_what_one_uninterrupted_run_publishes(
    events: list[Any], data: st.DataObject
) -> None:
    fills = with_conflicts(data, [event.expected() for event in events])
    check_interrupted_run(data, Tables(), [fill for fill in fills if fill.margin_currency in HOMES])


@given(window_ms=st.sampled_from([1, 60_000, 3_600_000]), events=fill_sequences(max_size=30), data=st.data())
def test_interrupted_runs_with_a_short_window_publish_the_same(
    window_ms: int, events: list[Any], data: st.DataObject
) -> None:
    fills = sorted((event.expected() for event in events), key=lambda fill: fill.timestamp)
    check_interrupted_run(data, Tables(window_ms=window_ms), [f for f in fills if f.margin_currency in HOMES])


# --- pools and operations (SPEC sections 7 and 8) -----------------------------------------------------------


def pool_events() -> list[Applied]:
    """Fills of a currency fund and of two pools, top-ups, an applied withdrawal and a transfer."""
    return [
        usdt(1),
        usdt(2, symbol="ETHUSDT"),  # the USDT-MEME pool's
        btc(1),
        btc(2, T + 1, symbol="BTCUSD_PERP"),  # the BTC_PERP pool's
        make_operation(operation_id="top-1", fund="USDT", amount="100", reason="a\x1fb"),
        make_operation(operation_id="out-1", fund="USDT-MEME", type="withdrawal", amount="25.5"),
        make_operation(
            operation_id="tr-1-out", fund="USDT", type="withdrawal", amount="10", transfer_id="tr-1"
        ),
        make_operation(operation_id="tr-1-in", fund="USDT-MEME", amount="10", transfer_id="tr-1", reason=""),
        make_operation(
            operation_id="btc-in", fund="BTC_PERP", amount="0.0000000001", requested_by="bot\x1f2"
        ),
    ]


def test_pool_fills_and_operations_survive_flush_and_restore() -> None:
    tables, ledger = Tables(rules=POOL_RULES), Ledger(POOL_RULES)
    book = tables.start()
    events = pool_events()
    for event in events:
        assert apply_event(book.ledger, event).delta is not None
        apply_event(ledger, event)
    tables.flush(book, 5)
    assert set(tables.funds[0]) == {b"USDT", b"USDT-MEME"} and set(tables.funds[1]) == {b"BTC", b"BTC_PERP"}
    assert tables.segments("USDT-MEME") == {b"USDT-MEME/000000000001": ["usdt-2", "out-1", "tr-1-in"]}
    assert tables.segments("USDT") == {b"USDT/000000000001": ["usdt-1", "top-1", "tr-1-out"]}
    assert tables.segments("BTC_PERP") == {b"BTC_PERP/000000000001": ["btc-2", "btc-in"]}
    assert tables.record("BTC_PERP").state == ledger.funds["BTC_PERP"]

    restarted = tables.start()
    assert restarted.ledger.funds == ledger.funds
    for fund, window in ledger.windows.items():
        assert sorted(map(repr, restarted.ledger.windows[fund])) == sorted(map(repr, window)), fund
    for event in events:  # every pool fill and operation is still known: a duplicate, not applied again
        outcome = apply_event(restarted.ledger, event)
        assert (outcome.delta, outcome.conflict, outcome.refusal) == (None, None, None), event
        assert outcome == apply_event(ledger, event)
    assert restarted.ledger.funds == ledger.funds
    assert sum(state.duplicates for state in restarted.ledger.funds.values()) == len(events)


def test_a_restored_book_knows_conflicts_with_operations_and_pool_fills() -> None:
    tables = Tables(rules=POOL_RULES)
    book = tables.start()
    for event in pool_events():
        apply_event(book.ledger, event)
    tables.flush(book)
    restarted = tables.start()
    conflicts = [
        make_operation(operation_id="top-1", fund="USDT", amount="101", reason="a\x1fb"),
        make_operation(operation_id="tr-1-in", fund="USDT-MEME", amount="10", transfer_id="tr-2", reason=""),
        make_operation(operation_id="usdt-2", fund="USDT-MEME", amount="1"),  # a pool fill's id
        usdt(99, symbol="ETHUSDT")._replace(fill_id="out-1"),  # an operation's id, in the pool
        btc(2, T + 1, symbol="BTCUSD_PERP", fee="0"),
    ]
    for event in conflicts:
        outcome = apply_event(restarted.ledger, event)
        assert outcome.conflict is not None and outcome.delta is None, event
    assert "was already used by a fill applied to fund USDT-MEME" in str(
        apply_event(restarted.ledger, conflicts[2]).conflict
    )


def test_a_refused_withdrawal_is_not_in_any_segment_and_is_tried_again_after_a_restart() -> None:
    tables = Tables(rules=POOL_RULES)
    book = tables.start()
    apply_event(book.ledger, usdt(1, symbol="ETHUSDT"))  # USDT-MEME: 500 - 0.5 + 200 = 699.5, floor 50
    refused = make_operation(operation_id="w", fund="USDT-MEME", type="withdrawal", amount="650")
    assert apply_event(book.ledger, refused).refusal is not None
    tables.flush(book)
    assert tables.segments("USDT-MEME") == {b"USDT-MEME/000000000001": ["usdt-1"]}
    restarted = tables.start()
    assert apply_event(restarted.ledger, refused).refusal is not None
    apply_event(restarted.ledger, make_operation(operation_id="t", fund="USDT-MEME", amount="0.5"))
    assert apply_event(restarted.ledger, refused).delta is not None


@settings(max_examples=scaled(50))
@given(events=mixed_sequences(funds=[*CURRENCIES, "USDT-MEME", "BTC_PERP"], max_size=25), data=st.data())
def test_interrupted_runs_with_pools_and_operations_publish_what_one_uninterrupted_run_publishes(
    events: list[Any], data: st.DataObject
) -> None:
    applied = with_conflicts(data, [event.expected() for event in events])
    check_interrupted_run(data, Tables(rules=POOL_RULES), applied)


def test_operations_weigh_more_than_fills_in_a_segment_and_keys_follow_the_sequence() -> None:
    tables = Tables(rules=POOL_RULES)
    book = tables.start()
    events: list[Applied] = [usdt(n, symbol="ETHUSDT") for n in range(3)]
    events += [make_operation(operation_id=f"op-{n}", fund="USDT-MEME", amount="1") for n in range(130)]
    for event in events:
        apply_event(book.ledger, event)
    tables.flush(book)
    segments = tables.segments("USDT-MEME")
    first_sequences = [int(key.partition(b"/")[2]) for key in segments]
    sizes = [len(ids) for ids in segments.values()]
    assert first_sequences == [1, 1 + sizes[0]]
    assert [event_id for ids in segments.values() for event_id in ids] == [event.event_id for event in events]
    for ids in segments.values():  # an operation's row counts as OPERATION_WEIGHT fills
        assert (
            sum(1 if event_id.startswith("usdt-") else OPERATION_WEIGHT for event_id in ids) <= SEGMENT_FILLS
        )
    restarted = tables.start()
    assert all(apply_event(restarted.ledger, event).delta is None for event in events)
    assert restarted.ledger.funds["USDT-MEME"].duplicates == len(events)


def test_hostile_ids_split_a_segment_until_each_record_fits_the_broker() -> None:
    """A batch of fills whose ids are control characters (each escaped to 6 bytes in JSON) would make
    a 1,000-fill segment over 2 MB: the broker would refuse the batch's transaction for ever (a
    crash loop). The segment is split until each record fits, and every fill is still remembered."""
    tables = Tables()
    book = tables.start()
    control = "\x01"
    fills = [
        make_fill(fill_id=control * 120 + f"{n:08d}", liquidation_id=control * 128, symbol=control * 64)
        for n in range(SEGMENT_FILLS)
    ]
    for fill in fills:
        book.ledger.fold(fill)
    tables.flush(book)
    records = [value for key, value in tables.seen[home("USDT")].items() if key.startswith(b"USDT/")]
    assert len(records) > 1
    assert all(len(value) <= SEGMENT_BYTES for value in records)
    assert sum(len(ids) for ids in tables.segments("USDT").values()) == SEGMENT_FILLS
    restarted = tables.start()
    assert all(restarted.ledger.fold(fill).delta is None for fill in fills)  # all duplicates still
