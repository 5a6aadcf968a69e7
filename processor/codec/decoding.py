"""Bytes to a ``LiquidationFill``, a ``FundOperation`` or a ``Rejection``, never an exception: a fast
path for the common message (a fill), and the schemas' checks (``schema``) for everything else, so bad
input is named, not raised."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import msgspec
import orjson

from processor.codec.schema import (
    INPUT_SCHEMA,
    OPERATION_SCHEMA,
    SCHEMA_DIR,
    SUPPORTED_VERSION,
    JsonNumber,
    SchemaError,
    _build_field,
    _describe_type,
    _Field,
    _FieldError,
    _integer_check,
    _NotJsonConstant,
    _parse_decimal,
    _show,
)
from processor.domain.events import FundOperation, LiquidationFill
from processor.domain.ledger import PACKED_FIELDS, SEPARATOR_BYTE, pack_texts
from processor.domain.state import EXACT

INVALID_JSON = "invalid_json"
INVALID_EVENT = "invalid_event"
UNSUPPORTED_VERSION = "unsupported_version"
CONFLICTING_DUPLICATE = "conflicting_duplicate"
OPERATION_REFUSED = "operation_refused"
FILL_TYPE: Final = "liquidation_fill"

_DECIMAL_CACHE_LIMIT: Final = 1 << 12  # small enough to stay in the CPU cache
_SYMBOL_CACHE_LIMIT: Final = 1 << 12
# Python refuses to turn longer digit strings into ints (sys.get_int_max_str_digits); the fallback
# parser keeps such integers as text instead, so the field that holds one is named.
_INT_DIGITS_LIMIT = 4000
_VERSION_TEXT: Final = str(SUPPORTED_VERSION)
# Compiled, a module constant is read from a static, a global name looked up on every call.
_SUPPORTED_VERSION: Final = SUPPORTED_VERSION
# Reads a text as ``Decimal`` does (the fast path hands it only short plain digit texts, which the
# context's 120 digits hold exactly), through a call that parses no keywords: ~35 ns less a field.
_read_decimal: Final = EXACT.create_decimal


class Rejection(NamedTuple):
    """Why an input message is not a fill: a SPEC error code and a sentence naming the field."""

    error: str
    detail: str


InputEvent = LiquidationFill | FundOperation


def _fields_of(schema: Mapping[str, Any], names: tuple[str, ...]) -> list[_Field]:
    """The checks of ``names`` (but ``version``, checked apart), in that order."""
    required = set(schema["required"])
    properties = schema["properties"]
    missing = set(names) - set(properties)
    if missing:
        raise SchemaError(f"schema lacks fields {sorted(missing)}")
    return [
        _build_field(schema, name, properties[name], name in required) for name in names if name != "version"
    ]


def _read_schema(directory: Path, name: str) -> dict[str, Any]:
    try:
        schema: dict[str, Any] = orjson.loads((directory / name).read_bytes())
    except (OSError, orjson.JSONDecodeError) as error:
        raise SchemaError(f"cannot read {directory / name}: {error}") from error
    return schema


class FillDecoder:
    """Turn message bytes into a ``LiquidationFill``, a ``FundOperation`` (told apart by ``type``) or
    a ``Rejection``; built from the input schemas (the operation schema read from ``SCHEMA_DIR``
    unless given).

    ``scan`` is the fast path's scanner: the native one unless told otherwise or not built (then
    msgspec's); ``scanner_packs=False`` has it pack nothing (the benchmark's baseline for packing).
    """

    def __init__(
        self,
        schema: Mapping[str, Any],
        operation_schema: Mapping[str, Any] | None = None,
        *,
        native_scanner: bool = True,
        scanner_packs: bool = True,
    ) -> None:
        if operation_schema is None:
            operation_schema = _read_schema(SCHEMA_DIR, OPERATION_SCHEMA)
        self._fields = _fields_of(schema, LiquidationFill._fields)
        self._operation_fields = _fields_of(operation_schema, FundOperation._fields)
        self._operation_types = frozenset(operation_schema["properties"]["type"]["enum"])
        self._types = ", ".join(repr(kind) for kind in (FILL_TYPE, *sorted(self._operation_types)))
        self._version_check = _integer_check("version", {})
        properties = schema["properties"]
        # The enums and the type are checked by the scanner itself: a value outside them declines the
        # message (the careful path then decides), and an enum's value comes back as the schema's own
        # string, so no text is made or looked up for it.
        enums = {name: properties[name]["enum"] for name in ("side", "contract_type")}
        enums["type"] = [FILL_TYPE, None]
        self.scan = _scanner(enums, native_scanner, scanner_packs)
        fields = {field.name: field for field in self._fields}
        self._fast = _fast_path(fields, properties, self.scan)

    @classmethod
    def from_schema_dir(
        cls, directory: Path = SCHEMA_DIR, *, native_scanner: bool = True, scanner_packs: bool = True
    ) -> FillDecoder:
        return cls(
            _read_schema(directory, INPUT_SCHEMA),
            _read_schema(directory, OPERATION_SCHEMA),
            native_scanner=native_scanner,
            scanner_packs=scanner_packs,
        )

    def decode(self, data: bytes | None) -> InputEvent | Rejection:
        accepted = self._fast(data)
        return accepted[0] if accepted is not None else self.decode_carefully(data)

    def decode_packed(self, data: bytes | None) -> tuple[InputEvent | Rejection, bytes | None]:
        """``decode``, and a fill accepted by the fast path packed for the duplicate window
        (``processor.domain.ledger.pack_texts``); ``None`` for anything else."""
        accepted = self._fast(data)
        return accepted if accepted is not None else (self.decode_carefully(data), None)

    def decode_carefully(self, data: bytes | None) -> InputEvent | Rejection:
        """The reference path from bytes, for everything the fast path did not accept outright:
        parse with orjson (or, for valid JSON orjson refuses, the standard library), then
        ``from_document``."""
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

    def from_document(self, document: dict[str, Any]) -> InputEvent | Rejection:
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
        kind = document.get("type")
        if kind is not None and kind != FILL_TYPE:
            if type(kind) is str and kind in self._operation_types:
                return self._operation(document)
            return Rejection(INVALID_EVENT, f"field 'type' must be one of {self._types}, got {_show(kind)}")
        values = _checked(self._fields, document)
        if isinstance(values, Rejection):
            return values
        fill = LiquidationFill(*values)
        if not fill.quantity and not fill.unfilled_quantity:
            return Rejection(
                INVALID_EVENT, "field 'quantity' may be 0 only when 'unfilled_quantity' is greater than 0"
            )
        return fill

    def _operation(self, document: dict[str, Any]) -> FundOperation | Rejection:
        values = _checked(self._operation_fields, document)
        return values if isinstance(values, Rejection) else FundOperation(*values)


def _checked(fields: list[_Field], document: dict[str, Any]) -> list[Any] | Rejection:
    """The values of ``fields`` in ``document``, checked in order, then the version; or why not."""
    values: list[Any] = []
    append = values.append
    get = document.get
    try:
        for field in fields:
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
    return values


class _DecimalField:
    """One decimal field on the fast path: a cheap check for new texts, and a cache of accepted ones
    for fields whose values repeat (``accept``, with their texts).

    A value is read as its number. The text kept with it (one ``Decimal`` reads back to exactly that
    number) is the message's own text when it is plain digits (which the duplicate window then keeps
    as it came), else the number's ``str``. A text of at most ``max_places + 1`` ASCII digits with at most one
    point cannot have too many places, and when the rule's minimum is 0 only its value is left to
    check (not even that against the maximum when the text is too short to exceed it); every other
    text (signs, exponents, long texts, other minimums) takes the field's full check, and a number is
    left to the reference path.
    """

    __slots__ = ("cache", "check", "default", "max_abs", "nonzero", "short", "within")

    def __init__(self, field: _Field) -> None:
        rule = field.decimal
        if rule is None:
            raise SchemaError(f"property {field.name!r} is not a decimal")
        self.cache: dict[Any, tuple[Decimal, str]] = {}  # filled by ``accept`` only
        self.check = field.check
        self.default: Decimal | None = field.default
        self.max_abs = rule.max_abs
        self.nonzero = rule.exclusive
        self.short = rule.max_places + 1 if rule.bound == 0 else -1
        # the longest plain text that cannot exceed the maximum: n digits stay below 10**n
        within = 0
        while within < self.short and Decimal(10) ** (within + 1) - 1 <= rule.max_abs:
            within += 1
        self.within = within

    def read(self, value: Any, digits: bool) -> Decimal | None:
        """The number of a value (the default for null); or ``None``, also for any number: the fast
        path's parser reads integers beyond 64 bits exactly where orjson, the reference path's, reads
        a float, so only the reference path judges numbers. ``digits``: the value is a text of ASCII
        digits with at most one point (the scanner says)."""
        if digits and len(value) <= self.short:
            number = _read_decimal(value)
            if (len(value) > self.within and number > self.max_abs) or (self.nonzero and not number):
                return None
            return number
        if value is None:
            return self.default
        if type(value) is not str:
            return None
        try:
            return self.check(value)
        except _FieldError:
            return None

    def accept(self, value: Any, digits: bool) -> tuple[Decimal, str] | None:
        """``read``, with the number's text, remembered in ``cache`` under the value."""
        number = self.read(value, digits)
        if number is None:
            return None
        accepted = (number, value if digits else str(number))
        cache = self.cache
        if len(cache) >= _DECIMAL_CACHE_LIMIT:
            cache.clear()
        cache[value] = accepted
        return accepted


