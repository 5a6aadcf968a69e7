"""The serialization seam: bytes in, domain events or rejections out; domain outputs in, bytes out.

The only module that parses or writes JSON. The input checks are built once, at start-up, from
``schemas/liquidation_fill.v1.json``; decoding never raises on bad bytes, it returns a ``Rejection``
naming the offending field.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from decimal import ROUND_HALF_EVEN, Decimal, DecimalException
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from processor.domain.events import AdlTrigger, FundDelta, LiquidationFill
from processor.domain.state import EXACT, FundPolicy, FundState

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
INPUT_SCHEMA = "liquidation_fill.v1.json"
SUPPORTED_VERSION = 1
OUTPUT_VERSION = 1

INVALID_JSON = "invalid_json"
INVALID_EVENT = "invalid_event"
UNSUPPORTED_VERSION = "unsupported_version"
CONFLICTING_DUPLICATE = "conflicting_duplicate"

_DECIMAL_CACHE_LIMIT = 1 << 12  # small enough to stay in the CPU cache
_SYMBOL_CACHE_LIMIT = 1 << 12
_SHOWN_VALUE_LIMIT = 60
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
# Python refuses to turn longer digit strings into ints (sys.get_int_max_str_digits); the fallback
# parser keeps such integers as text instead, so the field that holds one is named.
_INT_DIGITS_LIMIT = 4000


class SchemaError(Exception):
    """A schema file the codec cannot turn into checks."""


class Rejection(NamedTuple):
    """Why an input message is not a fill: a SPEC error code and a sentence naming the field."""

    error: str
    detail: str


class DeadLetter(NamedTuple):
    """A rejected input message and where it came from."""

    error: str
    detail: str
    source_topic: str
    source_partition: int | None
    source_offset: int
    value: bytes | None
    key: bytes | None
    timestamp: int


class _FieldError(Exception):
    """Raised inside a field check; becomes an ``invalid_event`` rejection."""


class JsonNumber(str):
    """A JSON number orjson cannot hold (beyond a double), kept as its text by the fallback parser."""

    __slots__ = ()


def _show(value: Any) -> str:
    """A bounded excerpt of a value for a rejection's detail (a number from the fallback parser bare)."""
    text = str(value) if type(value) is JsonNumber else repr(value)
    if len(text) > _SHOWN_VALUE_LIMIT:
        text = text[:_SHOWN_VALUE_LIMIT] + "..."
    return text


def _describe_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float, JsonNumber)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# --- field checks built from the schema --------------------------------------------------------------

FieldCheck = Callable[[Any], Any]


def _string_check(name: str, spec: Mapping[str, Any]) -> FieldCheck:
    min_length = spec.get("minLength", 0)
    max_length = spec.get("maxLength")
    pattern = spec.get("pattern")
    # JSON Schema patterns are ECMA regexes, where "$" never matches before a trailing newline.
    matcher = re.compile(pattern.removesuffix("$") + r"\Z").search if pattern else None

    def check(value: Any) -> str:
        if type(value) is not str:
            raise _FieldError(f"field '{name}' must be a string, got {_describe_type(value)}")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise _FieldError(
                    f"field '{name}' must be valid Unicode text (it holds a lone surrogate)"
                ) from None
        length = len(value)
        if length < min_length or (max_length is not None and length > max_length):
            bounds = f"{min_length}..{max_length}" if max_length is not None else f">= {min_length}"
            raise _FieldError(f"field '{name}' must have {bounds} characters, got {length}")
        if matcher is not None and matcher(value) is None:
            raise _FieldError(f"field '{name}' must match {pattern}, got {_show(value)}")
        return value

    return check


def _enum_check(name: str, spec: Mapping[str, Any]) -> FieldCheck:
    allowed = {option: option for option in spec["enum"] if option is not None}
    listed = ", ".join(repr(option) for option in allowed)

    def check(value: Any) -> str:
        choice = allowed.get(value) if type(value) is str else None
        if choice is None:
            raise _FieldError(f"field '{name}' must be one of {listed}, got {_show(value)}")
        return choice

    return check


