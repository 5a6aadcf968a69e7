"""The serialization seam: SPEC section 2 (what is a valid fill) and section 4 (how outputs are written)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given

from processor import codec
from processor.codec import DeadLetter, FillDecoder, Rejection
from processor.domain.events import LiquidationFill
from processor.domain.fold import apply
from processor.domain.ledger import Ledger
from processor.domain.state import FundRules, FundState
from tests.conftest import EXAMPLES_DIR
from tests.strategies import (
    BASE_TIMESTAMP,
    DECIMAL_FIELDS,
    DELETE,
    REQUIRED_FIELDS,
    FillEvent,
    InvalidMessage,
    fill_events,
    invalid_messages,
    make_fill,
    seed_bytes,
    seed_document,
)

D = Decimal
DECODER = FillDecoder.from_schema_dir()
POSITIVE_DECIMALS = ("contract_size", "bankruptcy_price", "fill_price")
NON_NEGATIVE_DECIMALS = ("quantity", "unfilled_quantity", "fee")
STRING_FIELDS = ("fill_id", "liquidation_id", "symbol", "margin_currency")


def names(detail: str, field: str) -> bool:
    """The detail names ``field`` as a word (so 'quantity' is not found inside 'unfilled_quantity')."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(field)}(?![A-Za-z0-9_])", detail) is not None


def accepted(decoder: FillDecoder, raw: bytes) -> LiquidationFill:
    result = decoder.decode(raw)
    assert isinstance(result, LiquidationFill), result
    return result


def rejected(decoder: FillDecoder, raw: bytes | None, error: str, field: str | None = None) -> Rejection:
    result = decoder.decode(raw)
    assert isinstance(result, Rejection), result
    assert result.error == error, result
    assert result.detail
    if field is not None:
        assert names(result.detail, field), result.detail
    return result


def raw_with(document: dict[str, Any], **numbers: str) -> bytes:
    """Encode ``document`` with some fields set to raw JSON number text (e.g. 1e400) Python cannot hold."""
    for name in numbers:
        document[name] = f"@@{name}@@"
    text = json.dumps(document)
    for name, literal in numbers.items():
        text = text.replace(f'"@@{name}@@"', literal)
    return text.encode()


# --- valid events ---------------------------------------------------------------------------------


def test_seed_event_decodes_to_the_fill(decoder: FillDecoder) -> None:
    assert accepted(decoder, seed_bytes()) == make_fill()


def test_defaults_apply_to_absent_optional_fields(decoder: FillDecoder) -> None:
    fill = accepted(
        decoder,
        seed_bytes(
            contract_type=DELETE, contract_size=DELETE, unfilled_quantity=DELETE, fee=DELETE, version=DELETE
        ),
    )
    assert fill.contract_type == "linear"
    assert fill.contract_size == D(1)
    assert fill.unfilled_quantity == D(0)
    assert fill.fee == D(0)
    assert fill.version == 1


@pytest.mark.parametrize(
    ("field", "default"),
    [
        ("contract_type", "linear"),
        ("contract_size", D(1)),
        ("unfilled_quantity", D(0)),
        ("fee", D(0)),
        ("version", 1),
    ],
)
def test_null_optional_field_means_its_default(decoder: FillDecoder, field: str, default: object) -> None:
    fill = accepted(decoder, seed_bytes(**{field: None}))
    assert getattr(fill, field) == default


def test_version_1_as_a_json_float_is_version_1(decoder: FillDecoder) -> None:
    assert accepted(decoder, seed_bytes(version=1.0)).version == 1


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("28200.5", "28200.5"),
        ("0.1", "0.1"),
        ("28200", "28200"),
        ("28200.0", "28200"),
        ("1e-7", "0.0000001"),
        ("1.5E+3", "1500"),
        ("1000000000000000", "1000000000000000"),
        ("1e15", "1000000000000000"),
        ("0.30000000000000004", "0.30000000000000004"),
    ],
)
def test_json_numbers_are_read_from_their_shortest_decimal_text(
    decoder: FillDecoder, number: str, expected: str
) -> None:
    fill = accepted(decoder, raw_with(seed_document(), fill_price=number))
    assert fill.fill_price == D(expected)
    assert isinstance(fill.fill_price, Decimal)