def _literal(values: list[Any]) -> Any:
    """The parser's type for a schema enum (``None`` among its values: null, or absent)."""
    literal: Any = Literal  # built from the schema's values, which a type checker cannot see
    return literal[tuple(values)]


#: A scanner: the values of the fast path's fields in a message, the mask of those whose text is plain
#: digits, and the fill packed from the texts as they came, or ``None`` (``_scan.c``); ``None`` when it
#: declines the message (the careful path then decides).
Scan = Callable[[bytes], tuple[Any, ...] | None]
#: The fields a scanner reads: the fill's, then ``type``; and the places of the decimals among them.
_SCANNED: Final = (*LiquidationFill._fields, "type")
_SIZE: Final = _SCANNED.index("contract_size")
_BANKRUPTCY: Final = _SCANNED.index("bankruptcy_price")
_PRICE: Final = _SCANNED.index("fill_price")
_QUANTITY: Final = _SCANNED.index("quantity")
_UNFILLED: Final = _SCANNED.index("unfilled_quantity")
_FEE: Final = _SCANNED.index("fee")
#: The decimals whose texts the packed form keeps as they came (when plain digits).
_PACKED_DECIMALS: Final = (
    1 << _SIZE | 1 << _BANKRUPTCY | 1 << _PRICE | 1 << _QUANTITY | 1 << _UNFILLED | 1 << _FEE
)
#: Fields whose texts come again and again (a liquidation's fills share most of theirs, and a fund
#: has few symbols): the native scanner hands a text it met lately back as the same str.
_RECURRING: Final = frozenset(
    (
        "liquidation_id",
        "symbol",
        "margin_currency",
        "contract_size",
        "bankruptcy_price",
        "quantity",
        "unfilled_quantity",
    )
)


