"""Field checks built once from ``schemas/liquidation_fill.v1.json`` and ``schemas/fund_operation.v1.json``,
so the schema files stay the one statement of what a valid input event is; a schema the codec cannot
read fails start-up with ``SchemaError``."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal, DecimalException
from pathlib import Path
from typing import Any, NamedTuple

SCHEMA_DIR = Path(__file__).resolve().parent.parent.parent / "schemas"
INPUT_SCHEMA = "liquidation_fill.v1.json"
OPERATION_SCHEMA = "fund_operation.v1.json"
SUPPORTED_VERSION = 1

_SHOWN_VALUE_LIMIT = 60
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


class SchemaError(Exception):
    """A schema file the codec cannot turn into checks."""


class _FieldError(Exception):
    """Raised inside a field check; becomes an ``invalid_event`` rejection."""


class JsonNumber(str):
    """A JSON number orjson cannot hold (beyond a double), kept as its text by the fallback parser."""

    __slots__ = ()


class _NotJsonConstant(str):
    """``NaN``, ``Infinity`` or ``-Infinity`` where a JSON value belongs, kept to name its field
    (here, with ``JsonNumber``: a compiled module cannot subclass ``str``)."""

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
    elif "string" in _types(spec):
        check = _string_check(name, spec)
    elif "integer" in _types(spec):
        check = _integer_check(name, spec)
    else:
        raise SchemaError(f"property {name!r} has no kind the codec knows")
    default = spec.get("default")
    if not required and "default" not in spec:
        raise SchemaError(f"optional property {name!r} needs a default (null included)")
    return _Field(name, check, required, check(default) if default is not None else None, rule)


def _types(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """A property's JSON types: ``"type"`` may name one or list several (``["string", "null"]``)."""
    kinds = spec.get("type", ())
    return (kinds,) if isinstance(kinds, str) else tuple(kinds)


def _parse_decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text)
    except (DecimalException, ValueError):
        return None