def test_json_number_fields_equal_their_string_spelling(decoder: FillDecoder) -> None:
    as_numbers = accepted(decoder, (EXAMPLES_DIR / "liquidation_fill.v1.numbers.json").read_bytes())
    assert as_numbers.fill_price == D("27990.5")
    assert as_numbers.quantity == D("0.25")
    assert as_numbers.fee == D("0.1")
    assert as_numbers.contract_size == D("1")
    assert as_numbers.unfilled_quantity == D("0")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.82e4", "28200"),
        ("2.8200E+4", "28200"),
        ("28200.5e0", "28200.5"),
        ("+28200", "28200"),
        ("282005e-1", "28200.5"),
    ],
)
def test_decimal_strings_may_use_exponent_notation(decoder: FillDecoder, text: str, expected: str) -> None:
    assert accepted(decoder, seed_bytes(fill_price=text)).fill_price == D(expected)


def test_limits_themselves_are_valid(decoder: FillDecoder) -> None:
    fill = accepted(
        decoder,
        seed_bytes(
            fill_id="f" * 128,
            liquidation_id="l" * 128,
            symbol="S" * 64,
            margin_currency="A" * 16,
            bankruptcy_price="1000000000000000",
            fill_price="0.000000000000000001",
            quantity="999999999999999.999999999999999999",
            fee="1E-18",
            timestamp=2**63 - 1,
        ),
    )
    assert fill.fill_id == "f" * 128
    assert fill.bankruptcy_price == D(10) ** 15
    assert fill.fill_price == D("1E-18")
    assert fill.timestamp == 2**63 - 1


def test_ten_to_the_fifteen_as_a_json_number_is_valid(decoder: FillDecoder) -> None:
    assert accepted(
        decoder, raw_with(seed_document(), bankruptcy_price="1000000000000000")
    ).bankruptcy_price == D(10**15)


@pytest.mark.parametrize("currency", ["US", "USDT", "1000SHIB", "A" * 16, "BTC2"])
def test_currency_pattern_accepts(decoder: FillDecoder, currency: str) -> None:
    assert accepted(decoder, seed_bytes(margin_currency=currency)).margin_currency == currency


def test_quantity_zero_with_an_unfilled_quantity_is_valid(decoder: FillDecoder) -> None:
    fill = accepted(decoder, seed_bytes(quantity="0", unfilled_quantity="3"))
    assert fill.quantity == 0
    assert fill.unfilled_quantity == D(3)


@pytest.mark.parametrize("spelling", ["-0", "-0.0", "-0e5", -0.0, "0"])
def test_negative_zero_fee_is_zero_and_renders_without_sign(decoder: FillDecoder, spelling: object) -> None:
    fill = accepted(decoder, seed_bytes(fee=spelling))
    assert fill.fee == 0
    assert not fill.fee.is_signed()
    outcome = Ledger().fold(fill)
    assert outcome.delta is not None
    assert json.loads(codec.encode_delta(outcome.delta))["fee"] == "0.00000000"


def test_unknown_extra_fields_are_ignored(decoder: FillDecoder) -> None:
    fill = accepted(
        decoder,
        seed_bytes(
            producer="engine-7",
            nested={"a": [1, 2, {"b": None}]},
            flag=True,
            price_hint=1.5,
            null_field=None,
            big=2**70,
        ),
    )
    assert fill == make_fill()


def test_unicode_identifiers_are_kept(decoder: FillDecoder) -> None:
    fill = accepted(decoder, seed_bytes(fill_id="填充-1 ✓", symbol="BTC/USDT", liquidation_id="\u2028"))
    assert (fill.fill_id, fill.symbol, fill.liquidation_id) == ("填充-1 ✓", "BTC/USDT", "\u2028")