def _integer_check(name: str, spec: Mapping[str, Any]) -> FieldCheck:
    """Check an integer field; without bounds in the schema, a 64-bit signed integer."""
    minimum = spec.get("minimum", _INT64_MIN)
    maximum = spec.get("maximum", _INT64_MAX)
    lowest, highest = Decimal(minimum), Decimal(maximum)

    def check(value: Any) -> int:
        kind = type(value)
        if kind is float and value.is_integer():
            value = int(value)
        elif kind is JsonNumber:
            number = _parse_decimal(value)
            if number is None or not number.is_finite() or number != number.to_integral_value():
                raise _FieldError(f"field '{name}' must be an integer, got {_show(value)}")
            if number < lowest or number > highest:
                # Judged as a decimal: ``int`` of 1e999999999 would take minutes and gigabytes.
                raise _FieldError(
                    f"field '{name}' must be an integer in [{minimum}, {maximum}], got {_show(value)}"
                )
            value = int(number)
        elif kind is not int:
            raise _FieldError(
                f"field '{name}' must be an integer, got {_describe_type(value)} {_show(value)}"
            )
        if value < minimum or value > maximum:
            raise _FieldError(
                f"field '{name}' must be an integer in [{minimum}, {maximum}], got {_show(value)}"
            )
        return int(value)

    return check


_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class _DecimalRule(NamedTuple):
    """The limits of one decimal field, read from its ``x-decimal`` schema rule."""

    bound: Decimal
    exclusive: bool
    max_abs: Decimal
    max_places: int

    @classmethod
    def from_schema(cls, rule: Mapping[str, Any]) -> _DecimalRule:
        exclusive = "exclusiveMinimum" in rule
        bound = Decimal(rule["exclusiveMinimum"] if exclusive else rule["minimum"])
        return cls(bound, exclusive, Decimal(rule["maxAbs"]), int(rule["maxPlaces"]))


def _decimal_check(name: str, rule: _DecimalRule) -> FieldCheck:
    """Build the check for one decimal field from its ``x-decimal`` rule."""
    bound, exclusive, max_abs, max_places = rule
    requirement = (
        f"a decimal {'>' if exclusive else '>='} {bound} and <= {max_abs:,.0f} "
        f"with at most {max_places} digits after the point"
    )

    def convert(text: str, shown: Any) -> Decimal:
        if text.isascii() and text.replace(".", "", 1).isdigit():
            # Plain unsigned notation, the common case: count the places from the text.
            point = text.find(".")
            places = len(text) - point - 1 if point >= 0 else 0
        elif _DECIMAL_TEXT.fullmatch(text) is not None:
            parsed = _parse_decimal(text)
            exponent = parsed.as_tuple().exponent if parsed is not None else None
            places = -exponent if isinstance(exponent, int) else max_places + 1
        else:
            raise _FieldError(f"field '{name}' must be {requirement}, got {_show(shown)}")
        number = _parse_decimal(text)
        if number is None:
            raise _FieldError(f"field '{name}' must be {requirement}, got {_show(shown)}")
        if places > max_places or not (bound < number if exclusive else bound <= number) or number > max_abs:
            raise _FieldError(f"field '{name}' must be {requirement}, got {_show(shown)}")
        if not number:
            number = number.copy_abs()  # "-0" is zero; never let a negative zero reach an output
        return number

    def check(value: Any) -> Decimal:
        kind = type(value)
        if kind is str:
            return convert(value, value)
        if kind is float or kind is int:
            return convert(repr(value), value)
        if kind is JsonNumber:  # from the fallback parser, for numbers orjson cannot hold
            return convert(str(value), value)
        raise _FieldError(f"field '{name}' must be {requirement}, got {_describe_type(value)} {_show(value)}")

    return check


class _Field(NamedTuple):
    name: str
    check: FieldCheck
    required: bool
    default: Any
    decimal: _DecimalRule | None


