"""Whatever bytes arrive, the decoder answers with a fill or a rejection, never an exception; and whatever
it accepts is a valid event by the input schema and its ``x-decimal`` rules."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from processor.codec import FillDecoder, Rejection
from processor.domain.events import LiquidationFill
from processor.domain.ledger import unpack_fill
from processor.native import scanner_built
from processor.simulate import fills as simulated_fills
from testkit.hostile import hostile_messages
from tests.conftest import load_schemas, scaled
from tests.strategies import (
    DECIMAL_FIELDS,
    OPTIONAL_DEFAULTS,
    SEED_DOCUMENT,
    FillEvent,
    fill_events,
    seed_bytes,
)

INPUT_SCHEMA = load_schemas()["liquidation_fill.v1"]
INPUT_VALIDATOR = Draft202012Validator(INPUT_SCHEMA)
DECIMAL_TEXT = re.compile(INPUT_SCHEMA["$defs"]["decimal_text"]["pattern"].removesuffix("$") + r"\Z")
DECODER = FillDecoder.from_schema_dir()  # shared on purpose: its caches warm up across examples
STRING_FIELDS = ("fill_id", "liquidation_id", "symbol", "margin_currency", "side", "contract_type")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
NUMBER_LITERALS = [
    "1e308",
    "-1e308",
    "1.7976931348623157e308",
    "5e-324",
    "-0.0",
    "-0",
    "0",
    "1e-400",
    "1e400",
    "-1e400",
    "123456789012345678901234567890",
    "-123456789012345678901234567890",
    "9223372036854775807",
    "18446744073709551616",
    "1E15",
    "1e-18",
    "0.000000000000000001",
    "1.0",
    "1",
    "2",
    "1e0",
]
FIELD_NAMES = [*SEED_DOCUMENT, "extra"]


def x_decimal_rule(name: str) -> dict[str, Any]:
    spec = INPUT_SCHEMA["properties"][name]
    reference = spec["$ref"].removeprefix("#/$defs/")
    definition = INPUT_SCHEMA["$defs"][reference]
    if "x-decimal" not in definition:  # optional_*: anyOf [the decimal, null]
        reference = definition["anyOf"][0]["$ref"].removeprefix("#/$defs/")
        definition = INPUT_SCHEMA["$defs"][reference]
    rule: dict[str, Any] = definition["x-decimal"]
    return rule


X_DECIMAL = {name: x_decimal_rule(name) for name in DECIMAL_FIELDS}


def assert_valid_event(raw: bytes, fill: LiquidationFill) -> None:
    """``raw`` was accepted as ``fill``: it must be a valid event, and ``fill`` must hold its values."""
    document = json.loads(raw)
    assert isinstance(document, dict)
    errors = [error.message for error in INPUT_VALIDATOR.iter_errors(document)]
    assert not errors, (raw[:300], errors)
    for name in STRING_FIELDS:
        expected = document.get(name)
        assert getattr(fill, name) == (OPTIONAL_DEFAULTS[name] if expected is None else expected)
    assert fill.timestamp == int(document["timestamp"])
    assert fill.version == 1
    for name in DECIMAL_FIELDS:
        value = document.get(name)
        if value is None:
            assert getattr(fill, name) == OPTIONAL_DEFAULTS[name]
            continue
        assert type(value) in (str, int, float), (name, value)
        text = value if isinstance(value, str) else repr(value)
        assert DECIMAL_TEXT.match(text), (name, text)
        number = Decimal(text)
        rule = X_DECIMAL[name]
        assert number.is_finite()
        assert abs(number) <= Decimal(rule["maxAbs"])
        exponent = number.as_tuple().exponent
        assert isinstance(exponent, int)
        assert -exponent <= rule["maxPlaces"], (name, text)
        if "exclusiveMinimum" in rule:
            assert number > Decimal(rule["exclusiveMinimum"])
        else:
            assert number >= Decimal(rule["minimum"])
        assert getattr(fill, name) == number
        assert not getattr(fill, name).is_signed() or getattr(fill, name) < 0
    assert fill.quantity > 0 or fill.unfilled_quantity > 0


def decode_safely(raw: bytes | None) -> LiquidationFill | Rejection:
    result = DECODER.decode(raw)  # an exception here fails the test
    assert isinstance(result, (LiquidationFill, Rejection)), result
    fresh = FillDecoder.from_schema_dir().decode(raw)
    assert fresh == result, "the verdict depends on what the decoder saw before"
    if isinstance(result, Rejection):
        assert result.error in ("invalid_json", "invalid_event", "unsupported_version")
        assert result.detail
    else:
        assert raw is not None
        assert_valid_event(raw, result)
    assert_paths_agree(raw, result)
    return result


def assert_paths_agree(raw: bytes | None, result: LiquidationFill | Rejection) -> None:
    """The decoder's hot path must reach the same verdict as its reference path from the same bytes,
    ``decode_carefully`` (orjson, or the fallback parser for JSON orjson refuses, then
    ``from_document``): the codec promises it, for messages orjson refuses too."""
    reference = DECODER.decode_carefully(raw)
    if isinstance(result, LiquidationFill):
        assert reference == result, (raw, result, reference)
        assert [str(value) for value in reference] == [str(value) for value in result], raw
    else:
        assert isinstance(reference, Rejection), (raw, result, reference)
        assert reference.error == result.error, (raw, result, reference)


def with_literal(document: dict[str, Any], name: str, literal: str) -> bytes:
    document = dict(document)
    document[name] = "@@literal@@"
    return json.dumps(document).encode().replace(b'"@@literal@@"', literal.encode())


# --- byte-level fuzzing ---------------------------------------------------------------------------


@settings(max_examples=scaled(300))
@given(st.binary(max_size=300))
def test_random_bytes(raw: bytes) -> None:
    decode_safely(raw)


@settings(max_examples=scaled(150))
@given(st.text(alphabet='{}[]":,. 0123456789-+eEtrufalsn\\abcdu_', max_size=120))
def test_json_looking_text(text: str) -> None:
    decode_safely(text.encode())


@settings(max_examples=scaled(100))
@given(fill_events(extremes=True), st.data())
def test_truncations_of_valid_events(event: FillEvent, data: st.DataObject) -> None:
    raw = event.encode()
    cut = data.draw(st.integers(0, len(raw) - 1))
    assert isinstance(decode_safely(raw[:cut]), Rejection)


@settings(max_examples=scaled(200))
@given(fill_events(extremes=True), st.data())
def test_byte_mutations_of_valid_events(event: FillEvent, data: st.DataObject) -> None:
    raw = bytearray(event.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "replace", "delete", "insert", "duplicate"]))
        if action == "flip":
            raw[position] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "replace":
            raw[position] = data.draw(st.integers(0, 255))
        elif action == "delete":
            del raw[position : position + data.draw(st.integers(1, 8))]
        elif action == "insert":
            raw[position:position] = data.draw(st.binary(min_size=1, max_size=6))
        else:
            raw[position:position] = raw[position : position + data.draw(st.integers(1, 12))]
        if not raw:
            break
    decode_safely(bytes(raw))


# --- document-level mutations ---------------------------------------------------------------------


@settings(max_examples=scaled(300))
@given(fill_events(), st.data())
def test_document_mutations_of_valid_events(event: FillEvent, data: st.DataObject) -> None:
    document = event.document()
    for _ in range(data.draw(st.integers(1, 3))):
        action = data.draw(st.sampled_from(["delete", "retype", "add", "literal"]))
        name = data.draw(st.sampled_from(FIELD_NAMES))
        if action == "delete":
            document.pop(name, None)
        elif action in ("retype", "add"):
            document[name if action == "retype" else data.draw(st.text(max_size=6))] = data.draw(json_values)
        else:
            raw = with_literal(document, name, data.draw(st.sampled_from(NUMBER_LITERALS)))
            decode_safely(raw)
            return
    decode_safely(json.dumps(document).encode())


@settings(max_examples=scaled(150))
@given(fill_events(), st.data())
def test_duplicated_keys(event: FillEvent, data: st.DataObject) -> None:
    """A key sent twice: JSON parsers keep the last one, and so must the verdict."""
    document = event.document()
    name = data.draw(st.sampled_from(list(document)))
    other = json.dumps({name: data.draw(json_values)})[1:-1]
    text = json.dumps(document)
    raw = ("{" + other + ", " + text[1:]) if data.draw(st.booleans()) else (text[:-1] + ", " + other + "}")
    decode_safely(raw.encode())


@pytest.mark.parametrize("name", FIELD_NAMES)
@pytest.mark.parametrize("literal", NUMBER_LITERALS)
def test_number_literals_in_every_field(name: str, literal: str) -> None:
    decode_safely(with_literal(dict(SEED_DOCUMENT), name, literal))


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 10_000 + b"]" * 10_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b"[" * 10_000,
        seed_bytes()[:-1] + b', "extra": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        b'{"fill_id": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    ],
    ids=["arrays", "objects", "unclosed", "as-extra-field", "as-fill-id"],
)
def test_deep_nesting(raw: bytes) -> None:
    assert isinstance(decode_safely(raw), Rejection) or b"extra" in raw


MEGABYTE = 1_000_000


@pytest.mark.parametrize(
    ("changes", "rejected_field"),
    [
        ({"fill_id": "x" * MEGABYTE}, "fill_id"),
        ({"symbol": "é" * MEGABYTE}, "symbol"),
        ({"margin_currency": "U" * MEGABYTE}, "margin_currency"),
        ({"quantity": "1" * MEGABYTE}, "quantity"),
        ({"fee": "0." + "0" * MEGABYTE + "1"}, "fee"),
        ({"side": "l" * MEGABYTE}, "side"),
        ({"extra": "x" * MEGABYTE}, None),
    ],
    ids=["fill_id", "symbol", "margin_currency", "quantity-digits", "fee-places", "side", "extra"],
)
def test_megabyte_strings(changes: dict[str, str], rejected_field: str | None) -> None:
    result = decode_safely(seed_bytes(**changes))
    if rejected_field is None:
        assert isinstance(result, LiquidationFill)
    else:
        assert isinstance(result, Rejection)
        assert result.error == "invalid_event"
        assert rejected_field in result.detail
        assert len(result.detail) < 1000  # the detail quotes a bounded excerpt, not the megabyte


def test_a_megabyte_of_garbage() -> None:
    decode_safely(bytes(range(256)) * 4096)
    decode_safely(b"{" + b'"a": 1, ' * 200_000 + b'"b": 2}')


# --- a corpus at volume: the fast path against the reference path ----------------------------------

#: Values a mutated field takes: every JSON type, the edges of the decimal and string rules, and
#: spellings the fast path hands to the careful one (signs, exponents, numbers, long texts).
MUTANTS: tuple[Any, ...] = (
    None, True, False, 0, 1, -1, 0.0, 1.5, -0.0, 1e16, 2**63, -(2**63) - 1, "", " ", "0", "-0", "+1", "1.",
    ".5", "0.0", "00", "007", "1e3", "1E-3", "-1", "1_000", "0x10", "NaN", "Infinity", "1e400",
    "0.1234567890123456789", "0.123456789012345678", "1000000000000000", "1000000000000000.1",
    "1000000000000001", "9" * 19, "1" * 40, "long", "short", "linear", "inverse", "LINEAR", "USDT", "usdt",
    "U", "U" * 17, "x" * 129, "x" * 128, "\u00e9", "\ud800", "\x00", [], ["1"], {}, {"a": 1},
    "liquidation_fill", "top_up", "withdrawal", 1700000000000, 1, 2,
)  # fmt: skip
CORPUS_SIZE = 100_000


def mutated_documents(count: int, seed: int) -> list[bytes]:
    """``count`` fills with one to three fields deleted, retyped or set to a mutant (seeded)."""
    rng = random.Random(seed)
    documents = [
        {**document, "fill_id": f"m-{number}"}
        for number, document in enumerate(simulated_fills(min(count, 2_000), seed))
    ]
    names = [*FIELD_NAMES, "type"]
    out = []
    for number in range(count):
        document = dict(documents[number % len(documents)])
        for _ in range(rng.randint(1, 3)):
            name = rng.choice(names)
            if rng.random() < 0.2:
                document.pop(name, None)
            else:
                document[name] = rng.choice(MUTANTS)
        out.append(json.dumps(document).encode())
    return out


def corpus(size: int) -> list[bytes | None]:
    """At least ``size`` messages: the hostile stream's every bad kind among valid fills (respelled,
    duplicated, conflicting), then single-field mutations of valid fills."""
    hostile = [message.value for message in hostile_messages(size // 2, size // 3, seed=13, huge=0)]
    return [*hostile, *mutated_documents(max(size - len(hostile), size // 5), seed=17)]


@pytest.mark.parametrize(
    "native_scanner",
    [
        pytest.param(
            True, id="native-scanner", marks=pytest.mark.skipif(not scanner_built(), reason="not built")
        ),
        pytest.param(False, id="msgspec-scanner"),
    ],
)
def test_the_fast_path_agrees_with_the_reference_path_on_a_corpus(native_scanner: bool) -> None:
    """Over 100k generated messages (every invalid form of ``testkit.hostile``, and mutations of every
    field into every JSON type and edge), the verdict of ``decode_packed`` (fast path first) equals
    the reference path's, field by field, decimals by their text; and the bytes the fast path packs
    for the duplicate window unpack to that very fill. With either scanner."""
    messages = corpus(CORPUS_SIZE)
    assert len(messages) >= CORPUS_SIZE
    decoder = FillDecoder.from_schema_dir(native_scanner=native_scanner)  # caches warm, as in a worker
    verdicts: Counter[str] = Counter()
    for raw in messages:
        result, packed = decoder.decode_packed(raw)
        assert_paths_agree(raw, result)
        if isinstance(result, Rejection):  # the fast path accepts no message the reference refuses
            assert packed is None, raw
        if packed is not None:
            assert isinstance(result, LiquidationFill)
            unpacked = unpack_fill(result.fill_id, packed)
            assert [str(value) for value in unpacked] == [str(value) for value in result], raw
            verdicts["fast path"] += 1
        verdicts[type(result).__name__ if not isinstance(result, Rejection) else result.error] += 1
    # the corpus reaches every verdict, and the fast path took most valid fills (not those spelled
    # with escapes, signs or exponents, or holding numbers)
    assert set(verdicts) >= {"LiquidationFill", "invalid_json", "invalid_event", "unsupported_version"}
    assert verdicts["LiquidationFill"] > CORPUS_SIZE // 4, verdicts
    assert verdicts["fast path"] > 0.85 * verdicts["LiquidationFill"], verdicts


@pytest.mark.skipif(not scanner_built(), reason="the native scanner is not built")
def test_both_scanners_reach_the_same_verdicts_and_packed_bytes() -> None:
    """The native scanner packs a fill from the message's texts itself; msgspec's path packs with
    ``pack_texts``: the same bytes for every message of the corpus, and the same verdicts."""
    native, portable = FillDecoder.from_schema_dir(), FillDecoder.from_schema_dir(native_scanner=False)
    packed_by_the_scanner = 0
    for raw in corpus(CORPUS_SIZE // 2):
        (result, packed), (expected, expected_packed) = native.decode_packed(raw), portable.decode_packed(raw)
        assert result == expected, raw
        assert packed == expected_packed, raw
        packed_by_the_scanner += packed is not None
    assert packed_by_the_scanner > CORPUS_SIZE // 10
