"""Decode, route, fold, encode: what one raw message turns into."""

from __future__ import annotations

import base64
import hashlib
import json
from decimal import Decimal

import pytest

from processor import codec
from processor.codec import FillDecoder
from processor.domain.fold import exact_arithmetic
from processor.domain.ledger import Ledger
from processor.domain.state import FundRules
from processor.pipeline import SOURCE_HEADER, SOURCE_KEY_HEADER, SOURCE_KEY_SUMMARY_HEADER, Emitted, Pipeline
from tests.strategies import DELETE, seed_bytes

CLOCK_MS = 1_700_000_999_000
INPUT = "liquidation-fills"
REPARTITION = "insurance-fund-fills-by-fund"
#: Where each fund lives in the routing tests.
HOMES = {"USDT": 1, "USDC": 1, "BTC": 2, "ETH": 0}


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
    assert emitted == Emitted(
        None, None, dead_letter=emitted.dead_letter, dead_letter_key=b"USDT", error="invalid_event"
    )
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
            [
                (emitted.delta, emitted.trigger)
                for emitted in (
                    pipeline.process(raw, key, "t", partition, index) for index, raw in enumerate(messages)
                )
            ]
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


def test_dead_letter_key_is_the_input_key_cut_to_its_limit(pipeline: Pipeline) -> None:
    long_key = b"k" * (codec.DEAD_LETTER_KEY_LIMIT + 10)
    assert process(pipeline, b"oops", key=long_key).dead_letter_key == long_key[: codec.DEAD_LETTER_KEY_LIMIT]
    assert process(pipeline, b"oops", key=None).dead_letter_key is None


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"oops", codec.INVALID_JSON),
        (None, codec.INVALID_JSON),
        (seed_bytes(quantity=DELETE), codec.INVALID_EVENT),
        (seed_bytes(version=2), codec.UNSUPPORTED_VERSION),
    ],
)
def test_error_is_the_rejection_reason(pipeline: Pipeline, raw: bytes | None, error: str) -> None:
    emitted = process(pipeline, raw)
    assert emitted.error == error
    assert emitted.dead_letter is not None
    assert json.loads(emitted.dead_letter)["error"] == error


def test_error_of_a_conflicting_duplicate_and_none_otherwise(pipeline: Pipeline) -> None:
    accepted = process(pipeline, seed_bytes())
    duplicate = process(pipeline, seed_bytes())
    conflicting = process(pipeline, seed_bytes(fill_price="28300"))
    assert (accepted.error, duplicate.error) == (None, None)
    assert conflicting.error == codec.CONFLICTING_DUPLICATE
    assert accepted.dead_letter_key is None
    assert conflicting.dead_letter_key == b"USDT"


# --- routing: each fund is folded on its home partition only ----------------------------------------------


@pytest.fixture
def routed(decoder: FillDecoder) -> Pipeline:
    return Pipeline(decoder, Ledger(), clock_ms=lambda: CLOCK_MS, home=HOMES.__getitem__, routed_topic=INPUT)


def test_fill_on_its_home_partition_is_folded(routed: Pipeline) -> None:
    emitted = routed.process(seed_bytes(), b"USDT", INPUT, HOMES["USDT"], 5)
    assert emitted.delta is not None
    assert (emitted.forward, emitted.home, emitted.headers, emitted.dead_letter) == (None, -1, None, None)
    assert routed.ledger.funds["USDT"].fills == 1


def test_fill_on_another_partition_is_forwarded_home_not_folded(routed: Pipeline) -> None:
    raw = seed_bytes()
    emitted = routed.process(raw, b"USDT", INPUT, 0, 7)
    assert emitted == Emitted(
        "USDT",
        None,
        forward=raw,
        home=HOMES["USDT"],
        headers=[(SOURCE_HEADER, b"liquidation-fills:0:7"), (SOURCE_KEY_HEADER, b"USDT")],
    )
    assert routed.ledger.funds == {}


