"""Bytes to a fill or a rejection (SPEC section 2): JSON numbers and their texts, the error codes,
versions, and verdicts that do not depend on the decoder's caches."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given

from processor import codec
from processor.codec import FillDecoder, Rejection
from processor.domain.events import LiquidationFill
from processor.domain.ledger import Ledger
from tests.conftest import EXAMPLES_DIR
from tests.strategies import (
    DECIMAL_FIELDS,
    DELETE,
    InvalidMessage,
    invalid_messages,
    make_fill,
    seed_bytes,
    seed_document,
)
from tests.unit.codec.support import DECODER, accepted, names, raw_with, rejected

D = Decimal


# --- valid events ---------------------------------------------------------------------------------


def test_seed_event_decodes_to_the_fill(decoder: FillDecoder) -> None:
    assert accepted(decoder, seed_bytes()) == make_fill()


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
    "raw",
    [
        b"\xff\xfe",
        b'{"fill_id": "\xc3\x28"}',
        seed_bytes().replace(b"liq", b"l\x80q"),
        # in an unknown field and an unknown key: the fast path's parser skips them unread
        seed_bytes(note="@").replace(b'"@"', b'"\xed\xa0\x80"'),
        seed_bytes(note=1).replace(b'"note"', b'"n\xffte"'),
    ],
    ids=["bom-like", "known-field", "key-part", "unknown-field", "unknown-key"],
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


@pytest.mark.parametrize("unfilled", [DELETE, None, "0", 0, "0.000"])
def test_quantity_zero_without_unfilled_is_invalid(decoder: FillDecoder, unfilled: object) -> None:
    result = rejected(
        decoder, seed_bytes(quantity="0", unfilled_quantity=unfilled), "invalid_event", "quantity"
    )
    assert names(result.detail, "unfilled_quantity")


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
