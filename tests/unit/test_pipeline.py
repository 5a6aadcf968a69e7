"""Decode, fold, encode: what one raw message turns into."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import pytest

from processor.codec import FillDecoder
from processor.domain.fold import exact_arithmetic
from processor.domain.ledger import Ledger
from processor.domain.state import FundRules
from processor.pipeline import Emitted, Pipeline
from tests.strategies import DELETE, seed_bytes

CLOCK_MS = 1_700_000_999_000


@pytest.fixture
def pipeline(decoder: FillDecoder) -> Pipeline:
    return Pipeline(decoder, Ledger(), clock_ms=lambda: CLOCK_MS)


def process(pipeline: Pipeline, value: bytes | None, offset: int = 0, key: bytes | None = b"USDT") -> Emitted:
    return pipeline.process(value, key, "liquidation-fills", 2, offset)


def test_accepted_fill_yields_a_delta(pipeline: Pipeline) -> None:
    emitted = process(pipeline, seed_bytes())
    assert (emitted.fund, emitted.symbol) == ("USDT", "BTCUSDT")
    assert emitted.delta is not None
    assert emitted.trigger is None
    assert emitted.dead_letter is None
    assert json.loads(emitted.delta)["amount"] == "199.50000000"


def test_fill_needing_adl_yields_a_delta_and_a_trigger(pipeline: Pipeline) -> None:
    emitted = process(pipeline, seed_bytes(fill_price="27000", unfilled_quantity="0.5"))
    assert emitted.delta is not None
    assert emitted.trigger is not None
    delta, trigger = json.loads(emitted.delta), json.loads(emitted.trigger)
    assert trigger["sequence"] == delta["sequence"] == 1
    assert trigger["trigger_id"] == "adl-fill-0001"
    assert trigger["quantity"] == "1.50000000"  # q(1 x 1000.5 / 1000.5) + 0.5


def test_bad_message_yields_one_dead_letter_with_its_source(pipeline: Pipeline) -> None:
    raw = seed_bytes(quantity=DELETE)
    emitted = process(pipeline, raw, offset=41)
    assert emitted == Emitted(None, None, dead_letter=emitted.dead_letter)
    assert emitted.dead_letter is not None
    letter = json.loads(emitted.dead_letter)
    assert letter["error"] == "invalid_event"
    assert "quantity" in letter["detail"]
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
        "liquidation-fills",
        2,
        41,
    )
    assert letter["value"] == raw.decode()
    assert letter["key"] == "USDT"
    assert letter["timestamp"] == CLOCK_MS
    assert letter["version"] == 1
    assert pipeline.ledger.funds == {}


def test_not_utf8_message_is_dead_lettered_as_base64(pipeline: Pipeline) -> None:
    raw = b'{"fill_id": "\xff"}'
    emitted = process(pipeline, raw, key=None)
    assert emitted.dead_letter is not None
    letter = json.loads(emitted.dead_letter)
    assert letter["error"] == "invalid_json"
    assert base64.b64decode(letter["value_base64"]) == raw
    assert letter["key"] is None


def test_null_message_value_is_dead_lettered(pipeline: Pipeline) -> None:
    emitted = process(pipeline, None)
    assert emitted.dead_letter is not None
    assert json.loads(emitted.dead_letter)["error"] == "invalid_json"


def test_identical_duplicate_yields_nothing_and_is_counted(pipeline: Pipeline) -> None:
    process(pipeline, seed_bytes())
    for raw in (
        seed_bytes(),
        seed_bytes(fill_price="28200.0"),
        seed_bytes(fill_price=28200, bankruptcy_price=28000.0, fee=0.5),
        seed_bytes(contract_type=DELETE, contract_size=None, unfilled_quantity=DELETE, version=None),
        seed_bytes(producer="another-engine"),
    ):
        assert process(pipeline, raw) == Emitted("USDT", "BTCUSDT")
    state = pipeline.ledger.funds["USDT"]
    assert (state.fills, state.duplicates, state.sequence) == (1, 5, 1)


def test_conflicting_duplicate_is_dead_lettered_and_not_counted(pipeline: Pipeline) -> None:
    process(pipeline, seed_bytes())
    before = pipeline.ledger.funds["USDT"]
    raw = seed_bytes(fill_price="28300")
    emitted = process(pipeline, raw, offset=43)
    assert emitted.delta is None
    assert emitted.trigger is None
    assert emitted.dead_letter is not None
    assert emitted.fund == "USDT"
    letter = json.loads(emitted.dead_letter)
    assert letter["error"] == "conflicting_duplicate"
    assert "fill_price" in letter["detail"]
    assert letter["source_offset"] == 43
    assert letter["value"] == raw.decode()
    assert pipeline.ledger.funds["USDT"] == before
    assert before.duplicates == 0


def test_same_fill_id_in_another_fund_is_not_a_duplicate(pipeline: Pipeline) -> None:
    process(pipeline, seed_bytes())
    emitted = process(pipeline, seed_bytes(margin_currency="BTC", symbol="BTCUSD", contract_type="inverse"))
    assert emitted.delta is not None
    assert json.loads(emitted.delta)["sequence"] == 1


def test_outputs_do_not_depend_on_the_clock_partition_or_key(decoder: FillDecoder) -> None:
    messages = [seed_bytes(), seed_bytes(fill_id="2", fill_price="27000", unfilled_quantity="1"), b"oops"]
    runs = []
    for clock, partition, key in ((lambda: 1, 0, b"USDT"), (lambda: 2, 5, None)):
        pipeline = Pipeline(decoder, Ledger(), clock_ms=clock)
        runs.append(
            [pipeline.process(raw, key, "t", partition, index)[2:4] for index, raw in enumerate(messages)]
        )
    assert runs[0] == runs[1]


def test_high_precision_fund_with_a_large_price_does_not_crash(decoder: FillDecoder) -> None:
    pipeline = Pipeline(decoder, Ledger(FundRules(precision={"USDT": 14})), clock_ms=lambda: 0)
    emitted = pipeline.process(
        seed_bytes(bankruptcy_price="999999999999999", fill_price="999999999999998"), None, "t", 0, 0
    )
    assert emitted.trigger is not None
    assert json.loads(emitted.trigger)["bankruptcy_price"] == "999999999999999.00000000000000"


def test_high_precision_fund_with_a_large_price_inside_exact_arithmetic(decoder: FillDecoder) -> None:
    pipeline = Pipeline(decoder, Ledger(FundRules(precision={"USDT": 14})), clock_ms=lambda: 0)
    with exact_arithmetic():
        emitted = pipeline.process(
            seed_bytes(bankruptcy_price="999999999999999", fill_price="999999999999998"), None, "t", 0, 0
        )
    assert emitted.trigger is not None
    trigger = json.loads(emitted.trigger)
    assert trigger["bankruptcy_price"] == "999999999999999.00000000000000"
    assert Decimal(trigger["shortfall"]) == Decimal("1.5")