def _resolve(schema: Mapping[str, Any], spec: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = spec.get("$ref")
    if ref is None:
        return spec
    prefix = "#/$defs/"
    if not ref.startswith(prefix):
        raise SchemaError(f"unsupported $ref {ref!r}")
    return _resolve(schema, schema["$defs"][ref.removeprefix(prefix)])


def _decimal_rule(schema: Mapping[str, Any], spec: Mapping[str, Any]) -> _DecimalRule | None:
    """Find the ``x-decimal`` rule of a property, following $ref and anyOf."""
    resolved = _resolve(schema, spec)
    if "x-decimal" in resolved:
        return _DecimalRule.from_schema(resolved["x-decimal"])
    for option in resolved.get("anyOf", ()):
        rule = _decimal_rule(schema, option)
        if rule is not None:
            return rule
    return None


def _build_field(schema: Mapping[str, Any], name: str, spec: Mapping[str, Any], required: bool) -> _Field:
    rule = _decimal_rule(schema, spec)
    check: FieldCheck
    if rule is not None:
        check = _decimal_check(name, rule)
    elif "enum" in spec:
        check = _enum_check(name, spec)
    elif spec.get("type") == "string":
        check = _string_check(name, spec)
    elif spec.get("type") == "integer":
        check = _integer_check(name, spec)
    else:
        raise SchemaError(f"property {name!r} has no kind the codec knows")
    default = spec.get("default")
    if not required and default is None:
        raise SchemaError(f"optional property {name!r} needs a default")
    return _Field(name, check, required, check(default) if default is not None else None, rule)


class FillDecoder:
    """Turn message bytes into a ``LiquidationFill`` or a ``Rejection``; built from the input schema."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        required = set(schema["required"])
        properties = schema["properties"]
        missing = set(LiquidationFill._fields) - set(properties)
        if missing:
            raise SchemaError(f"schema lacks fields {sorted(missing)}")
        self._fields = [
            _build_field(schema, name, properties[name], name in required)
            for name in LiquidationFill._fields
            if name != "version"
        ]
        self._version_check = _integer_check("version", {})
        self._fast = _fast_path({field.name: field for field in self._fields}, properties)

    @classmethod
    def from_schema_dir(cls, directory: Path = SCHEMA_DIR) -> FillDecoder:
        try:
            schema = orjson.loads((directory / INPUT_SCHEMA).read_bytes())
        except (OSError, orjson.JSONDecodeError) as error:
            raise SchemaError(f"cannot read {directory / INPUT_SCHEMA}: {error}") from error
        return cls(schema)

    def decode(self, data: bytes | None) -> LiquidationFill | Rejection:
        fill = self._fast(data)
        return fill if fill is not None else self._decode_carefully(data)

    def _decode_carefully(self, data: bytes | None) -> LiquidationFill | Rejection:
        """Everything the fast path did not accept outright: parse again and take the reference path."""
        if data is None:
            return Rejection(INVALID_JSON, "message has no value (null); expected a JSON object")
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError:
            # Valid JSON orjson refuses (numbers beyond a double, lone surrogates).
            document = _parse_beyond_orjson(data)
            if isinstance(document, Rejection):
                return document
        if type(document) is not dict:
            return Rejection(INVALID_EVENT, f"message must be a JSON object, got {_describe_type(document)}")
        return self.from_document(document)

    def from_document(self, document: dict[str, Any]) -> LiquidationFill | Rejection:
        """Check every field in schema order; the reference path, which also words the rejections."""
        version = document.get("version")
        if version is not None and (type(version) is not int or version != SUPPORTED_VERSION):
            try:
                number = self._version_check(version)
            except _FieldError as invalid:
                return Rejection(INVALID_EVENT, str(invalid))
            if number != SUPPORTED_VERSION:
                return Rejection(
                    UNSUPPORTED_VERSION,
                    f"field 'version' is {number}; this processor supports version {SUPPORTED_VERSION}",
                )
        values: list[Any] = []
        append = values.append
        get = document.get
        try:
            for field in self._fields:
                value = get(field.name)
                if value is None:
                    if field.required:
                        presence = "must not be null" if field.name in document else "is missing"
                        raise _FieldError(f"required field '{field.name}' {presence}")
                    append(field.default)
                else:
                    append(field.check(value))
        except _FieldError as invalid:
            return Rejection(INVALID_EVENT, str(invalid))
        append(SUPPORTED_VERSION)
        fill = LiquidationFill._make(values)
        if not fill.quantity and not fill.unfilled_quantity:
            return Rejection(
                INVALID_EVENT, "field 'quantity' may be 0 only when 'unfilled_quantity' is greater than 0"
            )
        return fill


class _DecimalField:
    """One decimal field on the fast path: a cheap check for new texts, and a cache of accepted ones
    for fields whose values repeat (``cached``).

    A text of at most ``max_places + 1`` ASCII digits with at most one point cannot have too many
    places, and when the rule's minimum is 0 only its value is left to check; every other spelling
    (signs, exponents, numbers, long texts, other minimums) takes the field's full check.
    """

    __slots__ = ("cache", "cached", "check", "default", "max_abs", "nonzero", "short")

    def __init__(self, field: _Field, *, cached: bool) -> None:
        rule = field.decimal
        if rule is None:
            raise SchemaError(f"property {field.name!r} is not a decimal")
        self.cache: dict[str, Decimal] = {}  # stays empty unless ``cached``
        self.cached = cached
        self.check = field.check
        self.default = field.default
        self.max_abs = rule.max_abs
        self.nonzero = rule.exclusive
        self.short = rule.max_places + 1 if rule.bound == 0 else -1

    def accept(self, value: Any) -> Decimal | None:
        """The value of a text (not in the cache), of a number, or the default for null; or ``None``."""
        if (
            type(value) is str
            and len(value) <= self.short
            and value.isascii()
            and value.replace(".", "", 1).isdigit()
        ):
            number = Decimal(value)
            if number > self.max_abs or (self.nonzero and not number):
                return None
        elif value is None:
            return self.default
        else:
            try:
                number = self.check(value)
            except _FieldError:
                return None
            if type(value) is not str:
                return number
        if self.cached:
            cache = self.cache
            if len(cache) >= _DECIMAL_CACHE_LIMIT:
                cache.clear()
            cache[value] = number
        return number


def _fast_path(
    fields: Mapping[str, _Field], properties: Mapping[str, Any]
) -> Callable[[bytes | None], LiquidationFill | None]:
    """Build the hot path: parse, then the same rules as ``from_document``, unrolled, with caches of
    accepted values.

    It returns ``None`` for anything it does not accept outright; ``from_document`` then decides and
    words the rejection, so the two paths cannot disagree on a verdict (the fuzz tests check it).
    """

    def bounds(name: str) -> tuple[int, int]:
        spec = properties[name]
        return spec.get("minLength", 0), spec.get("maxLength", 1 << 62)

    fill_id_min, fill_id_max = bounds("fill_id")
    liquidation_id_min, liquidation_id_max = bounds("liquidation_id")
    symbol_min, symbol_max = bounds("symbol")
    currency_check = fields["margin_currency"].check
    # Accepted currencies and symbols, each mapped to one shared instance: a fund's fills then share
    # their strings (less to keep in the duplicate window) and hash them once.
    currencies: dict[str, str] = {}
    symbols: dict[str, str] = {}
    sides = {side: side for side in properties["side"]["enum"] if side is not None}
    contract_types = {kind: kind for kind in properties["contract_type"]["enum"] if kind is not None}
    contract_types[None] = fields["contract_type"].default  # absent or null: the default
    timestamp_minimum = properties["timestamp"].get("minimum", 0)
    timestamp_maximum = properties["timestamp"].get("maximum", 1 << 63)
    # Sizes, bankruptcy prices (shared by a liquidation's fills) and quantities repeat; the exit
    # price and the fee of a fill are nearly always new, so caching them would only cost.
    contract_size = _DecimalField(fields["contract_size"], cached=True)
    bankruptcy_price = _DecimalField(fields["bankruptcy_price"], cached=True)
    quantity = _DecimalField(fields["quantity"], cached=True)
    unfilled_quantity = _DecimalField(fields["unfilled_quantity"], cached=True)
    fill_price = _DecimalField(fields["fill_price"], cached=False)
    fee = _DecimalField(fields["fee"], cached=False)
    contract_sizes, bankruptcy_prices = contract_size.cache, bankruptcy_price.cache
    quantities, unfilled_quantities = quantity.cache, unfilled_quantity.cache
    loads, new_fill = orjson.loads, tuple.__new__

    def fast(data: bytes | None) -> LiquidationFill | None:
        try:
            document = loads(data)  # type: ignore[arg-type]
            get = document.get
            version = get("version")
            if version is not None and (type(version) is not int or version != SUPPORTED_VERSION):
                return None
            fill_id = get("fill_id")
            liquidation_id = get("liquidation_id")
            if (
                type(fill_id) is not str
                or not fill_id_min <= len(fill_id) <= fill_id_max
                or type(liquidation_id) is not str
                or not liquidation_id_min <= len(liquidation_id) <= liquidation_id_max
            ):
                return None
            symbol = get("symbol")
            known_symbol = symbols.get(symbol)
            if known_symbol is None:
                if type(symbol) is not str or not symbol_min <= len(symbol) <= symbol_max:
                    return None
                if len(symbols) >= _SYMBOL_CACHE_LIMIT:
                    symbols.clear()
                known_symbol = symbols[symbol] = symbol
            currency = get("margin_currency")
            known_currency = currencies.get(currency)
            if known_currency is None:
                try:
                    known_currency = currencies[currency] = currency_check(currency)
                except _FieldError:
                    return None
            side = sides.get(get("side"))
            contract_type = contract_types.get(get("contract_type"))
            timestamp = get("timestamp")
            if (
                side is None
                or contract_type is None
                or type(timestamp) is not int
                or not timestamp_minimum <= timestamp <= timestamp_maximum
            ):
                return None
            # A cache lookup per decimal; only a text never seen before pays for the check.
            value = get("contract_size")
            size = contract_sizes.get(value)
            if size is None and (size := contract_size.accept(value)) is None:
                return None
            value = get("bankruptcy_price")
            bankruptcy = bankruptcy_prices.get(value)
            if bankruptcy is None and (bankruptcy := bankruptcy_price.accept(value)) is None:
                return None
            price = fill_price.accept(get("fill_price"))
            if price is None:
                return None
            value = get("quantity")
            closed = quantities.get(value)
            if closed is None and (closed := quantity.accept(value)) is None:
                return None
            value = get("unfilled_quantity")
            unfilled = unfilled_quantities.get(value)
            if unfilled is None and (unfilled := unfilled_quantity.accept(value)) is None:
                return None
            cost = fee.accept(get("fee"))
            if cost is None:
                return None
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            # Not JSON, not an object (no ``get``), or a value that cannot be a key (an array or
            # object where a scalar belongs): the careful path words the rejection.
            return None
        if not closed and not unfilled:
            return None
        return new_fill(
            LiquidationFill,
            (
                fill_id,
                liquidation_id,
                known_symbol,
                known_currency,
                side,
                contract_type,
                size,
                bankruptcy,
                price,
                closed,
                unfilled,
                cost,
                timestamp,
                SUPPORTED_VERSION,
            ),
        )

    return fast


class _NotJsonConstant(str):
    """``NaN``, ``Infinity`` or ``-Infinity`` where a JSON value belongs, kept to name its field."""

    __slots__ = ()


def _parse_int(text: str) -> int | JsonNumber:
    return int(text) if len(text) <= _INT_DIGITS_LIMIT else JsonNumber(text)


def _parse_beyond_orjson(data: bytes) -> Any:
    """Parse valid JSON that orjson refuses (numbers beyond a double or 64 bits, lone surrogates), or
    say why it is not JSON, naming the field that holds a ``NaN`` or ``Infinity``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return Rejection(INVALID_JSON, f"message is not UTF-8 text: {error.reason} at byte {error.start}")
    try:
        document = json.loads(
            text, parse_float=JsonNumber, parse_int=_parse_int, parse_constant=_NotJsonConstant
        )
    except (ValueError, RecursionError) as error:
        reason = str(error) if not isinstance(error, RecursionError) else "nesting is too deep"
        return Rejection(INVALID_JSON, f"message is not JSON text: {reason[:200]}")
    if "NaN" in text or "Infinity" in text:  # cheap test first: a constant's name is in the text
        constant = _not_json_constant(document)
        if constant is not None:
            return Rejection(INVALID_JSON, f"message is not JSON text: {constant}, which JSON does not allow")
    return document


def _not_json_constant(document: Any) -> str | None:
    """Where the fallback parser met ``NaN`` or ``Infinity``, if it did: a top-level field, or deeper."""
    if type(document) is dict:
        for name, value in document.items():
            if type(value) is _NotJsonConstant:
                return f"field {_show(name)} is {value}"
    pending = [document]
    while pending:  # depth-first without recursion: nesting is bounded only by the parser
        value = pending.pop()
        if type(value) is _NotJsonConstant:
            return f"it holds {value}"
        if type(value) is dict:
            pending.extend(value.values())
        elif type(value) is list:
            pending.extend(value)
    return None


# --- encoding ---------------------------------------------------------------------------------------------


def amount_text(value: Decimal) -> str:
    """Fixed-point text of a value already rounded to the fund's precision."""
    text = str(value)
    return text if "E" not in text else _fixed(value, text)


# The zero of each precision above 6 places, which ``str`` writes in exponent notation ("0E-8").
_FIXED_ZEROS = {
    str(zero): format(zero, "f") for zero in (Decimal(0).scaleb(-places) for places in range(7, 64))
}


def _fixed(value: Decimal, text: str) -> str:
    """Fixed-point text of a value whose ``str`` is ``text``, in exponent notation (zero or tiny)."""
    return _FIXED_ZEROS.get(text) or format(value, "f")


def _exact(value: Decimal, policy: FundPolicy) -> str:
    """Fixed-point text with the fund's places, or more when the value needs them to stay exact.

    The text depends on the value only: 2.5, "2.50" and "2.5000000000" all render "2.50000000".
    """
    rounded = value.quantize(policy.quantum, ROUND_HALF_EVEN, EXACT)
    return amount_text(rounded) if rounded == value else format(value.normalize(EXACT), "f")


def delta_document(delta: FundDelta) -> dict[str, Any]:
    """The delta as its JSON object; the hot path, so ``str`` is called inline (it is several times
    faster than ``format``) and only a text in exponent notation is rewritten."""
    (
        fund,
        symbol,
        liquidation_id,
        fill_id,
        delta_type,
        gross_pnl,
        fee,
        net,
        amount,
        shortfall,
        balance_before,
        balance_after,
        sequence,
        timestamp,
    ) = delta
    gross_text, fee_text, net_text = str(gross_pnl), str(fee), str(net)
    paid_text = net_text if amount is net else str(amount)  # a surplus is the net itself
    shortfall_text, before_text, after_text = str(shortfall), str(balance_before), str(balance_after)
    if "E" in gross_text:
        gross_text = _fixed(gross_pnl, gross_text)
    if "E" in fee_text:
        fee_text = _fixed(fee, fee_text)
    if "E" in net_text:
        net_text = _fixed(net, net_text)
    if "E" in paid_text:
        paid_text = _fixed(amount, paid_text)
    if "E" in shortfall_text:
        shortfall_text = _fixed(shortfall, shortfall_text)
    if "E" in before_text:
        before_text = _fixed(balance_before, before_text)
    if "E" in after_text:
        after_text = _fixed(balance_after, after_text)
    return {
        "delta_id": fill_id,
        "fund": fund,
        "margin_currency": fund,
        "symbol": symbol,
        "liquidation_id": liquidation_id,
        "fill_id": fill_id,
        "type": delta_type,
        "gross_pnl": gross_text,
        "fee": fee_text,
        "net": net_text,
        "amount": paid_text,
        "shortfall": shortfall_text,
        "balance_before": before_text,
        "balance_after": after_text,
        "sequence": sequence,
        "timestamp": timestamp,
        "version": OUTPUT_VERSION,
    }


def encode_fill(fill: LiquidationFill) -> bytes:
    """A fill as its canonical input document (decimals as their exact text, no unknown fields),
    which decodes to an equal fill: a compact stand-in for a message padded with unknown fields."""
    return orjson.dumps(
        {
            "fill_id": fill.fill_id,
            "liquidation_id": fill.liquidation_id,
            "symbol": fill.symbol,
            "margin_currency": fill.margin_currency,
            "side": fill.side,
            "contract_type": fill.contract_type,
            "contract_size": str(fill.contract_size),
            "bankruptcy_price": str(fill.bankruptcy_price),
            "fill_price": str(fill.fill_price),
            "quantity": str(fill.quantity),
            "unfilled_quantity": str(fill.unfilled_quantity),
            "fee": str(fill.fee),
            "timestamp": fill.timestamp,
            "version": fill.version,
        }
    )


def encode_delta(delta: FundDelta) -> bytes:
    return orjson.dumps(delta_document(delta))


def trigger_document(trigger: AdlTrigger, policy: FundPolicy) -> dict[str, Any]:
    return {
        "trigger_id": trigger.trigger_id,
        "fund": trigger.fund,
        "margin_currency": trigger.fund,
        "symbol": trigger.symbol,
        "liquidation_id": trigger.liquidation_id,
        "fill_id": trigger.fill_id,
        "reason": trigger.reason,
        "liquidated_side": trigger.liquidated_side,
        "deleverage_side": trigger.deleverage_side,
        "bankruptcy_price": _exact(trigger.bankruptcy_price, policy),
        "quantity": _exact(trigger.quantity, policy),
        "unfilled_quantity": _exact(trigger.unfilled_quantity, policy),
        "shortfall": amount_text(trigger.shortfall),
        "fund_balance": amount_text(trigger.fund_balance),
        "sequence": trigger.sequence,
        "timestamp": trigger.timestamp,
        "version": OUTPUT_VERSION,
    }


def encode_trigger(trigger: AdlTrigger, policy: FundPolicy) -> bytes:
    return orjson.dumps(trigger_document(trigger, policy))


def encode_rejection(
    rejection: Rejection,
    value: bytes | None,
    key: bytes | None,
    topic: str,
    partition: int | None,
    offset: int,
    timestamp: int,
) -> bytes:
    """The dead letter of a rejected message read at ``topic``/``partition``/``offset``."""
    letter = DeadLetter(rejection.error, rejection.detail, topic, partition, offset, value, key, timestamp)
    return encode_dead_letter(letter)


#: A dead letter carries at most this many bytes of the original message value. The rest is
#: summarised by ``value_length`` and ``value_sha256``, so that a dead letter of a message near the
#: broker's size limit (whose JSON text escapes it, up to 6 bytes per byte) can always be published.
DEAD_LETTER_VALUE_LIMIT = 65_536
#: The same for the input key copied into the dead letter.
DEAD_LETTER_KEY_LIMIT = 1_024
#: Characters of ``detail`` kept (details are short by construction; this only bounds them).
DEAD_LETTER_DETAIL_LIMIT = 4_096


def dead_letter_document(letter: DeadLetter) -> dict[str, Any]:
    """The dead letter as its JSON object, holding bounded copies of the message's value and key.

    A copy longer than its limit keeps its first bytes (text cut back to a whole character) and
    adds the original's length in bytes and the SHA-256 of the whole of it, so that the document
    stays well under 1 MB whatever arrived.
    """
    detail = letter.detail
    if len(detail) > DEAD_LETTER_DETAIL_LIMIT:
        detail = detail[: DEAD_LETTER_DETAIL_LIMIT - 3] + "..."
    document: dict[str, Any] = {
        "error": letter.error,
        "detail": detail,
        "source_topic": letter.source_topic,
        "source_partition": letter.source_partition,
        "source_offset": letter.source_offset,
    }
    raw = letter.value if letter.value is not None else b""
    text = _utf8_prefix(raw, DEAD_LETTER_VALUE_LIMIT)
    if text is not None:
        document["value"] = text
    else:
        document["value_base64"] = base64.b64encode(raw[:DEAD_LETTER_VALUE_LIMIT]).decode("ascii")
    if len(raw) > DEAD_LETTER_VALUE_LIMIT:
        document["value_length"] = len(raw)
        document["value_sha256"] = hashlib.sha256(raw).hexdigest()
    key = letter.key
    document["key"] = _key_text(key)
    if key is not None and len(key) > DEAD_LETTER_KEY_LIMIT:
        document["key_length"] = len(key)
        document["key_sha256"] = hashlib.sha256(key).hexdigest()
    document["timestamp"] = letter.timestamp
    document["version"] = OUTPUT_VERSION
    return document


def _utf8_prefix(raw: bytes, limit: int) -> str | None:
    """The text of at most ``limit`` leading bytes of ``raw``; ``None`` when ``raw`` is not UTF-8."""
    try:
        if len(raw) <= limit:
            return raw.decode("utf-8")
        raw.decode("utf-8")  # the whole must be text, not just the part kept
    except UnicodeDecodeError:
        return None
    return raw[:limit].decode("utf-8", "ignore")  # only a character cut in two at the end is dropped


def _key_text(key: bytes | None) -> str | None:
    """The key (at most its first ``DEAD_LETTER_KEY_LIMIT`` bytes) as text, base64 when not UTF-8."""
    if key is None:
        return None
    text = _utf8_prefix(key, DEAD_LETTER_KEY_LIMIT)
    return text if text is not None else base64.b64encode(key[:DEAD_LETTER_KEY_LIMIT]).decode("ascii")


def dead_letter_key(key: bytes | None) -> bytes | None:
    """The record key of a dead letter: the input key, cut to ``DEAD_LETTER_KEY_LIMIT`` bytes.

    Keying a dead letter by a key of nearly 1 MB (which the input's value can leave room for) would
    make the dead letter too large for the broker.
    """
    return key if key is None or len(key) <= DEAD_LETTER_KEY_LIMIT else key[:DEAD_LETTER_KEY_LIMIT]


def encode_dead_letter(letter: DeadLetter) -> bytes:
    return orjson.dumps(dead_letter_document(letter))


def state_document(state: FundState) -> dict[str, Any]:
    return {
        "fund": state.fund,
        "balance": amount_text(state.balance),
        "total_surplus": amount_text(state.total_surplus),
        "total_paid": amount_text(state.total_paid),
        "total_shortfall": amount_text(state.total_shortfall),
        "fills": state.fills,
        "duplicates": state.duplicates,
        "adl_triggers": state.adl_triggers,
        "sequence": state.sequence,
        "last_timestamp": state.last_timestamp,
        "by_symbol": {symbol: amount_text(amount) for symbol, amount in sorted(state.by_symbol.items())},
    }


def encode_states(states: Iterable[FundState]) -> bytes:
    """The state file / HTTP view: an object keyed by fund, funds in sorted order."""
    ordered = sorted(states, key=lambda state: state.fund)
    return orjson.dumps({state.fund: state_document(state) for state in ordered}, option=orjson.OPT_INDENT_2)


def decode_state(document: Mapping[str, Any]) -> FundState:
    """Read one fund's state back (from a table value or a state file)."""
    return FundState(
        fund=document["fund"],
        balance=Decimal(document["balance"]),
        total_surplus=Decimal(document["total_surplus"]),
        total_paid=Decimal(document["total_paid"]),
        total_shortfall=Decimal(document["total_shortfall"]),
        fills=document["fills"],
        duplicates=document["duplicates"],
        adl_triggers=document["adl_triggers"],
        sequence=document["sequence"],
        last_timestamp=document["last_timestamp"],
        by_symbol={symbol: Decimal(amount) for symbol, amount in document["by_symbol"].items()},
    )


def event_timestamp(data: bytes | None) -> int | None:
    """The ``timestamp`` of a message that has an integer one (for point-in-time replays), else ``None``."""
    try:
        document = orjson.loads(data) if data is not None else None
    except orjson.JSONDecodeError:
        return None
    timestamp = document.get("timestamp") if type(document) is dict else None
    return timestamp if type(timestamp) is int else None


def loads(data: bytes | str) -> Any:
    """Parse trusted JSON (state files, our own outputs); raises ``ValueError`` on bad input."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise ValueError(str(error)) from error


def dumps(document: Any) -> bytes:
    return orjson.dumps(document)


def _parse_decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text)
    except (DecimalException, ValueError):
        return None


def decimal_or_none(text: str) -> Decimal | None:
    """Parse a configuration decimal; ``None`` when it is not a finite decimal."""
    number = _parse_decimal(text)
    return number if number is not None and number.is_finite() else None


# --- table records (the worker's changelog-backed state) ---------------------------------------------------


class FundRecord(NamedTuple):
    """A fund table value: the state, and the last input offset applied from each source partition."""

    state: FundState
    applied_offsets: dict[str, int]


def encode_fund_record(record: FundRecord) -> bytes:
    return orjson.dumps({"state": state_document(record.state), "applied_offsets": record.applied_offsets})


def decode_fund_record(data: bytes) -> FundRecord:
    document = orjson.loads(data)
    return FundRecord(decode_state(document["state"]), dict(document["applied_offsets"]))


def _fill_row(fill: LiquidationFill) -> list[Any]:
    return [
        fill.fill_id,
        fill.liquidation_id,
        fill.symbol,
        fill.side,
        fill.contract_type,
        str(fill.contract_size),
        str(fill.bankruptcy_price),
        str(fill.fill_price),
        str(fill.quantity),
        str(fill.unfilled_quantity),
        str(fill.fee),
        fill.timestamp,
    ]


def encode_fill_segment(fills: Iterable[LiquidationFill]) -> bytes:
    """The fills one batch applied to one fund, kept so a restarted worker still knows its duplicates."""
    return orjson.dumps([_fill_row(fill) for fill in fills])


def decode_fill_segment(fund: str, data: bytes) -> list[LiquidationFill]:
    fills = []
    for row in orjson.loads(data):
        (
            fill_id,
            liquidation_id,
            symbol,
            side,
            contract_type,
            contract_size,
            bankruptcy_price,
            fill_price,
            quantity,
            unfilled_quantity,
            fee,
            timestamp,
        ) = row
        fills.append(
            LiquidationFill(
                fill_id,
                liquidation_id,
                symbol,
                fund,
                side,
                contract_type,
                Decimal(contract_size),
                Decimal(bankruptcy_price),
                Decimal(fill_price),
                Decimal(quantity),
                Decimal(unfilled_quantity),
                Decimal(fee),
                timestamp,
                SUPPORTED_VERSION,
            )
        )
    return fills