def _scanner(enums: Mapping[str, list[Any]], native: bool, packs: bool) -> Scan:
    """The native scanner (``processor.codec._scan``, built with the compiled modules) over the fill's
    fields, which reads each enum's value as the schema's own string and packs the fill (unless not
    ``packs``); msgspec when it is not built (or not ``native``)."""
    if native:
        try:
            from processor.codec._scan import Scanner
        except ImportError:
            pass
        else:
            choices = tuple(
                None if name not in enums else tuple(value for value in enums[name] if value is not None)
                for name in _SCANNED
            )
            recurring = tuple(name in _RECURRING for name in _SCANNED)
            names = tuple(name.encode() for name in _SCANNED)
            return Scanner(names, choices, recurring, _pack_layout() if packs else ()).scan
    return _msgspec_scanner(enums)


def _pack_layout() -> tuple[int | bytes, ...]:
    """``pack_texts`` as the native scanner's layout: a field's index for its text, ``~index`` for
    its length, bytes as they are; the version is the supported one's text (the decoder accepts no
    other)."""
    layout: list[int | bytes] = []
    for name in PACKED_FIELDS:
        layout += [_VERSION_TEXT.encode() if name == "version" else _SCANNED.index(name), SEPARATOR_BYTE]
    liquidation_id = _SCANNED.index("liquidation_id")
    return (*layout, ~liquidation_id, SEPARATOR_BYTE, liquidation_id, _SCANNED.index("symbol"))