def test_huge_integers_beyond_64_bits_never_raise(decoder: FillDecoder) -> None:
    for raw in [
        raw_with(seed_document(), extra=str(2**200)),
        raw_with(seed_document(), quantity=str(2**70)),
        raw_with(seed_document(), timestamp=str(2**64)),
        raw_with(seed_document(), timestamp=str(-(2**70))),
        raw_with(seed_document(), version=str(2**70)),
        raw_with(seed_document(), fee=str(-(2**100))),
    ]:
        assert isinstance(decoder.decode(raw), (LiquidationFill, Rejection))
    rejected(decoder, raw_with(seed_document(), quantity=str(2**70)), "invalid_event", "quantity")
    rejected(decoder, raw_with(seed_document(), timestamp=str(2**64)), "invalid_event", "timestamp")
    result = decoder.decode(raw_with(seed_document(), version=str(2**70)))
    assert isinstance(result, Rejection)
    assert result.error in ("unsupported_version", "invalid_event")
    assert names(result.detail, "version")


def test_verdicts_do_not_depend_on_earlier_messages(decoder: FillDecoder) -> None:
    # "0" is a valid fee and quantity but not a valid price; a cache of accepted texts must stay per field.
    warm = decoder
    for _ in range(3):
        accepted(warm, seed_bytes(fee="0", unfilled_quantity="2", quantity="0"))
    rejected(warm, seed_bytes(bankruptcy_price="0"), "invalid_event", "bankruptcy_price")
    rejected(warm, seed_bytes(contract_size="0"), "invalid_event", "contract_size")
    rejected(warm, seed_bytes(quantity="0", unfilled_quantity="0"), "invalid_event", "quantity")
    accepted(warm, seed_bytes(margin_currency="BTC"))
    rejected(warm, seed_bytes(margin_currency="btc"), "invalid_event", "margin_currency")


# --- invalid_json ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"{",
        b"{'fill_id': 'x'}",
        b"",
        b"   ",
        seed_bytes()[:-1],
        b'{"a": NaN}',
        b"Infinity",
        b'{"a": 1,}',
        b"\xef\xbb\xbf" + seed_bytes(),
    ],
    ids=[
        "text",
        "open-brace",
        "single-quotes",
        "empty",
        "blank",
        "truncated",
        "nan",
        "infinity",
        "trailing-comma",
        "bom",
    ],
)
def test_not_json_is_invalid_json(decoder: FillDecoder, raw: bytes) -> None:
    result = rejected(decoder, raw, "invalid_json")
    assert "JSON" in result.detail


@pytest.mark.parametrize(
    "raw", [b"\xff\xfe", b'{"fill_id": "\xc3\x28"}', seed_bytes().replace(b"liq", b"l\x80q")]
)
def test_not_utf8_is_invalid_json(decoder: FillDecoder, raw: bytes) -> None:
    result = rejected(decoder, raw, "invalid_json")
    assert "UTF-8" in result.detail


def test_a_null_message_value_is_invalid_json(decoder: FillDecoder) -> None:
    result = rejected(decoder, None, "invalid_json")
    assert "null" in result.detail


# --- invalid_event --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"[]", "array"),
        (b"[1, 2]", "array"),
        (b'"fill"', "string"),
        (b"42", "number"),
        (b"1.5", "number"),
        (b"null", "null"),
        (b"true", "boolean"),
    ],
)
def test_a_non_object_is_invalid_event(decoder: FillDecoder, raw: bytes, kind: str) -> None:
    result = rejected(decoder, raw, "invalid_event")
    assert "object" in result.detail
    assert kind in result.detail


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
def test_each_required_field_missing(decoder: FillDecoder, field: str) -> None:
    result = rejected(decoder, seed_bytes(**{field: DELETE}), "invalid_event", field)
    assert "missing" in result.detail


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
def test_each_required_field_null(decoder: FillDecoder, field: str) -> None:
    result = rejected(decoder, seed_bytes(**{field: None}), "invalid_event", field)
    assert "null" in result.detail


