"""Outputs as bytes (SPEC section 4): deltas and triggers byte for byte, amounts at the fund's places,
bounded dead letters, and the canonical text of a fill."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given

from processor import codec
from processor.codec import DeadLetter, FillDecoder, Rejection
from processor.domain.events import LiquidationFill
from processor.domain.fold import apply
from processor.domain.ledger import Ledger
from processor.domain.state import EXACT, FundRules, FundState
from processor.simulate import fills as simulated_fills
from tests.conftest import EXAMPLES_DIR
from tests.strategies import BASE_TIMESTAMP, DELETE, FillEvent, fill_events, make_fill, seed_bytes
from tests.unit.codec.support import DECODER, STATE_KEYS, accepted, example

D = Decimal
DELTA_KEYS = [
    "delta_id",
    "fund",
    "margin_currency",
    "symbol",
    "liquidation_id",
    "fill_id",
    "type",
    "gross_pnl",
    "fee",
    "net",
    "amount",
    "shortfall",
    "balance_before",
    "balance_after",
    "sequence",
    "timestamp",
    "version",
]
TRIGGER_KEYS = [
    "trigger_id",
    "fund",
    "margin_currency",
    "symbol",
    "liquidation_id",
    "fill_id",
    "reason",
    "liquidated_side",
    "deleverage_side",
    "bankruptcy_price",
    "quantity",
    "unfilled_quantity",
    "shortfall",
    "fund_balance",
    "sequence",
    "timestamp",
    "version",
]


DELTA_AMOUNTS = ("gross_pnl", "fee", "net", "amount", "shortfall", "balance_before", "balance_after")

SEED_DELTA_BYTES = (
    b'{"delta_id":"fill-0001","fund":"USDT","margin_currency":"USDT","symbol":"BTCUSDT",'
    b'"liquidation_id":"liq-0001","fill_id":"fill-0001","type":"liquidation_surplus","gross_pnl":"200.00000000",'
    b'"fee":"0.50000000","net":"199.50000000","amount":"199.50000000","shortfall":"0.00000000",'
    b'"balance_before":"0.00000000","balance_after":"199.50000000","sequence":1,"timestamp":1700000000000,'
    b'"version":1}'
)


def test_seed_delta_exact_bytes(decoder: FillDecoder) -> None:
    outcome = Ledger().fold(accepted(decoder, seed_bytes()))
    assert outcome.delta is not None
    assert codec.encode_delta(outcome.delta) == SEED_DELTA_BYTES
    assert json.loads(SEED_DELTA_BYTES) == example("fund_delta.v1.seed")


def test_loss_delta_and_trigger_match_the_examples(decoder: FillDecoder) -> None:
    ledger = Ledger()
    ledger.fold(accepted(decoder, (EXAMPLES_DIR / "liquidation_fill.v1.seed.json").read_bytes()))
    outcome = ledger.fold(
        accepted(decoder, (EXAMPLES_DIR / "liquidation_fill.v1.short_loss.json").read_bytes())
    )
    assert outcome.delta is not None
    assert outcome.trigger is not None
    delta = json.loads(codec.encode_delta(outcome.delta))
    trigger = json.loads(codec.encode_trigger(outcome.trigger, ledger.policy("USDT")))
    assert delta == example("fund_delta.v1.bankruptcy_loss")
    assert trigger == example("adl_trigger.v1.insufficient_fund")
    assert list(delta) == DELTA_KEYS
    assert list(trigger) == TRIGGER_KEYS


def test_no_liquidity_trigger_matches_the_example(decoder: FillDecoder) -> None:
    ledger = Ledger()
    ledger.fold(accepted(decoder, (EXAMPLES_DIR / "liquidation_fill.v1.seed.json").read_bytes()))
    ledger.fold(accepted(decoder, (EXAMPLES_DIR / "liquidation_fill.v1.short_loss.json").read_bytes()))
    outcome = ledger.fold(
        accepted(decoder, (EXAMPLES_DIR / "liquidation_fill.v1.unfilled.json").read_bytes())
    )
    assert outcome.trigger is not None
    trigger = json.loads(codec.encode_trigger(outcome.trigger, ledger.policy("USDT")))
    assert trigger == example("adl_trigger.v1.no_liquidity")


def test_output_key_order_is_fixed() -> None:
    outcome = Ledger().fold(make_fill(fill_price="27000", unfilled_quantity="1"))
    assert outcome.delta is not None
    assert outcome.trigger is not None
    policy = FundRules().policy_for("USDT")
    assert list(json.loads(codec.encode_delta(outcome.delta))) == DELTA_KEYS
    assert list(json.loads(codec.encode_trigger(outcome.trigger, policy))) == TRIGGER_KEYS
    assert list(codec.state_document(outcome.state)) == STATE_KEYS
    # orjson keeps insertion order; the raw bytes must list the keys in that order too
    raw = codec.encode_delta(outcome.delta).decode()
    assert [raw.index(f'"{key}":') for key in DELTA_KEYS] == sorted(
        raw.index(f'"{key}":') for key in DELTA_KEYS
    )


@pytest.mark.parametrize("places", [8, 10, 2, 18])
def test_amounts_carry_exactly_p_places(places: int) -> None:
    rules = FundRules(precision={"BTC": places}, initial_balance={"BTC": D("1.5")})
    ledger = Ledger(rules)
    policy = ledger.policy("BTC")
    fills = [
        make_fill(
            fill_id="a",
            margin_currency="BTC",
            symbol="BTCUSD",
            contract_type="inverse",
            contract_size="100",
            bankruptcy_price="25000",
            fill_price="25100",
            quantity="50",
            fee="0.00001",
        ),
        make_fill(
            fill_id="b",
            margin_currency="BTC",
            symbol="ETHUSD",
            side="short",
            bankruptcy_price="1",
            fill_price="3",
            quantity="1",
            unfilled_quantity="2",
            fee="0",
        ),
        make_fill(
            fill_id="c",
            margin_currency="BTC",
            symbol="BTCUSD",
            fill_price="28000",
            quantity="0",
            unfilled_quantity="1",
            fee="0",
        ),
    ]
    pattern = re.compile(rf"^-?[0-9]+\.[0-9]{{{places}}}$")
    for fill in fills:
        outcome = ledger.fold(fill)
        assert outcome.delta is not None
        delta = json.loads(codec.encode_delta(outcome.delta))
        for name in DELTA_AMOUNTS:
            assert pattern.fullmatch(delta[name]), (name, delta[name])
        if outcome.trigger is not None:
            trigger = json.loads(codec.encode_trigger(outcome.trigger, policy))
            for name in ("bankruptcy_price", "quantity", "unfilled_quantity", "shortfall", "fund_balance"):
                assert pattern.fullmatch(trigger[name]), (name, trigger[name])
    state = codec.state_document(ledger.funds["BTC"])
    for name in ("balance", "total_surplus", "total_paid", "total_shortfall"):
        assert pattern.fullmatch(state[name]), (name, state[name])
    for value in state["by_symbol"].values():
        assert pattern.fullmatch(value)


def test_btc_at_ten_places_exact_values() -> None:
    # 0.000796812749003984... -> q10 0.0007968127; fee 0.00001 -> net 0.0007868127
    rules = FundRules(precision={"BTC": 10})
    outcome = Ledger(rules).fold(
        make_fill(
            margin_currency="BTC",
            symbol="BTCUSD",
            contract_type="inverse",
            contract_size="100",
            bankruptcy_price="25000",
            fill_price="25100",
            quantity="50",
            fee="0.00001",
        )
    )
    assert outcome.delta is not None
    delta = json.loads(codec.encode_delta(outcome.delta))
    assert (delta["gross_pnl"], delta["fee"], delta["net"]) == (
        "0.0007968127",
        "0.0000100000",
        "0.0007868127",
    )
    assert delta["balance_before"] == "0.0000000000"


def test_trigger_values_exact_with_more_places_keep_them() -> None:
    # unfilled 0.123456789 is exact with 9 places; quantity = q(1 x 1000.5/1000.5) + 0.123456789
    outcome = Ledger().fold(make_fill(fill_price="27000", unfilled_quantity="0.123456789"))
    assert outcome.trigger is not None
    trigger = json.loads(codec.encode_trigger(outcome.trigger, FundRules().policy_for("USDT")))
    assert trigger["unfilled_quantity"] == "0.123456789"
    assert trigger["quantity"] == "1.123456789"
    assert trigger["bankruptcy_price"] == "28000.00000000"


def test_trigger_values_in_exponent_notation_render_fixed_point(decoder: FillDecoder) -> None:
    ledger = Ledger()
    outcome = ledger.fold(
        accepted(decoder, seed_bytes(bankruptcy_price="2.8E+4", fill_price="2.7e4", unfilled_quantity="1e-9"))
    )
    assert outcome.trigger is not None
    trigger = json.loads(codec.encode_trigger(outcome.trigger, ledger.policy("USDT")))
    assert trigger["bankruptcy_price"] == "28000.00000000"
    assert trigger["unfilled_quantity"] == "0.000000001"


def test_trigger_values_with_trailing_zeros_render_with_p_places(decoder: FillDecoder) -> None:
    ledger = Ledger()
    outcome = ledger.fold(
        accepted(
            decoder,
            seed_bytes(
                bankruptcy_price="28000.000000000000", fill_price="27000", unfilled_quantity="2.50000000000"
            ),
        )
    )
    assert outcome.trigger is not None
    trigger = json.loads(codec.encode_trigger(outcome.trigger, ledger.policy("USDT")))
    assert trigger["bankruptcy_price"] == "28000.00000000"
    assert trigger["unfilled_quantity"] == "2.50000000"
    assert trigger["quantity"] == "3.50000000"


_EXACT_SPELLINGS = [
    "0", "-0", "0.0", "5", "-5", "5.0", "2.5", "2.50", "2.5000000000", "28000.0591", "0.00000001",
    "0.000000001", "1E+2", "1e-9", "-1.5", "123456789012345678.123456789012345678", "1E-7", "0E-8",
    "0E+3", "-0.000", "100", "0.1234567890123456789",
]  # fmt: skip


@pytest.mark.parametrize("places", [0, 1, 2, 8, 10, 18, 40])
@pytest.mark.parametrize("spelling", _EXACT_SPELLINGS)
def test_trigger_values_read_as_rounding_defines_them(places: int, spelling: str) -> None:
    """The trigger writer's ``_exact`` (text padded with zeros when it has few enough places) gives
    what its definition does: the value rounded to the fund's places and written, when rounding
    keeps it; else its shortest exact fixed-point text."""
    from processor.codec.encoding import _exact

    policy = FundRules(default_precision=places).policy_for("USDT")
    value = D(spelling)
    rounded = policy.q(value)
    expected = codec.amount_text(rounded) if rounded == value else format(value.normalize(EXACT), "f")
    assert _exact(value, policy) == expected


def test_dead_letter_keeps_utf8_value_as_text() -> None:
    letter = DeadLetter(
        "invalid_event",
        "field 'quantity' is missing",
        "liquidation-fills",
        3,
        42,
        b'{"fill_id": "\xc3\xa9"}',
        b"USDT",
        1_700_000_400_000,
    )
    document = json.loads(codec.encode_dead_letter(letter))
    assert list(document) == [
        "error",
        "detail",
        "source_topic",
        "source_partition",
        "source_offset",
        "value",
        "key",
        "timestamp",
        "version",
    ]
    assert document == {
        "error": "invalid_event",
        "detail": "field 'quantity' is missing",
        "source_topic": "liquidation-fills",
        "source_partition": 3,
        "source_offset": 42,
        "value": '{"fill_id": "é"}',
        "key": "USDT",
        "timestamp": 1_700_000_400_000,
        "version": 1,
    }


def test_dead_letter_base64_for_bytes_that_are_not_utf8() -> None:
    raw = b'{"fill_id": "fill-\xff\xfe07"}'
    letter = DeadLetter("invalid_json", "not UTF-8", "liquidation-fills", 0, 0, raw, None, 1)
    document = json.loads(codec.encode_dead_letter(letter))
    assert "value" not in document
    assert base64.b64decode(document["value_base64"], validate=True) == raw
    assert document["key"] is None


def test_dead_letter_of_a_null_value_and_a_binary_key() -> None:
    letter = DeadLetter("invalid_json", "no value", "t", None, 7, None, b"\xff", 1)
    document = json.loads(codec.encode_dead_letter(letter))
    assert document["value"] == ""
    assert document["source_partition"] is None
    assert isinstance(document["key"], str)


VALUE_LIMIT = codec.DEAD_LETTER_VALUE_LIMIT
KEY_LIMIT = codec.DEAD_LETTER_KEY_LIMIT
BROKER_MESSAGE_LIMIT = 1_048_588  # Kafka's default message.max.bytes


def dead_letter_of(value: bytes | None, key: bytes | None = b"USDT", detail: str = "bad") -> dict[str, Any]:
    letter = DeadLetter("invalid_json", detail, "liquidation-fills", 0, 9, value, key, 1)
    encoded = codec.encode_dead_letter(letter)
    assert len(encoded) + len(codec.dead_letter_key(key) or b"") < BROKER_MESSAGE_LIMIT // 2
    document: dict[str, Any] = json.loads(encoded)
    return document


@pytest.mark.parametrize("size", [0, 1, VALUE_LIMIT - 1, VALUE_LIMIT])
def test_dead_letter_keeps_a_value_up_to_the_limit_whole(size: int) -> None:
    value = b"x" * size
    document = dead_letter_of(value)
    assert document["value"] == value.decode()
    assert "value_length" not in document and "value_sha256" not in document


@pytest.mark.parametrize(
    "value",
    [
        b"x" * (VALUE_LIMIT + 1),
        b"\x01" * 1_000_000,  # six bytes each once escaped: 6 MB of JSON if copied whole
        b'"\\' * 333_333,
        b'{"fill_id": "' + b"x" * 999_000 + b'"}',
    ],
    ids=["one-over", "control-characters", "quotes-and-backslashes", "a-1mb-fill"],
)
def test_dead_letter_of_a_long_utf8_value_keeps_its_first_bytes(value: bytes) -> None:
    document = dead_letter_of(value)
    kept = document["value"].encode()
    assert kept == value[:VALUE_LIMIT]
    assert document["value_length"] == len(value)
    assert document["value_sha256"] == hashlib.sha256(value).hexdigest()
    assert "value_base64" not in document


def test_dead_letter_cuts_a_long_text_back_to_a_whole_character() -> None:
    value = b'{"' + "\u20ac".encode() * 400_000  # 3-byte characters: the limit falls inside one
    document = dead_letter_of(value)
    kept = document["value"].encode()
    assert value.startswith(kept)
    assert VALUE_LIMIT - 3 < len(kept) < VALUE_LIMIT
    assert document["value_length"] == len(value)


def test_dead_letter_of_a_long_value_that_is_not_utf8_keeps_base64_of_its_first_bytes() -> None:
    value = b"x" * 900_000 + b"\xff"  # only the part that is cut away is not text
    document = dead_letter_of(value)
    assert "value" not in document
    assert base64.b64decode(document["value_base64"], validate=True) == value[:VALUE_LIMIT]
    assert document["value_sha256"] == hashlib.sha256(value).hexdigest()
    assert document["value_length"] == len(value)


@pytest.mark.parametrize("key", [b"k" * (KEY_LIMIT + 1), b"\xff" * 900_000])
def test_dead_letter_keeps_the_first_bytes_of_a_long_key(key: bytes) -> None:
    document = dead_letter_of(b"{", key=key)
    kept = document["key"].encode() if key.startswith(b"k") else base64.b64decode(document["key"])
    assert kept == key[:KEY_LIMIT]
    assert document["key_length"] == len(key)
    assert document["key_sha256"] == hashlib.sha256(key).hexdigest()
    assert codec.dead_letter_key(key) == key[:KEY_LIMIT]


def test_dead_letter_record_key_is_the_input_key_when_short() -> None:
    assert codec.dead_letter_key(None) is None
    assert codec.dead_letter_key(b"USDT") == b"USDT"
    assert codec.dead_letter_key(b"k" * KEY_LIMIT) == b"k" * KEY_LIMIT


def test_dead_letter_detail_is_bounded() -> None:
    document = dead_letter_of(b"{", detail="d" * 100_000)
    assert len(document["detail"]) == codec.DEAD_LETTER_DETAIL_LIMIT
    assert document["detail"].endswith("...")


def test_dead_letters_of_megabyte_messages_fit_the_broker(decoder: FillDecoder) -> None:
    """Every kind of 1 MB message (the broker's limit) yields a dead letter well under 1 MB."""
    for value in (
        seed_bytes(fill_id="x" * 999_000),
        seed_bytes(symbol="\x01" * 999_000),
        b"\x01" * 1_000_000,
        b"\xff" * 1_000_000,
        b"[" * 1_000_000,
    ):
        rejection = decoder.decode(value)
        assert isinstance(rejection, Rejection)
        encoded = codec.encode_rejection(rejection, value, b"USDT", "liquidation-fills", 0, 1, 1)
        assert len(encoded) < 500_000


def test_encoding_is_independent_of_how_the_fill_was_spelled(decoder: FillDecoder) -> None:
    spelled = [
        seed_bytes(),
        seed_bytes(fill_price=28200, bankruptcy_price=28000.0, fee=0.5, quantity=1),
        seed_bytes(
            fill_price="2.82e4", fee="5E-1", contract_type=DELETE, version=None, unfilled_quantity=None
        ),
    ]
    encoded = set()
    for raw in spelled:
        fill = accepted(decoder, raw)
        outcome = apply(
            FundState.opened("USDT", FundRules().policy_for("USDT")),
            fill,
            FundRules().policy_for("USDT"),
            None,
        )
        assert outcome.delta is not None
        encoded.add(codec.encode_delta(outcome.delta))
    assert encoded == {SEED_DELTA_BYTES}
    assert BASE_TIMESTAMP == 1_700_000_000_000


@given(fill_events(extremes=True))
def test_encode_fill_decodes_to_the_same_fill(event: FillEvent) -> None:
    fill = DECODER.decode(event.encode())
    assert isinstance(fill, LiquidationFill)
    assert DECODER.decode(codec.encode_fill(fill)) == fill


def test_encode_fill_drops_unknown_fields() -> None:
    raw = seed_bytes(padding="x" * 1_000_000)
    fill = accepted(DECODER, raw)
    assert len(codec.encode_fill(fill)) < 400


# --- the delta writer against its reference document ----------------------------------------------

AWKWARD_TEXTS = ['"', "\\", "\x00", "\x1f", "\x7f", "é", "\u2028", "emoji \U0001f600", 'a"b\\c\nd', "x" * 100]


def test_the_writers_write_the_reference_documents_for_every_kind_of_fill() -> None:
    """``encode_delta`` and ``encode_trigger`` write text, not a dictionary: they must equal
    ``orjson.dumps`` of ``delta_document`` and ``trigger_document`` byte for byte, for ids and
    symbols that need escaping, every contract type, surpluses, losses, zero and tiny amounts, and
    other precisions."""
    rules = FundRules(precision={"BTC": 10, "ETH": 2}, initial_balance={"USDT": D("1000")})
    ledger = Ledger(rules)
    deltas, triggers = [], []
    for number, simulated in enumerate(simulated_fills(20_000, 5)):
        text = AWKWARD_TEXTS[number % len(AWKWARD_TEXTS)]
        document = dict(simulated)
        if number % 3 == 0:
            document.update(fill_id=f"{text}{number}", liquidation_id=text, symbol=f"{text[:50]}USDT")
        decoded = DECODER.decode(orjson.dumps(document))
        assert isinstance(decoded, LiquidationFill), decoded
        outcome = ledger.fold(decoded)
        if outcome.delta is not None:
            deltas.append(outcome.delta)
        if outcome.trigger is not None:
            triggers.append(outcome.trigger)
    for fill_fee, price in [("0", "28000"), ("0.000000001", "28000.000000001"), ("5E-9", "27999.99999999")]:
        outcome = ledger.fold(make_fill(fill_id=f"tiny-{fill_fee}", fee=D(fill_fee), fill_price=D(price)))
        assert outcome.delta is not None
        deltas.append(outcome.delta)
    assert len(deltas) > 19_000
    assert {delta.type for delta in deltas} == {"liquidation_surplus", "bankruptcy_loss"}
    for delta in deltas:
        assert codec.encode_delta(delta) == orjson.dumps(codec.delta_document(delta)), delta
    assert len(triggers) > 1_000
    assert {trigger.reason for trigger in triggers} == {"insufficient_fund", "no_liquidity"}
    for trigger in triggers:
        policy = ledger.policy(trigger.fund)
        assert codec.encode_trigger(trigger, policy) == orjson.dumps(codec.trigger_document(trigger, policy))


def test_the_delta_writer_reuses_a_text_only_for_the_very_same_number() -> None:
    """The writer keeps the last balance and shortfall it wrote, with their texts, for the next
    delta that starts from that very object; an equal number of another exponent is written anew."""
    first = Ledger().fold(make_fill(fill_id="a")).delta
    assert first is not None
    follower = first._replace(fill_id="b", balance_before=first.balance_after)
    assert follower.balance_before is first.balance_after
    wider = first.balance_after.quantize(D("1E-12"))  # the same number, 12 places
    equal = first._replace(fill_id="c", balance_before=wider, shortfall=D("0"))
    assert equal.balance_before == first.balance_after
    assert equal.balance_before.as_tuple() != first.balance_after.as_tuple()
    for delta in (first, follower, equal, first, equal):
        assert codec.encode_delta(delta) == orjson.dumps(codec.delta_document(delta)), delta
    written = json.loads(codec.encode_delta(equal))
    assert (written["shortfall"], written["balance_before"]) == ("0", format(wider, "f"))
    assert len(written["balance_before"].partition(".")[2]) == 12