def _msgspec_scanner(enums: Mapping[str, list[Any]]) -> Scan:
    """A scanner of the same subset as the native one (ASCII texts, no escapes), by msgspec: it
    parses straight into the fields (no dictionary), skips unknown ones and keeps the last of a
    repeated key; an enum's value outside the schema's is a ValidationError, so it declines."""
    message = msgspec.defstruct(
        "FillMessage",
        [(name, _literal(enums[name]) if name in enums else Any, None) for name in _SCANNED],
        gc=False,
    )
    parse, values = msgspec.json.Decoder(message).decode, msgspec.structs.astuple

    def scan(data: bytes) -> tuple[Any, ...] | None:
        if not data.isascii() or b"\\" in data:
            return None
        try:
            scanned = values(parse(data))
        except (msgspec.MsgspecError, ValueError, TypeError, RecursionError):
            # not JSON, not an object, nested too deep, or a value that cannot be a key (an array or
            # object where a scalar belongs)
            return None
        mask = 0
        for index, value in enumerate(scanned):
            if type(value) is str:
                if value.replace(".", "", 1).isdigit():
                    mask |= 1 << index
            elif type(value) is list or type(value) is dict:  # the native scanner declines these too
                return None
        return (*scanned, mask, None)

    return scan


def _fast_path(
    fields: Mapping[str, _Field], properties: Mapping[str, Any], scan: Scan
) -> Callable[[bytes | None], tuple[LiquidationFill, bytes] | None]:
    """Build the hot path: ``scan`` straight into the fill's fields (``_scanner``: no dictionary),
    then the same rules as ``from_document``, unrolled, with caches of accepted values.

    It returns the fill with its packed form (``pack_texts``), or ``None`` for anything it does not
    accept outright; ``from_document`` (after orjson) then decides and words the rejection, so the
    two paths cannot disagree on a verdict (the fuzz tests check it).
    """

    def bounds(name: str) -> tuple[int, int]:
        spec = properties[name]
        return spec.get("minLength", 0), spec.get("maxLength", 1 << 62)

    fill_id_min, fill_id_max = bounds("fill_id")
    liquidation_id_min, liquidation_id_max = bounds("liquidation_id")
    symbol_min, symbol_max = bounds("symbol")
    timestamp_rule = properties["timestamp"]
    timestamp_min: int = timestamp_rule.get("minimum", 0)
    timestamp_max: int = timestamp_rule.get("maximum", (1 << 63) - 1)
    currency_check = fields["margin_currency"].check
    # Accepted currencies and symbols, each mapped to one shared instance: a fund's fills then share
    # their strings (less to keep in the duplicate window) and hash them once.
    currencies: dict[Any, str] = {}
    symbols: dict[Any, str] = {}
    contract_type_default = fields["contract_type"].default  # absent or null: the default
    # Sizes, bankruptcy prices (shared by a liquidation's fills) and quantities repeat, and are
    # cached with their texts; the exit price and the fee of a fill are nearly always new, so they are
    # read (caching them would only cost), and their texts made only if the packed form needs them.
    contract_size = _DecimalField(fields["contract_size"])
    bankruptcy_price = _DecimalField(fields["bankruptcy_price"])
    quantity = _DecimalField(fields["quantity"])
    unfilled_quantity = _DecimalField(fields["unfilled_quantity"])
    fill_price = _DecimalField(fields["fill_price"])
    fee = _DecimalField(fields["fee"])
    contract_sizes, bankruptcy_prices = contract_size.cache, bankruptcy_price.cache
    quantities, unfilled_quantities = quantity.cache, unfilled_quantity.cache

    def fast(data: bytes | None) -> tuple[LiquidationFill, bytes] | None:
        if data is None:
            return None
        scanned = scan(data)
        if scanned is None:
            return None
        digits: int  # declared: compiled, the mask's bits are then read as a machine integer's
        (
            fill_id,
            liquidation_id,
            symbol,
            currency,
            side,
            contract_type_value,
            size_value,
            bankruptcy_value,
            price_value,
            quantity_value,
            unfilled_value,
            fee_value,
            timestamp,
            version,
            _,  # the type: the fill's or None, by the scanner
            digits,  # bit i: field i is a text of plain digits
            scanned_packed,  # the fill packed from the message's texts, when all were there
        ) = scanned
        if (
            type(fill_id) is not str
            or not fill_id_min <= len(fill_id) <= fill_id_max
            or type(liquidation_id) is not str
            or not liquidation_id_min <= len(liquidation_id) <= liquidation_id_max
            or type(timestamp) is not int
            or not timestamp_min <= timestamp <= timestamp_max
            or (version is not None and (type(version) is not int or version != _SUPPORTED_VERSION))
            or type(side) is not str  # absent or null: required, so the careful path words it
        ):
            return None
        known_symbol = symbols.get(symbol)
        if known_symbol is None:
            if type(symbol) is not str or not symbol_min <= len(symbol) <= symbol_max:
                return None
            if len(symbols) >= _SYMBOL_CACHE_LIMIT:
                symbols.clear()
            known_symbol = symbols[symbol] = symbol
        known_currency = currencies.get(currency)
        if known_currency is None:
            try:
                known_currency = currencies[currency] = currency_check(currency)
            except _FieldError:
                return None
        if contract_type_value is None:
            contract_type = contract_type_default
        elif type(contract_type_value) is str:
            contract_type = contract_type_value
        else:
            return None
        # A cache lookup per decimal; only a text never seen before pays for the check.
        size = contract_sizes.get(size_value)
        if size is None and (size := contract_size.accept(size_value, digits >> _SIZE & 1 == 1)) is None:
            return None
        bankruptcy = bankruptcy_prices.get(bankruptcy_value)
        if (
            bankruptcy is None
            and (bankruptcy := bankruptcy_price.accept(bankruptcy_value, digits >> _BANKRUPTCY & 1 == 1))
            is None
        ):
            return None
        price_digits = digits >> _PRICE & 1 == 1
        price = fill_price.read(price_value, price_digits)
        if price is None:
            return None
        closed = quantities.get(quantity_value)
        if (
            closed is None
            and (closed := quantity.accept(quantity_value, digits >> _QUANTITY & 1 == 1)) is None
        ):
            return None
        unfilled = unfilled_quantities.get(unfilled_value)
        if (
            unfilled is None
            and (unfilled := unfilled_quantity.accept(unfilled_value, digits >> _UNFILLED & 1 == 1)) is None
        ):
            return None
        fee_digits = digits >> _FEE & 1 == 1
        cost = fee.read(fee_value, fee_digits)
        if cost is None:
            return None
        if not closed[0] and not unfilled[0]:
            return None
        fill = LiquidationFill(
            fill_id,
            liquidation_id,
            known_symbol,
            known_currency,
            side,  # type: ignore[arg-type]  # the scanner gives one of the schema's choices
            contract_type,
            size[0],
            bankruptcy[0],
            price,
            closed[0],
            unfilled[0],
            cost,
            timestamp,
            _SUPPORTED_VERSION,
        )
        # The duplicate window's form of the fill: the scanner's, when the texts it packed are the
        # ones accepted (plain digits, as they came); else from the texts at hand (none formatted).
        if (
            scanned_packed is not None
            and digits & _PACKED_DECIMALS == _PACKED_DECIMALS
            and known_currency == currency
        ):
            return fill, scanned_packed
        packed = pack_texts(
            str(timestamp),
            known_currency,
            side,
            contract_type,
            size[1],
            bankruptcy[1],
            price_value if price_digits else str(price),
            closed[1],
            unfilled[1],
            fee_value if fee_digits else str(cost),
            _VERSION_TEXT,
            liquidation_id,
            known_symbol,
        )
        return fill, packed

    return fast


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


def event_timestamp(data: bytes | None) -> int | None:
    """The ``timestamp`` of a message that has an integer one (for point-in-time replays), else ``None``."""
    try:
        document = orjson.loads(data) if data is not None else None
    except orjson.JSONDecodeError:
        return None
    timestamp = document.get("timestamp") if type(document) is dict else None
    return timestamp if type(timestamp) is int else None


def decimal_or_none(text: str) -> Decimal | None:
    """Parse a configuration decimal; ``None`` when it is not a finite decimal."""
    number = _parse_decimal(text)
    return number if number is not None and number.is_finite() else None