@pytest.mark.parametrize("field", STRING_FIELDS)
@pytest.mark.parametrize("value", [42, 1.5, True, False, [], ["a"], {}, {"a": "b"}])
def test_string_fields_reject_other_types(decoder: FillDecoder, field: str, value: object) -> None:
    rejected(decoder, seed_bytes(**{field: value}), "invalid_event", field)


@pytest.mark.parametrize("field", DECIMAL_FIELDS)
@pytest.mark.parametrize("value", [True, False, [], ["1"], {}, {"value": "1"}])
def test_decimal_fields_reject_booleans_arrays_and_objects(
    decoder: FillDecoder, field: str, value: object
) -> None:
    rejected(decoder, seed_bytes(**{field: value}), "invalid_event", field)


@pytest.mark.parametrize("value", [True, False, "1700000000000", "", 1.5, -1, -(2**63), [], {}, 2**64])
def test_timestamp_must_be_a_non_negative_integer(decoder: FillDecoder, value: object) -> None:
    rejected(decoder, seed_bytes(timestamp=value), "invalid_event", "timestamp")


def test_timestamp_as_an_integral_json_float_is_accepted(decoder: FillDecoder) -> None:
    assert accepted(decoder, seed_bytes(timestamp=1.7e12)).timestamp == 1_700_000_000_000


def test_timestamp_above_the_schema_maximum_is_invalid(decoder: FillDecoder) -> None:
    rejected(decoder, seed_bytes(timestamp=2**63), "invalid_event", "timestamp")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("fill_id", ""),
        ("fill_id", "x" * 129),
        ("liquidation_id", ""),
        ("liquidation_id", "x" * 129),
        ("symbol", ""),
        ("symbol", "S" * 65),
        ("fill_id", "x" * 1_000_000),
    ],
)
def test_string_length_limits(decoder: FillDecoder, field: str, value: str) -> None:
    rejected(decoder, seed_bytes(**{field: value}), "invalid_event", field)


@pytest.mark.parametrize(
    "value",
    [
        "usdt",
        "Usdt",
        "U",
        "A" * 17,
        "USDT\n",
        "\nUSDT",
        "US DT",
        "US-DT",
        "ÜSDT",
        "\uff35\uff33\uff24\uff34",
        "",
    ],
)
def test_margin_currency_pattern(decoder: FillDecoder, value: str) -> None:
    rejected(decoder, seed_bytes(margin_currency=value), "invalid_event", "margin_currency")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("side", "LONG"),
        ("side", "buy"),
        ("side", ""),
        ("side", "long "),
        ("side", 1),
        ("side", True),
        ("contract_type", "perpetual"),
        ("contract_type", "Linear"),
        ("contract_type", ""),
        ("contract_type", 0),
        ("contract_type", ["linear"]),
    ],
)
def test_enums(decoder: FillDecoder, field: str, value: object) -> None:
    rejected(decoder, seed_bytes(**{field: value}), "invalid_event", field)


BAD_DECIMAL_TEXTS = [
    "NaN",
    "nan",
    "sNaN",
    "Infinity",
    "-Infinity",
    "inf",
    "1e400",
    "1E+400",
    "1e-400",
    "",
    " ",
    " 1",
    "1 ",
    "1_000",
    "0x10",
    "1,5",
    "1.2.3",
    "--1",
    "e5",
    "1e",
    ".",
    "٣",
    "\uff11",
    "²",
    "1000000000000001",
    "1000000000000000.000000000001",
    "1e16",
    "0.1234567890123456789",
    "1.5e-18",
]


@pytest.mark.parametrize("field", DECIMAL_FIELDS)
@pytest.mark.parametrize("text", BAD_DECIMAL_TEXTS)
def test_bad_decimal_text(decoder: FillDecoder, field: str, text: str) -> None:
    rejected(decoder, seed_bytes(**{field: text}), "invalid_event", field)


