"""Table stores: a duplicate window on RocksDB behaves exactly like the in-memory one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from processor.domain.ledger import Ledger
from processor.stream.tables import fill_store
from tests.strategies import fill_sequences, make_fill


def test_rocksdb_fills_store_count_iterate_and_clear(tmp_path: Path) -> None:
    store, close = fill_store("rocksdb", tmp_path / "db")
    assert store is not None
    try:
        usdt, btc = store("USDT"), store("BTC")
        usdt[b"a"] = b"a1"
        usdt[b"a"] = b"a2"
        usdt[b"b"] = b"b3"
        btc[b"a"] = b"x"
        assert (len(usdt), len(btc)) == (2, 1)
        assert usdt[b"a"] == b"a2" and usdt.get(b"zz") is None and sorted(usdt) == [b"a", b"b"]
        del usdt[b"a"]
        assert list(usdt) == [b"b"] and len(usdt) == 1
        usdt.clear()
        assert list(usdt) == [] and list(btc) == [b"a"]
    finally:
        close()


def test_memory_store_is_plain_dicts(tmp_path: Path) -> None:
    store, close = fill_store("memory", tmp_path / "unused")
    assert store is None
    close()
    assert not (tmp_path / "unused").exists()


@settings(max_examples=30)
@given(events=fill_sequences(max_size=40), window_ms=st.sampled_from([1, 1000, 604_800_000]))
def test_a_ledger_on_rocksdb_folds_exactly_like_one_in_memory(
    tmp_path_factory: Any, events: list[Any], window_ms: int
) -> None:
    store, close = fill_store("rocksdb", tmp_path_factory.mktemp("rocks") / "db")
    try:
        on_disk, in_memory = Ledger(None, window_ms, store), Ledger(None, window_ms)
        for event in events:
            fill = event.expected()
            assert on_disk.fold(fill) == in_memory.fold(fill)
        resent = make_fill(fill_id="never-seen")
        assert on_disk.fold(resent) == in_memory.fold(resent)
    finally:
        close()