@pytest.mark.parametrize("partition", [0, 1, 2, 3])
def test_each_fund_goes_to_its_own_home(routed: Pipeline, partition: int) -> None:
    for index, (fund, symbol, contract_type) in enumerate(
        [("USDT", "BTCUSDT", "linear"), ("BTC", "BTCUSD", "inverse"), ("ETH", "ETHUSD", "inverse")]
    ):
        raw = seed_bytes(
            fill_id=f"f{index}", margin_currency=fund, symbol=symbol, contract_type=contract_type
        )
        emitted = routed.process(raw, fund.encode(), INPUT, partition, index)
        if HOMES[fund] == partition:
            assert emitted.delta is not None
            assert emitted.forward is None
        else:
            assert (emitted.forward, emitted.home, emitted.delta) == (raw, HOMES[fund], None)


def test_forwarded_fill_without_a_key_has_no_key_header(routed: Pipeline) -> None:
    emitted = routed.process(seed_bytes(), None, INPUT, 0, 7)
    assert emitted.headers == [(SOURCE_HEADER, b"liquidation-fills:0:7")]


def test_forwarded_key_header_is_cut_to_the_dead_letter_key_limit(routed: Pipeline) -> None:
    long_key = b"k" * (codec.DEAD_LETTER_KEY_LIMIT + 1)
    emitted = routed.process(seed_bytes(), long_key, INPUT, 0, 7)
    assert emitted.headers is not None
    assert dict(emitted.headers)[SOURCE_KEY_HEADER] == long_key[: codec.DEAD_LETTER_KEY_LIMIT]


def test_a_forwarded_fill_whose_key_is_cut_carries_the_whole_keys_summary(routed: Pipeline) -> None:
    long_key = b"k" * (codec.DEAD_LETTER_KEY_LIMIT + 1)
    emitted = routed.process(seed_bytes(), long_key, INPUT, 0, 7)
    assert emitted.headers is not None
    summary = f"{len(long_key)}:{hashlib.sha256(long_key).hexdigest()}".encode()
    assert dict(emitted.headers)[SOURCE_KEY_SUMMARY_HEADER] == summary
    short = routed.process(seed_bytes(fill_id="short-key"), b"k" * codec.DEAD_LETTER_KEY_LIMIT, INPUT, 0, 8)
    assert short.headers is not None
    assert SOURCE_KEY_SUMMARY_HEADER not in dict(short.headers)


def test_the_dead_letter_of_a_forwarded_fill_names_its_whole_long_key(routed: Pipeline) -> None:
    """Cut to 1 KiB in its header, the key's length and SHA-256 still reach the dead letter, as for a
    message dead-lettered where the producer put it."""
    routed.process(seed_bytes(), b"USDT", INPUT, HOMES["USDT"], 3)
    long_key = bytes(range(256)) * 8  # 2 KiB, not UTF-8
    forwarded = routed.process(seed_bytes(fill_price="28300"), long_key, INPUT, 0, 41)  # a conflict
    assert forwarded.forward is not None and forwarded.headers is not None
    emitted = routed.process(forwarded.forward, b"USDT", REPARTITION, forwarded.home, 9, forwarded.headers)
    assert emitted.error == codec.CONFLICTING_DUPLICATE and emitted.dead_letter is not None
    letter = json.loads(emitted.dead_letter)
    assert letter["key_length"] == len(long_key)
    assert letter["key_sha256"] == hashlib.sha256(long_key).hexdigest()
    assert base64.b64decode(letter["key"]) == long_key[: codec.DEAD_LETTER_KEY_LIMIT]
    direct = routed.process(b"oops", long_key, INPUT, 0, 42)  # dead-lettered where it was read
    assert direct.dead_letter is not None
    read_there = json.loads(direct.dead_letter)
    assert (read_there["key_length"], read_there["key_sha256"]) == (
        letter["key_length"],
        letter["key_sha256"],
    )


@pytest.mark.parametrize("header", [b"12", b"x:" + b"0" * 64, b"2048:" + b"g" * 64, b"2048:abc", b""])
def test_an_unreadable_key_summary_is_left_out(routed: Pipeline, header: bytes) -> None:
    headers = [
        (SOURCE_HEADER, b"liquidation-fills:0:5"),
        (SOURCE_KEY_HEADER, b"k"),
        (SOURCE_KEY_SUMMARY_HEADER, header),
    ]
    emitted = routed.process(b"oops", b"USDT", REPARTITION, 1, 9, headers)
    assert emitted.dead_letter is not None
    letter = json.loads(emitted.dead_letter)
    assert "key_length" not in letter and "key_sha256" not in letter
    assert letter["key"] == "k"


