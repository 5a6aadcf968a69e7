"""The decoder's native scanner (``processor/codec/_scan.c``): it reads the wanted fields of the JSON
it accepts exactly as orjson does, declines everything outside its subset, and never accepts a
message that is not JSON."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import scaled
from tests.strategies import seed_bytes

_scan = pytest.importorskip("processor.codec._scan", reason="the native scanner is not built (make native)")

NAMES = ("fill_id", "side", "quantity", "timestamp", "symbol", "type")
CHOICES: tuple[tuple[str, ...] | None, ...] = (
    None,
    ("long", "short"),
    None,
    None,
    None,
    ("liquidation_fill",),
)
RECURRING = (False, False, True, False, True, False)
SCANNER = _scan.Scanner(tuple(name.encode() for name in NAMES), CHOICES, RECURRING, ())


def scan(data: bytes) -> tuple[Any, ...] | None:
    return SCANNER.scan(data)


def digits(text: object) -> bool:
    return type(text) is str and text.replace(".", "", 1).isdigit()


def assert_reads_as_orjson(data: bytes) -> None:
    """Whatever the scanner accepts is JSON, and it reads each wanted field as orjson does."""
    scanned = scan(data)
    if scanned is None:
        return
    document = orjson.loads(data)  # raises if the scanner accepted text that is not JSON
    assert type(document) is dict
    *values, mask, packed = scanned
    assert packed is None  # no layout
    for index, (name, value) in enumerate(zip(NAMES, values, strict=True)):
        assert value == document.get(name) and type(value) is type(document.get(name)), (name, data)
        assert bool(mask >> index & 1) == digits(value), (name, data)


def test_a_fill_reads_as_its_fields() -> None:
    data = seed_bytes()
    document = json.loads(data)
    *values, mask, _ = scan(data) or ()
    assert values == [document.get(name) for name in NAMES]
    assert mask == 1 << NAMES.index("quantity")


@pytest.mark.parametrize(
    "data",
    [
        b'{"fill_id": "a\\u0062"}',  # an escape
        '{"fill_id": "é"}'.encode(),  # beyond ASCII
        b'{"fill_id": "a", "fill_id": "b"}',  # a wanted field twice
        b'{"timestamp": 1234567890123456789}',  # more than 18 digits
        b'{"timestamp": 1.5}',
        b'{"timestamp": 1e3}',
        b'{"fill_id": true}',
        b'{"fill_id": ["a"]}',
        b'{"fill_id": {"a": 1}}',
        b'{"side": "LONG"}',  # not one of its choices
        b'{"side": 1}',
        b'{"type": "top_up"}',
        b"[]",
        b'"text"',
        b"",
    ],
    ids=lambda data: data.decode(errors="replace")[:40],
)
def test_declines_what_is_outside_its_subset(data: bytes) -> None:
    assert scan(data) is None


@pytest.mark.parametrize(
    "data",
    [
        b'{"fill_id": "a",}',
        b'{"fill_id": "a"',
        b'{"fill_id": "a"} x',
        b'{"fill_id" "a"}',
        b'{"extra": 01}',
        b'{"extra": -}',
        b'{"extra": 1.}',
        b'{"extra": 1e}',
        b'{"extra": [1,]}',
        b'{"extra": {"a" 1}}',
        b'{"extra": tru}',
        b'{"extra": NaN}',
        b'{"extra": Infinity}',
        b'{"extra": "\x01"}',
        b"{'fill_id': 'a'}",
        b'{"extra": ' + b"[" * 100 + b"]" * 100 + b"}",  # deeper than the scanner follows
    ],
    ids=lambda data: data.decode(errors="replace")[:40],
)
def test_declines_what_is_not_json(data: bytes) -> None:
    assert scan(data) is None


def test_skips_unknown_fields_of_every_kind() -> None:
    extra = b'"a": [1, -2.5e-3, {"b": [true, false, null]}, "c"], "d": {}, "e": [], "f": -0'
    scanned = scan(b' {"fill_id": "x", ' + extra + b', "quantity": "1.5"}\n')
    assert scanned is not None
    assert scanned[:3] == ("x", None, "1.5") and scanned[-2] == 1 << 2


def test_reads_integers_and_null() -> None:
    assert scan(b'{"timestamp": -0, "symbol": null}') == (None, None, None, 0, None, None, 0, None)
    scanned = scan(b'{"timestamp": 999999999999999999}')
    assert scanned is not None and scanned[3] == 999_999_999_999_999_999


def test_an_enum_reads_as_the_schemas_own_string() -> None:
    scanned = scan(b'{"side": "long"}')
    assert scanned is not None and scanned[1] is CHOICES[1][0]  # type: ignore[index]


def test_a_recurring_text_reads_as_the_same_str() -> None:
    first, second = scan(b'{"symbol": "BTCUSDT"}'), scan(b'{"symbol": "BTCUSDT"}')
    assert first is not None and second is not None and first[4] is second[4]
    assert scan(b'{"symbol": "ETHUSDT"}') == (None, None, None, None, "ETHUSDT", None, 0, None)
    other = scan(b'{"fill_id": "BTCUSDT"}')  # not recurring: a new str
    assert other is not None and other[0] is not first[4]


def test_plain_digits_mask_matches_the_python_rule() -> None:
    for text in ("1", "1.", ".5", "1.5", ".", "", "1.2.3", "-1", "+1", "1e3", "12a", "0.000"):
        scanned = scan(b'{"quantity": "' + text.encode() + b'"}')
        assert scanned is not None
        assert bool(scanned[-2]) == digits(text), text


def test_memory_is_released() -> None:
    """Scanning leaks nothing: 10,000 scans of a 1 kB text keep no more than the last result."""
    data = b'{"fill_id": "' + b"x" * 1000 + b'", "symbol": "S", "extra": [1, {"a": "b"}]}'
    scan(data)
    tracemalloc.start()
    for _ in range(10_000):
        assert scan(data) is not None
    kept = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert kept < 20_000


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=scaled(400))
@given(st.dictionaries(st.sampled_from([*NAMES, "extra", "other"]), json_values, max_size=6))
def test_reads_documents_as_orjson_does(document: dict[str, Any]) -> None:
    assert_reads_as_orjson(json.dumps(document).encode())
    assert_reads_as_orjson(json.dumps(document, separators=(",", ":")).encode())


@settings(max_examples=scaled(400))
@given(st.text(alphabet='{}[]":,. 0123456789-+eEtrufalsn\\_dixy\t\n', max_size=80))
def test_never_accepts_text_that_is_not_json(text: str) -> None:
    assert_reads_as_orjson(text.encode())


@settings(max_examples=scaled(300))
@given(st.data())
def test_byte_mutations_of_a_fill(data: st.DataObject) -> None:
    raw = bytearray(seed_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    assert_reads_as_orjson(bytes(raw))


def test_a_scanner_is_initialised_once() -> None:
    with pytest.raises(TypeError, match="once"):
        SCANNER.__init__((b"other",), (None,), (False,), ())  # type: ignore[misc]
    assert scan(b'{"fill_id": "x"}') is not None  # unchanged


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (((b"a",), (None, None), (False,), ()), ValueError),
        ((("a",), (None,), (False,), ()), TypeError),
        (((b"a",), (("\u00e9",),), (False,), ()), TypeError),
        (((b"a",), (None,), (False,), (5,)), ValueError),
    ],
    ids=["counts", "names-not-bytes", "choice-not-ascii", "layout-field"],
)
def test_bad_settings_are_refused(arguments: tuple[Any, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        _scan.Scanner(*arguments)