@pytest.mark.parametrize("field", DECIMAL_FIELDS)
@pytest.mark.parametrize("number", ["1e400", "-1e400", "1e16", "1000000000000001", "1.5e-18"])
def test_bad_decimal_json_number(decoder: FillDecoder, field: str, number: str) -> None:
    rejected(decoder, raw_with(seed_document(), **{field: number}), "invalid_event", field)


@pytest.mark.parametrize("field", DECIMAL_FIELDS)
def test_eighteen_places_valid_nineteen_invalid(decoder: FillDecoder, field: str) -> None:
    fill = accepted(decoder, seed_bytes(**{field: "1.123456789012345678"}))
    assert getattr(fill, field) == D("1.123456789012345678")
    rejected(decoder, seed_bytes(**{field: "1.1234567890123456789"}), "invalid_event", field)
    rejected(decoder, seed_bytes(**{field: "1.000000000000000000000"}), "invalid_event", field)


@pytest.mark.parametrize("field", DECIMAL_FIELDS)
@pytest.mark.parametrize("value", ["-1", "-0.000000000000000001", "-1e3", -5, -0.5])
def test_negative_decimals(decoder: FillDecoder, field: str, value: object) -> None:
    rejected(decoder, seed_bytes(**{field: value}), "invalid_event", field)


@pytest.mark.parametrize("field", POSITIVE_DECIMALS)
@pytest.mark.parametrize("value", ["0", "0.0", "-0", "0e10", 0, 0.0])
def test_zero_is_not_a_price_or_contract_size(decoder: FillDecoder, field: str, value: object) -> None:
    rejected(decoder, seed_bytes(**{field: value}), "invalid_event", field)


@pytest.mark.parametrize("unfilled", [DELETE, None, "0", 0, "0.000"])
def test_quantity_zero_without_unfilled_is_invalid(decoder: FillDecoder, unfilled: object) -> None:
    result = rejected(
        decoder, seed_bytes(quantity="0", unfilled_quantity=unfilled), "invalid_event", "quantity"
    )
    assert names(result.detail, "unfilled_quantity")


@pytest.mark.parametrize(
    ("field", "raw_number"),
    [
        ("quantity", '"1e9999999999999999999"'),
        ("fee", '"1e-9999999999999999999"'),
        ("fill_price", "1e9999999999999999999"),
    ],
)
def test_decimal_exponent_beyond_any_range_is_invalid_event(
    decoder: FillDecoder, field: str, raw_number: str
) -> None:
    rejected(decoder, raw_with(seed_document(), **{field: raw_number}), "invalid_event", field)


@pytest.mark.parametrize(
    ("field", "raw_number"),
    [
        ("timestamp", "1e5000"),
        ("timestamp", "1e999999999"),  # as an int: minutes of CPU and gigabytes; judged as a decimal
        ("timestamp", "-1e400"),
        ("timestamp", "1" * 5_000),  # more digits than Python turns into an int
        ("timestamp", "1e19"),
        ("timestamp", "18446744073709551616"),
        ("version", "1e5000"),
        ("version", "1e999999999"),
        ("version", "2" * 5_000),
        ("quantity", "1" * 5_000),
        ("fee", "-" + "1" * 5_000),
        ("fill_id", "1" * 5_000),
        ("side", "1" * 5_000),
    ],
)
def test_integers_beyond_64_bits_are_invalid_event_naming_the_field(
    decoder: FillDecoder, field: str, raw_number: str
) -> None:
    result = rejected(decoder, raw_with(seed_document(), **{field: raw_number}), "invalid_event", field)
    assert len(result.detail) < 400  # an excerpt of the number, not all of it


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", [*DECIMAL_FIELDS, "timestamp", "fill_id", "extra"])
def test_a_bare_nan_or_infinity_is_invalid_json_naming_the_field(
    decoder: FillDecoder, literal: str, field: str
) -> None:
    result = rejected(decoder, raw_with(seed_document(), **{field: literal}), "invalid_json", field)
    assert literal in result.detail