def test_a_large_fill_is_forwarded_compact(routed: Pipeline, decoder: FillDecoder) -> None:
    """Its headers would not fit beside a message near the broker's limit: the fill is re-encoded."""
    raw = seed_bytes(padding="x" * codec.DEAD_LETTER_VALUE_LIMIT)
    assert len(raw) > codec.DEAD_LETTER_VALUE_LIMIT
    emitted = routed.process(raw, b"USDT", INPUT, 0, 7)
    assert emitted.forward is not None
    assert len(emitted.forward) < 1000
    fill = decoder.decode(raw)
    assert not isinstance(fill, codec.Rejection)
    assert emitted.forward == codec.encode_fill(fill)
    assert decoder.decode(emitted.forward) == fill
    assert emitted.home == HOMES["USDT"]


def test_a_fill_at_the_limit_is_forwarded_as_it_came(routed: Pipeline) -> None:
    short = seed_bytes(padding="")
    raw = seed_bytes(padding="x" * (codec.DEAD_LETTER_VALUE_LIMIT - len(short)))
    assert len(raw) == codec.DEAD_LETTER_VALUE_LIMIT
    assert routed.process(raw, b"USDT", INPUT, 0, 7).forward == raw


def test_forwarded_then_folded_at_home_equals_folding_directly(
    routed: Pipeline, decoder: FillDecoder
) -> None:
    direct = Pipeline(decoder, Ledger(), clock_ms=lambda: CLOCK_MS)
    messages = [
        seed_bytes(),
        seed_bytes(fill_id="2", fill_price="27000", unfilled_quantity="0.5"),
        seed_bytes(fill_id="3", margin_currency="BTC", symbol="BTCUSD", contract_type="inverse"),
        seed_bytes(),  # an identical duplicate
    ]
    for offset, raw in enumerate(messages):
        expected = direct.process(raw, b"k", INPUT, 0, offset)
        emitted = routed.process(raw, b"k", INPUT, 0, offset)
        if emitted.forward is not None:
            assert emitted.headers is not None
            emitted = routed.process(
                emitted.forward, b"k", REPARTITION, emitted.home, offset, emitted.headers
            )
        assert emitted._values()[:5] == expected._values()[:5]
    assert routed.ledger.funds == direct.ledger.funds


def test_no_routing_without_home(decoder: FillDecoder) -> None:
    pipeline = Pipeline(decoder, Ledger(), clock_ms=lambda: CLOCK_MS, routed_topic=INPUT)
    for partition in range(3):
        emitted = pipeline.process(seed_bytes(fill_id=str(partition)), b"USDT", INPUT, partition, 0)
        assert emitted.delta is not None
        assert emitted.forward is None
    assert pipeline.ledger.funds["USDT"].fills == 3


def test_no_routing_without_a_routed_topic(decoder: FillDecoder) -> None:
    pipeline = Pipeline(decoder, Ledger(), clock_ms=lambda: CLOCK_MS, home=HOMES.__getitem__)
    emitted = pipeline.process(seed_bytes(), b"USDT", INPUT, 0, 0)
    assert emitted.delta is not None
    assert emitted.forward is None


@pytest.mark.parametrize("partition", [0, 1, 2])
def test_the_repartition_topic_never_forwards(routed: Pipeline, partition: int) -> None:
    """Whatever partition it arrives on: a fill forwarded once is folded, never bounced again."""
    emitted = routed.process(seed_bytes(fill_id=str(partition)), b"USDT", REPARTITION, partition, 0)
    assert emitted.delta is not None
    assert emitted.forward is None


