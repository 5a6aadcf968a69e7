"""The duplicate window: packed fills, expiry order, and restoring from packed rows."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from processor.domain.ledger import DuplicateWindow, pack_fill, pack_texts, unpack_fill
from tests.strategies import BASE_TIMESTAMP, fill_sequences, make_fill

T = BASE_TIMESTAMP
FREE_TEXT = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)


@given(liquidation_id=FREE_TEXT, symbol=FREE_TEXT, fee=st.decimals(allow_nan=False, allow_infinity=False))
def test_a_packed_fill_unpacks_equal_whatever_its_text(
    liquidation_id: str, symbol: str, fee: Decimal
) -> None:
    fill = make_fill(liquidation_id=liquidation_id, symbol=symbol, fee=fee)
    unpacked = unpack_fill(fill.fill_id, pack_fill(fill))
    assert unpacked == fill
    assert [str(value) for value in unpacked] == [str(value) for value in fill]  # exponents kept


def test_pack_texts_is_what_restoring_from_segment_rows_builds() -> None:
    fill = make_fill(contract_size=Decimal("0.010"), fee=Decimal("1E-8"))
    fields = ("long", "linear", "0.010", "28000", "28200", "1", "0", "1E-8", "1")
    packed = pack_texts(str(fill.timestamp), "USDT", *fields, fill.liquidation_id, fill.symbol)
    assert packed == pack_fill(fill)


def test_texts_as_the_message_spelled_them_unpack_to_the_same_fill() -> None:
    """The decoder packs the texts it accepted ("007", ".5", "28200.10"), not ``str`` of the values."""
    fill = make_fill(
        contract_size=Decimal("007"), fill_price=Decimal(".5"), bankruptcy_price=Decimal("28200.10")
    )
    fields = ("long", "linear", "007", "28200.10", ".5", "1", "0", "0.5", "1")
    packed = pack_texts(str(fill.timestamp), "USDT", *fields, fill.liquidation_id, fill.symbol)
    unpacked = unpack_fill(fill.fill_id, packed)
    assert [str(value) for value in unpacked] == [str(value) for value in fill]


def test_a_window_forgets_exactly_past_its_horizon_and_compacts_its_expiry_queue() -> None:
    window = DuplicateWindow(1000)
    for number in range(70_000):
        window.remember(make_fill(fill_id=f"f{number}", timestamp=T + number))
    assert len(window) == 1001  # T+68999 .. T+69999
    assert window.get("f68998") is None and window.get("f68999") is not None
    window.remember(make_fill(fill_id="late", timestamp=T + 69_500))
    window.remember(make_fill(fill_id="f0", timestamp=T + 70_000))  # an old id, applied again
    assert window.get("f0") is not None and window.get("f68999") is None and window.get("f69000") is not None
    window.clear()
    assert len(window) == 0 and window.get("f0") is None


@given(events=fill_sequences(max_size=40), window_ms=st.sampled_from([1, 50, 10_000]))
def test_remembering_packed_rows_equals_remembering_fills(events: list[Any], window_ms: int) -> None:
    fills, packed = DuplicateWindow(window_ms), DuplicateWindow(window_ms)
    for event in events:
        fill = event.expected()
        fills.remember(fill)
        packed.remember_packed(fill.fill_id, fill.timestamp, pack_fill(fill))
    assert sorted(fills, key=str) == sorted(packed, key=str)
    assert fills.newest_timestamp == packed.newest_timestamp