def test_a_nan_nested_in_a_field_is_invalid_json() -> None:
    result = rejected(DECODER, raw_with(seed_document(), extra='[1, {"a": NaN}]'), "invalid_json")
    assert "NaN" in result.detail


def test_a_number_beyond_a_double_is_described_as_a_number(decoder: FillDecoder) -> None:
    result = rejected(decoder, raw_with(seed_document(), fill_id="1e400"), "invalid_event", "fill_id")
    assert "got a number" in result.detail


@given(invalid_messages())
def test_generated_invalid_messages_are_rejected_naming_the_field(message: InvalidMessage) -> None:
    rejected(DECODER, message.raw, message.error, message.field)


# --- versions -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [2, 0, -1, 3, 2.0, 100])
def test_other_versions_are_unsupported(decoder: FillDecoder, version: object) -> None:
    rejected(decoder, seed_bytes(version=version), "unsupported_version", "version")


@pytest.mark.parametrize("version", ["1", "2", "", [1], {"v": 1}, 1.5])
def test_a_non_integer_version_is_invalid_event(decoder: FillDecoder, version: object) -> None:
    rejected(decoder, seed_bytes(version=version), "invalid_event", "version")


def test_version_false_is_rejected(decoder: FillDecoder) -> None:
    rejected(decoder, seed_bytes(version=False), "invalid_event", "version")


def test_version_true_is_rejected(decoder: FillDecoder) -> None:
    result = decoder.decode(seed_bytes(version=True))
    assert isinstance(result, Rejection)
    assert result.error in ("invalid_event", "unsupported_version")
    assert names(result.detail, "version")


def test_unsupported_version_wins_over_other_errors(decoder: FillDecoder) -> None:
    rejected(decoder, seed_bytes(version=2, quantity="NaN"), "unsupported_version", "version")


# --- unknown fields the fast parser cannot read ---------------------------------------------------


@pytest.mark.parametrize("extra", ["1e400", '"\\ud800"', "-1e999"])
def test_unknown_extra_field_beyond_orjson_is_ignored(decoder: FillDecoder, extra: str) -> None:
    assert accepted(decoder, raw_with(seed_document(), extra=extra)) == make_fill()


# --- encoding -------------------------------------------------------------------------------------

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
STATE_KEYS = [
    "fund",
    "balance",
    "total_surplus",
    "total_paid",
    "total_shortfall",
    "fills",
    "duplicates",
    "adl_triggers",
    "sequence",
    "last_timestamp",
    "by_symbol",
]
DELTA_AMOUNTS = ("gross_pnl", "fee", "net", "amount", "shortfall", "balance_before", "balance_after")

SEED_DELTA_BYTES = (
    b'{"delta_id":"fill-0001","fund":"USDT","margin_currency":"USDT","symbol":"BTCUSDT",'
    b'"liquidation_id":"liq-0001","fill_id":"fill-0001","type":"liquidation_surplus","gross_pnl":"200.00000000",'
    b'"fee":"0.50000000","net":"199.50000000","amount":"199.50000000","shortfall":"0.00000000",'
    b'"balance_before":"0.00000000","balance_after":"199.50000000","sequence":1,"timestamp":1700000000000,'
    b'"version":1}'
)


def example(name: str) -> Any:
    return json.loads((EXAMPLES_DIR / f"{name}.json").read_text())


def test_seed_delta_exact_bytes(decoder: FillDecoder) -> None:
    outcome = Ledger().fold(accepted(decoder, seed_bytes()))
    assert outcome.delta is not None
    assert codec.encode_delta(outcome.delta) == SEED_DELTA_BYTES
    assert json.loads(SEED_DELTA_BYTES) == example("fund_delta.v1.seed")


def test_seed_state_document_matches_the_example(decoder: FillDecoder) -> None:
    outcome = Ledger().fold(accepted(decoder, seed_bytes()))
    document = codec.state_document(outcome.state)
    assert list(document) == STATE_KEYS
    assert document == example("fund_state.v1.seed")


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