def test_a_rejected_message_is_dead_lettered_where_it_was_read(routed: Pipeline) -> None:
    """With no fill there is no fund, so no home: the reading partition dead-letters it."""
    emitted = routed.process(seed_bytes(quantity=DELETE), b"USDT", INPUT, 0, 12)
    assert emitted.forward is None
    assert (emitted.fund, emitted.home, emitted.headers, emitted.error) == (None, -1, None, "invalid_event")
    assert emitted.dead_letter is not None
    letter = json.loads(emitted.dead_letter)
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (INPUT, 0, 12)


def test_dead_letter_of_a_forwarded_fill_names_where_the_producer_put_it(routed: Pipeline) -> None:
    routed.process(seed_bytes(), b"USDT", INPUT, HOMES["USDT"], 3)
    raw = seed_bytes(fill_price="28300")  # conflicts with the fill folded above
    forwarded = routed.process(raw, b"USDT-key", INPUT, 0, 41)
    assert forwarded.forward is not None
    assert forwarded.headers is not None
    emitted = routed.process(forwarded.forward, b"USDT", REPARTITION, forwarded.home, 9, forwarded.headers)
    assert (emitted.fund, emitted.symbol, emitted.delta, emitted.forward) == ("USDT", "BTCUSDT", None, None)
    assert emitted.error == codec.CONFLICTING_DUPLICATE
    assert emitted.dead_letter_key == b"USDT-key"
    assert emitted.dead_letter is not None
    letter = json.loads(emitted.dead_letter)
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (INPUT, 0, 41)
    assert letter["key"] == "USDT-key"
    assert letter["value"] == raw.decode()
    assert letter["error"] == codec.CONFLICTING_DUPLICATE


def test_dead_letter_of_a_forwarded_message_without_a_key_has_none(routed: Pipeline) -> None:
    """Not the re-partition record's own key (the fund), which the producer did not write."""
    headers = [(SOURCE_HEADER, b"liquidation-fills:2:77")]
    emitted = routed.process(b"oops", b"USDT", REPARTITION, 1, 9, headers)
    assert emitted.dead_letter_key is None
    assert emitted.dead_letter is not None
    letter = json.loads(emitted.dead_letter)
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"], letter["key"]) == (
        INPUT,
        2,
        77,
        None,
    )


def test_dead_letter_reads_the_origin_headers_among_others(routed: Pipeline) -> None:
    headers = [
        ("traceparent", b"00-abc-def-01"),
        (SOURCE_HEADER, b"liquidation-fills:0:5"),
        ("other", b"x"),
        (SOURCE_KEY_HEADER, b"\xff\xfe"),
    ]
    emitted = routed.process(b"oops", b"USDT", REPARTITION, 1, 9, headers)
    assert emitted.dead_letter_key == b"\xff\xfe"
    assert emitted.dead_letter is not None
    letter = json.loads(emitted.dead_letter)
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (INPUT, 0, 5)
    assert base64.b64decode(letter["key"]) == b"\xff\xfe"


def test_headers_without_an_origin_leave_the_dead_letter_as_read(routed: Pipeline) -> None:
    emitted = routed.process(b"oops", b"USDT", REPARTITION, 1, 9, [("traceparent", b"00-abc-def-01")])
    assert emitted.dead_letter_key == b"USDT"
    assert emitted.dead_letter is not None
    letter = json.loads(emitted.dead_letter)
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"], letter["key"]) == (
        REPARTITION,
        1,
        9,
        "USDT",
    )


def test_at_most_one_of_delta_dead_letter_and_forward(routed: Pipeline) -> None:
    outcomes = [
        routed.process(seed_bytes(), b"USDT", INPUT, 1, 0),  # delta
        routed.process(seed_bytes(fill_id="2"), b"USDT", INPUT, 0, 1),  # forward
        routed.process(b"oops", b"USDT", INPUT, 0, 2),  # dead letter
        routed.process(seed_bytes(fill_price="28300"), b"USDT", INPUT, 1, 3),  # conflicting: dead letter
        routed.process(seed_bytes(), b"USDT", INPUT, 1, 4),  # duplicate: nothing
    ]
    produced = [
        tuple(name for name in ("delta", "dead_letter", "forward") if getattr(emitted, name) is not None)
        for emitted in outcomes
    ]
    assert produced == [("delta",), ("forward",), ("dead_letter",), ("dead_letter",), ()]
