"""The fund state's documents and the worker's table records: the state file and HTTP view as SPEC
section 4 writes them, and every format reading back to what was written."""

from __future__ import annotations

import json
from decimal import Decimal

from hypothesis import given

from processor import codec
from processor.codec import FillDecoder
from processor.domain.events import LiquidationFill
from processor.domain.ledger import Ledger
from processor.domain.state import FundRules, FundState
from tests.strategies import FillEvent, fill_events, make_fill, seed_bytes
from tests.unit.codec.support import DECODER, STATE_KEYS, accepted, example

D = Decimal


def test_seed_state_document_matches_the_example(decoder: FillDecoder) -> None:
    outcome = Ledger().fold(accepted(decoder, seed_bytes()))
    document = codec.state_document(outcome.state)
    assert list(document) == STATE_KEYS
    assert document == example("fund_state.v1.seed")


def test_states_are_written_sorted_by_fund_and_symbol() -> None:
    ledger = Ledger()
    ledger.fold(make_fill(fill_id="1", margin_currency="USDT", symbol="SOLUSDT"))
    ledger.fold(make_fill(fill_id="2", margin_currency="BTC", symbol="BTCUSD"))
    ledger.fold(make_fill(fill_id="3", margin_currency="USDT", symbol="BTCUSDT"))
    raw = codec.encode_states(reversed(list(ledger.funds.values())))
    document = json.loads(raw)
    assert list(document) == ["BTC", "USDT"]
    assert list(document["USDT"]["by_symbol"]) == ["BTCUSDT", "SOLUSDT"]
    assert all(document[fund]["fund"] == fund for fund in document)
    assert raw == codec.encode_states(ledger.funds.values())


def test_state_document_round_trips(decoder: FillDecoder) -> None:
    ledger = Ledger(FundRules(initial_balance={"USDT": D("10")}))
    ledger.fold(make_fill())
    ledger.fold(make_fill(fill_id="2", fill_price="27000", unfilled_quantity="1"))
    ledger.fold(make_fill())
    state = ledger.funds["USDT"]
    assert codec.decode_state(json.loads(json.dumps(codec.state_document(state)))) == state


def test_opened_fund_state_document() -> None:
    policy = FundRules().policy_for("ETH")
    document = codec.state_document(FundState.opened("ETH", policy))
    assert document == {
        "fund": "ETH",
        "balance": "0.00000000",
        "total_surplus": "0.00000000",
        "total_paid": "0.00000000",
        "total_shortfall": "0.00000000",
        "fills": 0,
        "duplicates": 0,
        "adl_triggers": 0,
        "sequence": 0,
        "last_timestamp": None,
        "by_symbol": {},
    }


# --- table records --------------------------------------------------------------------------------


def test_a_fund_record_reads_back_as_written() -> None:
    ledger = Ledger()
    ledger.fold(make_fill())
    ledger.fold(make_fill(fill_id="2", fill_price="27000", unfilled_quantity="1"))
    record = codec.FundRecord(ledger.funds["USDT"], {"liquidation-fills/0": 41, "liquidation-fills/3": 7})
    assert codec.decode_fund_record(codec.encode_fund_record(record)) == record


def test_an_empty_fill_segment_reads_back_empty() -> None:
    assert codec.decode_fill_segment("USDT", codec.encode_fill_segment("USDT", [])) == []


@given(fill_events(extremes=True))
def test_a_fill_segment_reads_back_as_written(event: FillEvent) -> None:
    fill = DECODER.decode(event.encode())
    assert isinstance(fill, LiquidationFill)
    segment = [fill, fill._replace(fill_id=fill.fill_id + "-next", quantity=D(0), unfilled_quantity=D(1))]
    assert (
        codec.decode_fill_segment(
            fill.margin_currency, codec.encode_fill_segment(fill.margin_currency, segment)
        )
        == segment
    )
