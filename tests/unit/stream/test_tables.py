"""``ChangelogTable``: writes are staged in the bound partition's transaction and reach the local
store only through ``apply``, after that transaction committed."""

from __future__ import annotations

import pytest

from processor.domain.ledger import Ledger
from processor.domain.state import FundRules
from processor.stream.book import FundBook
from processor.stream.outbox import Outbox
from processor.stream.tables import ChangelogTable
from tests.strategies import BASE_TIMESTAMP, make_fill
from tests.unit.stream.fakes import FakeFaustTable, FakeTransactions

T = BASE_TIMESTAMP


Made = tuple[ChangelogTable, FakeFaustTable, Outbox]


def table(name: str = "funds-changelog", box: Outbox | None = None) -> Made:
    box = box or Outbox(FakeTransactions({}))  # type: ignore[arg-type]
    fake = FakeFaustTable()
    return ChangelogTable(fake, name, box), fake, box  # type: ignore[arg-type]


def staged(box: Outbox) -> dict[int, list[tuple[str, int, bytes | None, bytes | None]]]:
    return {
        owner: [
            (topic, partition, key, value)
            for (topic, partition), recorded in work.records.items()
            for key, value, _ in recorded
        ]
        for owner, work in box.take().items()
    }


def test_a_write_is_staged_on_the_bound_partition_and_applied_only_after_commit() -> None:
    funds, fake, box = table()
    funds.bind(2)
    funds[b"USDT"] = b"state"
    assert fake.data == {}
    assert b"USDT" not in funds
    assert staged(box) == {2: [("funds-changelog", 2, b"USDT", b"state")]}
    funds.apply(2)
    assert fake.data == {b"USDT": b"state"}
    assert funds[b"USDT"] == b"state"


def test_a_delete_is_a_tombstone_and_deleting_a_missing_key_changes_nothing() -> None:
    seen, fake, box = table("seen-changelog")
    fake.data[b"USDT/000000000001"] = b"[]"
    seen.bind(0)
    del seen[b"USDT/000000000001"]
    del seen[b"USDT/000000000009"]
    assert staged(box) == {
        0: [
            ("seen-changelog", 0, b"USDT/000000000001", None),
            ("seen-changelog", 0, b"USDT/000000000009", None),
        ]
    }
    seen.apply(0)
    assert fake.data == {}


def test_apply_takes_only_its_partition_and_only_once() -> None:
    funds, fake, _ = table()
    funds.bind(0)
    funds[b"USDT"] = b"a"
    funds.bind(1)
    funds[b"BTC"] = b"b"
    funds.apply(1)
    assert fake.data == {b"BTC": b"b"}
    funds.apply(1)
    funds.apply(0)
    assert fake.data == {b"BTC": b"b", b"USDT": b"a"}
    fake.data.clear()
    funds.apply(0)
    assert fake.data == {}


def test_writing_unbound_is_refused() -> None:
    funds, _, _ = table()
    with pytest.raises(RuntimeError, match="bind"):
        funds[b"USDT"] = b"a"


def test_a_book_over_changelog_tables_writes_each_fund_record_once_per_flush() -> None:
    box = Outbox(FakeTransactions({}))  # type: ignore[arg-type]
    funds, funds_store, _ = table("funds-changelog", box)
    seen, seen_store, _ = table("seen-changelog", box)
    book = FundBook(funds, seen, Ledger(FundRules(), 1000))
    for table_ in (funds, seen):
        table_.bind(1)
    fills = [make_fill(fill_id="a", timestamp=T), make_fill(fill_id="b", timestamp=T + 1)]
    for offset, fill in enumerate(fills):
        book.fold(fill, "fills:1", offset)
    book.flush()
    written = staged(box)[1]
    assert [(topic, key) for topic, _, key, _ in written] == [
        ("seen-changelog", b"USDT/000000000001"),
        ("funds-changelog", b"USDT"),
    ]
    assert funds_store.data == {} and seen_store.data == {}
    funds.apply(1)
    seen.apply(1)
    assert set(funds_store.data) == {b"USDT"} and set(seen_store.data) == {b"USDT/000000000001"}
