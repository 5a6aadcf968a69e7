"""Each field's rule as read from ``schemas/liquidation_fill.v1.json`` (SPEC section 2): defaults,
types, lengths, patterns, enums, decimal and integer limits; and schemas the codec refuses."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from processor.codec import INPUT_SCHEMA, SCHEMA_DIR, FillDecoder, SchemaError
from tests.conftest import SCHEMA_DIR as PROJECT_SCHEMA_DIR
from tests.strategies import DECIMAL_FIELDS, DELETE, REQUIRED_FIELDS, seed_bytes, seed_document
from tests.unit.codec.support import DECODER, accepted, raw_with, rejected

D = Decimal
POSITIVE_DECIMALS = ("contract_size", "bankruptcy_price", "fill_price")
STRING_FIELDS = ("fill_id", "liquidation_id", "symbol", "margin_currency")


# --- defaults and limits --------------------------------------------------------------------------


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


# --- invalid_event: a field breaks its rule -------------------------------------------------------


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


# --- schemas the codec refuses --------------------------------------------------------------------


def input_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / INPUT_SCHEMA).read_text())
    return schema


def test_the_codec_reads_the_project_schemas() -> None:
    assert SCHEMA_DIR == PROJECT_SCHEMA_DIR
    assert FillDecoder(input_schema()).decode(seed_bytes()) == DECODER.decode(seed_bytes())


def test_a_missing_schema_file_is_a_schema_error(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=INPUT_SCHEMA):
        FillDecoder.from_schema_dir(tmp_path)


def test_a_schema_file_that_is_not_json_is_a_schema_error(tmp_path: Path) -> None:
    (tmp_path / INPUT_SCHEMA).write_text("{")
    with pytest.raises(SchemaError, match="cannot read"):
        FillDecoder.from_schema_dir(tmp_path)


def drop_fee(schema: dict[str, Any]) -> None:
    del schema["properties"]["fee"]


def drop_fee_default(schema: dict[str, Any]) -> None:
    del schema["properties"]["fee"]["default"]


def make_fill_id_boolean(schema: dict[str, Any]) -> None:
    schema["properties"]["fill_id"]["type"] = "boolean"


def point_contract_size_elsewhere(schema: dict[str, Any]) -> None:
    schema["properties"]["contract_size"]["$ref"] = "other.json#/$defs/positive_decimal"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (drop_fee, "lacks fields"),
        (drop_fee_default, "needs a default"),
        (make_fill_id_boolean, "no kind"),
        (point_contract_size_elsewhere, "unsupported \\$ref"),
    ],
)
def test_a_schema_the_codec_cannot_turn_into_checks_is_refused(
    change: Callable[[dict[str, Any]], None], message: str
) -> None:
    schema = input_schema()
    change(schema)
    with pytest.raises(SchemaError, match=message):
        FillDecoder(schema)
