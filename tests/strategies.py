"""Test data in one place: hypothesis strategies for liquidation fills, plus a builder for hand-written cases.

A ``FillEvent`` is a valid fill *and* the way it is spelled on the wire (decimals as plain strings,
exponent strings or JSON numbers; optional fields present, absent or null; unknown extra fields), so the
same value can be sent in several spellings and still be the same fill.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import attrs
from hypothesis import strategies as st

from processor.domain.events import FundOperation, LiquidationFill, OperationType
from processor.domain.pools import Pool
from testkit.fields import DECIMAL_FIELDS, REQUIRED_FIELDS

BASE_TIMESTAMP = 1_700_000_000_000

#: Stablecoin funds take linear contracts, coin funds take inverse ones.
SYMBOLS: Mapping[str, tuple[str, ...]] = {
    "USDT": ("BTCUSDT", "ETHUSDT", "SOLUSDT"),
    "USDC": ("BTCUSDC", "ETHUSDC"),
    "BTC": ("BTCUSD", "BTCUSD_PERP"),
    "ETH": ("ETHUSD",),
}
CURRENCIES: tuple[str, ...] = tuple(SYMBOLS)
INVERSE_CURRENCIES = frozenset({"BTC", "ETH"})

OPTIONAL_DEFAULTS: Mapping[str, Any] = {
    "contract_type": "linear",
    "contract_size": Decimal(1),
    "unfilled_quantity": Decimal(0),
    "fee": Decimal(0),
    "version": 1,
}
#: How a decimal is spelled: "28200.5", "2.82005e+4" or the JSON number 28200.5.
SPELLINGS = ("plain", "exponent", "number")

#: The SPEC's seed example as a wire document.
SEED_DOCUMENT: Mapping[str, Any] = {
    "fill_id": "fill-0001",
    "liquidation_id": "liq-0001",
    "symbol": "BTCUSDT",
    "margin_currency": "USDT",
    "side": "long",
    "contract_type": "linear",
    "contract_size": "1",
    "bankruptcy_price": "28000",
    "fill_price": "28200",
    "quantity": "1",
    "unfilled_quantity": "0",
    "fee": "0.5",
    "timestamp": BASE_TIMESTAMP,
    "version": 1,
}


#: A change that removes the field instead of setting it.
DELETE: Any = object()


def seed_document(**changes: Any) -> dict[str, Any]:
    """The seed document with some fields changed; ``DELETE`` as a value removes the field."""
    document = dict(SEED_DOCUMENT)
    for name, value in changes.items():
        if value is DELETE:
            document.pop(name, None)
        else:
            document[name] = value
    return document


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


def seed_bytes(**changes: Any) -> bytes:
    return encode(seed_document(**changes))


def make_fill(**changes: Any) -> LiquidationFill:
    """A ``LiquidationFill`` built directly (no codec), the seed example unless told otherwise."""
    values: dict[str, Any] = {
        "fill_id": "fill-0001",
        "liquidation_id": "liq-0001",
        "symbol": "BTCUSDT",
        "margin_currency": "USDT",
        "side": "long",
        "contract_type": "linear",
        "contract_size": Decimal("1"),
        "bankruptcy_price": Decimal("28000"),
        "fill_price": Decimal("28200"),
        "quantity": Decimal("1"),
        "unfilled_quantity": Decimal("0"),
        "fee": Decimal("0.5"),
        "timestamp": BASE_TIMESTAMP,
        "version": 1,
    }
    for name, value in changes.items():
        if name not in values:
            raise TypeError(f"LiquidationFill has no field {name!r}")
        values[name] = Decimal(value) if name in DECIMAL_FIELDS and not isinstance(value, Decimal) else value
    return LiquidationFill(**values)


def spell_decimal(value: Decimal, spelling: str) -> str | int | float:
    """Write ``value`` the way a producer might; a JSON number only when its shortest text is exact."""
    if spelling == "number":
        if value == value.to_integral_value() and abs(value) < 2**53:
            return int(value)
        as_float = float(value)
        if Decimal(repr(as_float)) == value:
            return as_float
        return format(value, "f")
    if spelling == "exponent":
        return format(value, "e")
    return format(value, "f")


@attrs.frozen
class FillEvent:
    """A valid liquidation fill and how it is spelled on the wire."""

    fill_id: str
    liquidation_id: str
    symbol: str
    margin_currency: str
    side: str
    contract_type: str
    contract_size: Decimal
    bankruptcy_price: Decimal
    fill_price: Decimal
    quantity: Decimal
    unfilled_quantity: Decimal
    fee: Decimal
    timestamp: int
    spelling: Mapping[str, str] = attrs.field(factory=dict, eq=False)
    absent: frozenset[str] = attrs.field(default=frozenset(), eq=False)
    nulled: frozenset[str] = attrs.field(default=frozenset(), eq=False)
    extra: Mapping[str, Any] = attrs.field(factory=dict, eq=False)

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = {}
        for name in LiquidationFill._fields:
            value: Any = getattr(self, name, 1)  # version is always 1 in a valid event
            if name in self.absent:
                continue
            if name in self.nulled:
                document[name] = None
            elif name in DECIMAL_FIELDS:
                document[name] = spell_decimal(value, self.spelling.get(name, "plain"))
            else:
                document[name] = value
        document.update(self.extra)
        return document

    def encode(self) -> bytes:
        return encode(self.document())

    def expected(self) -> LiquidationFill:
        """The domain value the decoder must produce (compared by value)."""
        return LiquidationFill(*[getattr(self, name, 1) for name in LiquidationFill._fields])

    def respelled(self, spelling: Mapping[str, str]) -> FillEvent:
        """The same fill (equal by value) spelled differently: a faithful re-send."""
        return attrs.evolve(self, spelling=spelling)


# --- building blocks ------------------------------------------------------------------------------

#: Any text but lone surrogates (which no UTF-8 producer can send).
identifiers = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=128)
spellings = st.fixed_dictionaries({name: st.sampled_from(SPELLINGS) for name in DECIMAL_FIELDS})


def draw_decimal(draw: st.DrawFn, low: str, high: str, max_places: int) -> Decimal:
    """A finite decimal in [low, high] with 0..max_places digits after the point, drawn as an integer
    mantissa (much cheaper than ``st.decimals``). A plain helper, not a composite: building strategies
    inside a draw is what makes generation slow."""
    places = draw(st.integers(0, max_places))
    scale = Decimal(10) ** places
    lowest = int((Decimal(low) * scale).to_integral_value(rounding=ROUND_CEILING))
    highest = int((Decimal(high) * scale).to_integral_value(rounding=ROUND_FLOOR))
    if lowest > highest:  # no value with this few places in the range
        places = max_places
        lowest, highest = int(Decimal(low) * 10**places), int(Decimal(high) * 10**places)
    return Decimal(f"{draw(st.integers(lowest, highest))}e-{places}")


#: Rare corners of the input domain: the largest and the finest decimals a producer may send.
extreme_positive = st.sampled_from(
    [
        Decimal("1000000000000000"),
        Decimal("0.000000000000000001"),
        Decimal("999999999999999.999999999999999999"),
    ]
)
_EXTREME_FIELDS = st.sampled_from(["bankruptcy_price", "fill_price", "quantity", "contract_size"])
_INVERSE_SIZES = st.sampled_from([Decimal("1"), Decimal("10"), Decimal("100")])
_LINEAR_SIZES = st.sampled_from(
    [Decimal("1"), Decimal("0.001"), Decimal("0.01"), Decimal("0.1"), Decimal("10")]
)
_PRESENCE = st.sampled_from(["present", "absent", "null"])
_SIDES = st.sampled_from(["long", "short"])
_LIQUIDATION_IDS = st.sampled_from(["liq-1", "liq-2", "liq-3"])
_EXTRAS: st.SearchStrategy[Any] = st.one_of(
    st.just({}),
    st.fixed_dictionaries({"producer": st.sampled_from(["engine-1", "engine-2"])}),
    st.fixed_dictionaries({"trace": st.lists(st.integers(), max_size=3)}),
)


def draw_fill_event(
    draw: st.DrawFn,
    *,
    currencies: Sequence[str] = CURRENCIES,
    fill_id: str | None = None,
    timestamp: int | None = None,
    extremes: bool = False,
) -> FillEvent:
    """A valid fill in one of ``currencies``, spelled in any of the allowed ways."""
    currency = draw(st.sampled_from(currencies))
    symbols = SYMBOLS.get(currency, (currency + "PERP",))
    contract_type = "inverse" if currency in INVERSE_CURRENCIES else "linear"
    if draw(st.integers(0, 9)) == 0:
        contract_type = "linear" if contract_type == "inverse" else "inverse"
    contract_size = draw(_INVERSE_SIZES if contract_type == "inverse" else _LINEAR_SIZES)

    bankruptcy_price = draw_decimal(draw, "0.01", "100000", 4)
    move = draw_decimal(draw, "-0.08", "0.08", 4) if draw(st.booleans()) else Decimal(0)
    fill_price = (bankruptcy_price * (1 + move)).quantize(Decimal("0.000001")).normalize()

    unfilled_quantity = draw_decimal(draw, "0.001", "50", 4) if draw(st.integers(0, 2)) == 0 else Decimal(0)
    quantity = draw_decimal(draw, "0.001", "1000", 6) if draw(st.integers(0, 5)) else Decimal(0)
    if not quantity and not unfilled_quantity:
        unfilled_quantity = Decimal(1)
    fee = draw_decimal(draw, "0", "5", 10) if draw(st.booleans()) else Decimal(0)

    if extremes and draw(st.integers(0, 3)) == 0:
        name = draw(_EXTREME_FIELDS)
        value = draw(extreme_positive)
        if name == "bankruptcy_price":
            bankruptcy_price = value
        elif name == "fill_price":
            fill_price = value
        elif name == "quantity":
            quantity = value
        else:
            contract_size = value

    if timestamp is None:
        timestamp = BASE_TIMESTAMP + draw(st.integers(0, 86_400_000))

    absent, nulled = set(), set()
    values = {
        "contract_type": contract_type,
        "contract_size": contract_size,
        "unfilled_quantity": unfilled_quantity,
        "fee": fee,
        "version": 1,
    }
    for name, default in OPTIONAL_DEFAULTS.items():
        if values[name] == default:
            presence = draw(_PRESENCE)
            if presence == "absent":
                absent.add(name)
            elif presence == "null":
                nulled.add(name)
    return FillEvent(
        fill_id=fill_id if fill_id is not None else draw(identifiers),
        liquidation_id=draw(_LIQUIDATION_IDS) if fill_id is not None else draw(identifiers),
        symbol=draw(st.sampled_from(symbols)),
        margin_currency=currency,
        side=draw(_SIDES),
        contract_type=contract_type,
        contract_size=contract_size,
        bankruptcy_price=bankruptcy_price,
        fill_price=fill_price,
        quantity=quantity,
        unfilled_quantity=unfilled_quantity,
        fee=fee,
        timestamp=timestamp,
        spelling=draw(spellings),
        absent=frozenset(absent),
        nulled=frozenset(nulled),
        extra=draw(_EXTRAS),
    )


@st.composite
def fill_events(
    draw: st.DrawFn, *, currencies: Sequence[str] = CURRENCIES, extremes: bool = False
) -> FillEvent:
    """A valid fill with any identifiers (unicode included) and any spelling."""
    return draw_fill_event(draw, currencies=currencies, extremes=extremes)


@st.composite
def fill_sequences(
    draw: st.DrawFn,
    *,
    currencies: Sequence[str] = CURRENCIES,
    min_size: int = 1,
    max_size: int = 25,
    resends: bool = True,
    extremes: bool = False,
) -> list[FillEvent]:
    """Fills with unique ids, event times mostly increasing (out of order by up to a minute), and
    faithful re-sends of earlier fills (respelled) slipped in after their originals."""
    count = draw(st.integers(min_size, max_size))
    events: list[FillEvent] = []
    clock = BASE_TIMESTAMP
    for index in range(count):
        clock += draw(st.integers(-60_000, 600_000))
        events.append(
            draw_fill_event(
                draw,
                currencies=currencies,
                fill_id=f"fill-{index:04d}",
                timestamp=max(clock, 0),
                extremes=extremes,
            )
        )
    if resends and events:
        for _ in range(draw(st.integers(0, max(1, count // 2)))):
            original_index = draw(st.integers(0, len(events) - 1))
            position = draw(st.integers(original_index + 1, len(events)))
            events.insert(position, events[original_index].respelled(draw(spellings)))
    return events


def unique_fills(events: Sequence[FillEvent]) -> list[FillEvent]:
    """The first occurrence of every fill_id, in order."""
    seen: set[str] = set()
    result = []
    for event in events:
        if event.fill_id not in seen:
            seen.add(event.fill_id)
            result.append(event)
    return result


# --- invalid variations ---------------------------------------------------------------------------


@attrs.frozen
class InvalidMessage:
    """Bytes that are not a valid fill, with the error code and the field the detail must name."""

    raw: bytes
    error: str
    field: str | None


_NOT_A_STRING: st.SearchStrategy[Any] = st.one_of(
    st.integers(), st.booleans(), st.just([]), st.just({}), st.floats(allow_nan=False, allow_infinity=False)
)
_BAD_DECIMAL_TEXT = st.sampled_from(
    [
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "inf",
        "1e400",
        "1e-400",
        "",
        " 1",
        "1 ",
        "1_000",
        "0x10",
        "١٢",
        "1.2.3",
        "--1",
        "1e",
        ".",
        "1000000000000001",
        "0.1234567890123456789",
        "abc",
    ]
)
_NOT_A_DECIMAL: st.SearchStrategy[Any] = st.one_of(st.booleans(), st.just([]), st.just({}), _BAD_DECIMAL_TEXT)
_BAD_TIMESTAMP: st.SearchStrategy[Any] = st.one_of(
    st.booleans(), st.just(-1), st.just(1.5), st.just("1700000000000"), st.just([]), st.just(2**64)
)


@st.composite
def invalid_messages(draw: st.DrawFn) -> InvalidMessage:
    """One rule of SPEC section 2 broken in an otherwise valid event (the seed)."""
    value: Any
    kind = draw(
        st.sampled_from(
            [
                "missing",
                "null",
                "string_type",
                "string_length",
                "currency",
                "enum",
                "decimal",
                "negative",
                "timestamp",
                "version",
                "top_level",
                "not_json",
            ]
        )
    )
    if kind == "missing":
        name = draw(st.sampled_from(REQUIRED_FIELDS))
        return InvalidMessage(seed_bytes(**{name: DELETE}), "invalid_event", name)
    if kind == "null":
        name = draw(st.sampled_from(REQUIRED_FIELDS))
        return InvalidMessage(seed_bytes(**{name: None}), "invalid_event", name)
    if kind == "string_type":
        name = draw(st.sampled_from(["fill_id", "liquidation_id", "symbol", "margin_currency"]))
        return InvalidMessage(seed_bytes(**{name: draw(_NOT_A_STRING)}), "invalid_event", name)
    if kind == "string_length":
        name, limit = draw(st.sampled_from([("fill_id", 128), ("liquidation_id", 128), ("symbol", 64)]))
        value = draw(st.sampled_from(["", "x" * (limit + 1)]))
        return InvalidMessage(seed_bytes(**{name: value}), "invalid_event", name)
    if kind == "currency":
        value = draw(st.sampled_from(["usdt", "U", "A" * 17, "USDT\n", "US-DT", "", " USDT"]))
        return InvalidMessage(seed_bytes(margin_currency=value), "invalid_event", "margin_currency")
    if kind == "enum":
        name = draw(st.sampled_from(["side", "contract_type"]))
        value = draw(st.sampled_from(["LONG", "buy", "", "perpetual", 1, True]))
        return InvalidMessage(seed_bytes(**{name: value}), "invalid_event", name)
    if kind == "decimal":
        name = draw(st.sampled_from(DECIMAL_FIELDS))
        return InvalidMessage(seed_bytes(**{name: draw(_NOT_A_DECIMAL)}), "invalid_event", name)
    if kind == "negative":
        name = draw(st.sampled_from(DECIMAL_FIELDS))
        value = draw(st.sampled_from(["-1", "-0.00000001", -5]))
        return InvalidMessage(seed_bytes(**{name: value}), "invalid_event", name)
    if kind == "timestamp":
        return InvalidMessage(seed_bytes(timestamp=draw(_BAD_TIMESTAMP)), "invalid_event", "timestamp")
    if kind == "version":
        value = draw(st.sampled_from([0, 2, 3, -1, 99]))
        return InvalidMessage(seed_bytes(version=value), "unsupported_version", "version")
    if kind == "top_level":
        document = draw(st.sampled_from([[], [dict(SEED_DOCUMENT)], "fill", 42, 1.5, None, True]))
        return InvalidMessage(encode(document), "invalid_event", None)
    raw = draw(
        st.sampled_from(
            [
                b"",
                b"{",
                b"not json",
                b"{'fill_id': 'x'}",
                b"\xff\xfe\x00",
                seed_bytes()[:-1],
                b"NaN",
                b'{"a": Infinity}',
            ]
        )
    )
    return InvalidMessage(raw, "invalid_json", None)


# --- ADL policy (SPEC section 9): streams that cross the drawdown thresholds both ways ------------

#: Linear funds whose fills' results are exact price moves, so streams can be sized to the balance.
DRAWDOWN_SYMBOLS: Mapping[str, str] = {"USDT": "BTCUSDT", "USDC": "BTCUSDC"}
DRAWDOWN_BANKRUPTCY_PRICE = Decimal(28000)
_DRAWDOWN_KINDS = st.sampled_from(
    ["loss", "loss", "loss", "surplus", "surplus", "no_liquidity", "top_up", "withdrawal", "resend"]
)
_DRAWDOWN_QUANTITIES = st.sampled_from([Decimal(1), Decimal(2), Decimal("0.5"), Decimal("0.123456789")])


def draw_time_step(draw: st.DrawFn, window_ms: int) -> int:
    """How far the next event time lies from the last one: often a tie, sometimes back in time (a late
    event), sometimes exactly one window (the boundary ``c - W``) or one millisecond either side."""
    choice = draw(st.integers(0, 9))
    if choice <= 1:
        return 0
    if choice == 2:
        return -draw(st.integers(1, window_ms + 1))
    if choice == 3:
        return window_ms + draw(st.integers(-1, 1))
    return draw(st.integers(1, max(1, window_ms // 3)))


@st.composite
def drawdown_streams(
    draw: st.DrawFn,
    *,
    window_ms: int,
    funds: Sequence[str] = tuple(DRAWDOWN_SYMBOLS),
    min_size: int = 1,
    max_size: int = 40,
) -> list[LiquidationFill | FundOperation]:
    """Fills and top-ups / withdrawals of linear funds, results up to ~900 (the size of the funds'
    balances in the tests), so drawdowns cross START and STOP often; event times tie, go back and
    jump by a window; some events are faithful re-sends, a few conflicting ones."""
    events: list[LiquidationFill | FundOperation] = []
    timestamp = BASE_TIMESTAMP
    for index in range(draw(st.integers(min_size, max_size))):
        timestamp = max(0, timestamp + draw_time_step(draw, window_ms))
        kind = draw(_DRAWDOWN_KINDS)
        if kind == "resend":
            if events:
                original = events[draw(st.integers(0, len(events) - 1))]
                if isinstance(original, LiquidationFill) and draw(st.integers(0, 3)) == 0:
                    original = original._replace(fee=original.fee + Decimal("0.01"))  # a conflict
                events.append(original)
            continue
        fund = draw(st.sampled_from(funds))
        amount = draw_decimal(draw, "0.01", "450", 2)
        if kind in ("top_up", "withdrawal"):
            operation_type: OperationType = "top_up" if kind == "top_up" else "withdrawal"
            events.append(
                FundOperation(
                    f"op-{index:04d}", operation_type, fund, amount, "treasury", "", None, timestamp
                )
            )
            continue
        quantity = draw(_DRAWDOWN_QUANTITIES)
        move = amount if kind == "surplus" else -amount
        unfilled = draw_decimal(draw, "0.001", "5", 3) if draw(st.integers(0, 4)) == 0 else Decimal(0)
        if kind == "no_liquidity":
            quantity, unfilled = Decimal(0), unfilled or Decimal(1)
        fee = draw_decimal(draw, "0", "2", 4) if draw(st.integers(0, 3)) == 0 else Decimal(0)
        events.append(
            make_fill(
                fill_id=f"fill-{index:04d}",
                liquidation_id=f"liq-{index:04d}",
                symbol=DRAWDOWN_SYMBOLS[fund],
                margin_currency=fund,
                fill_price=DRAWDOWN_BANKRUPTCY_PRICE + move,
                bankruptcy_price=DRAWDOWN_BANKRUPTCY_PRICE,
                quantity=quantity,
                unfilled_quantity=unfilled,
                fee=fee,
                timestamp=timestamp,
            )
        )
    return events


# --- treasury operations and fund pools (SPEC sections 7 and 8) -------------------------------------

OPERATION_TYPES = ("top_up", "withdrawal")

#: A valid top-up as a wire document (SPEC section 8).
OPERATION_DOCUMENT: Mapping[str, Any] = {
    "type": "top_up",
    "operation_id": "op-0001",
    "fund": "USDT",
    "amount": "1000",
    "requested_by": "treasury:alice",
    "reason": "refill after the crash",
    "timestamp": BASE_TIMESTAMP,
    "version": 1,
}


def operation_document(**changes: Any) -> dict[str, Any]:
    """The top-up document with some fields changed; ``DELETE`` as a value removes the field."""
    document = dict(OPERATION_DOCUMENT)
    for name, value in changes.items():
        if value is DELETE:
            document.pop(name, None)
        else:
            document[name] = value
    return document


def operation_bytes(**changes: Any) -> bytes:
    return encode(operation_document(**changes))


def make_operation(**changes: Any) -> FundOperation:
    """A ``FundOperation`` built directly (no codec): the top-up document's values unless told otherwise."""
    values: dict[str, Any] = {
        "operation_id": "op-0001",
        "type": "top_up",
        "fund": "USDT",
        "amount": Decimal("1000"),
        "requested_by": "treasury:alice",
        "reason": "refill after the crash",
        "transfer_id": None,
        "timestamp": BASE_TIMESTAMP,
        "version": 1,
    }
    for name, value in changes.items():
        if name not in values:
            raise TypeError(f"FundOperation has no field {name!r}")
        values[name] = Decimal(value) if name == "amount" and not isinstance(value, Decimal) else value
    return FundOperation(**values)


@attrs.frozen
class OperationEvent:
    """A valid top-up or withdrawal and how it is spelled on the wire (the amount as a string, an
    exponent string or a JSON number; ``reason``, ``transfer_id`` and ``version`` present, absent or
    null when they hold their defaults; unknown extra fields)."""

    operation_id: str
    type: str
    fund: str
    amount: Decimal
    requested_by: str
    reason: str
    transfer_id: str | None
    timestamp: int
    spelling: str = attrs.field(default="plain", eq=False)
    absent: frozenset[str] = attrs.field(default=frozenset(), eq=False)
    nulled: frozenset[str] = attrs.field(default=frozenset(), eq=False)
    extra: Mapping[str, Any] = attrs.field(factory=dict, eq=False)

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = {}
        for name in FundOperation._fields:
            if name in self.absent:
                continue
            if name in self.nulled:
                document[name] = None
            elif name == "amount":
                document[name] = spell_decimal(self.amount, self.spelling)
            elif name == "version":
                document[name] = 1
            else:
                document[name] = getattr(self, name)
        document.update(self.extra)
        return document

    def encode(self) -> bytes:
        return encode(self.document())

    def expected(self) -> FundOperation:
        """The domain value the decoder must produce (compared by value)."""
        return FundOperation(
            self.operation_id,
            self.type,  # type: ignore[arg-type]
            self.fund,
            self.amount,
            self.requested_by,
            self.reason,
            self.transfer_id,
            self.timestamp,
            1,
        )

    def respelled(self, draw: st.DrawFn) -> OperationEvent:
        """The same operation (equal by value) spelled another way: a faithful re-send."""
        absent, nulled = set(), set()
        for name, default in (("reason", ""), ("transfer_id", None), ("version", 1)):
            if (getattr(self, name, 1)) == default:
                presence = draw(_PRESENCE)
                if presence == "absent":
                    absent.add(name)
                elif presence == "null":
                    nulled.add(name)
        return attrs.evolve(
            self,
            spelling=draw(st.sampled_from(SPELLINGS)),
            absent=frozenset(absent),
            nulled=frozenset(nulled),
            extra=draw(_EXTRAS),
        )


#: Texts a treasury tool may write: empty, plain, unicode, and the duplicate window's field separator.
free_texts = st.one_of(
    st.sampled_from(["", "refill", "a\x1fb", "\x1f", "excès de réserve 💰", "x" * 512]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
)
_REQUESTERS = st.sampled_from(["treasury:alice", "treasury:bob", "risk-bot", "ops\x1fteam", "財務"])


def draw_operation_amount(draw: st.DrawFn) -> Decimal:
    """Amounts over several magnitudes (so withdrawals are sometimes refused, sometimes applied),
    with more places than a fund keeps, but never one that rounds to 0 at 6 or more places."""
    high = draw(st.sampled_from(["1", "100", "5000", "50000"]))
    return draw_decimal(draw, "0.001", high, 10)


def draw_operation_event(
    draw: st.DrawFn,
    *,
    funds: Sequence[str] = CURRENCIES,
    operation_id: str | None = None,
    timestamp: int | None = None,
    kind: str | None = None,
) -> OperationEvent:
    """A valid operation on one of ``funds``, spelled in any of the allowed ways."""
    reason = draw(free_texts) if draw(st.booleans()) else ""
    transfer_id = draw(st.sampled_from([None, None, "tr-1", "tr-\x1f2", "tr-ü"]))
    event = OperationEvent(
        operation_id=operation_id if operation_id is not None else draw(identifiers),
        type=kind if kind is not None else draw(st.sampled_from(OPERATION_TYPES)),
        fund=draw(st.sampled_from(funds)),
        amount=draw_operation_amount(draw),
        requested_by=draw(_REQUESTERS),
        reason=reason,
        transfer_id=transfer_id,
        timestamp=timestamp if timestamp is not None else BASE_TIMESTAMP + draw(st.integers(0, 86_400_000)),
    )
    return event.respelled(draw)


@st.composite
def operation_events(
    draw: st.DrawFn, *, funds: Sequence[str] = CURRENCIES, kind: str | None = None
) -> OperationEvent:
    """A valid operation with any id (unicode included) and any spelling."""
    return draw_operation_event(draw, funds=funds, kind=kind)


#: Symbol patterns a pools file may list for a currency: exact names, fnmatch patterns, names that
#: match nothing, and names of another currency's contracts.
POOL_SYMBOLS: Mapping[str, tuple[str, ...]] = {
    "USDT": ("BTCUSDT", "ETH*", "*USDT", "S?LUSDT", "[BE]*USDT", "btcusdt", "MEME*USDT", "BTCUSDC"),
    "USDC": ("BTCUSDC", "*USDC", "ETH?SDC", "*USDT"),
    "BTC": ("BTCUSD", "BTCUSD_*", "*", "ETHUSD"),
    "ETH": ("ETHUSD", "ETH*", "BTCUSD"),
}
#: Event times a pool's range may start or end at: around the generated streams' times.
_POOL_TIMES = st.integers(BASE_TIMESTAMP - 1_000_000, BASE_TIMESTAMP + 16_000_000)
_POOL_AMOUNTS = st.sampled_from(["0", "100", "2500.5", "10000", "0.123456789"])


@st.composite
def pool_lists(draw: st.DrawFn, *, currencies: Sequence[str] = CURRENCIES, max_size: int = 5) -> list[Pool]:
    """Pools as a valid pools file lists them: unique ids, overlapping symbols, optional amounts and
    time ranges (from < until)."""
    pools: list[Pool] = []
    for number in range(draw(st.integers(0, max_size))):
        currency = draw(st.sampled_from(currencies))
        symbols = draw(st.lists(st.sampled_from(POOL_SYMBOLS[currency]), min_size=1, max_size=3))
        since = draw(st.none() | _POOL_TIMES)
        until = draw(st.none() | _POOL_TIMES)
        if since is not None and until is not None and since >= until:
            since, until = until - 1, since + 1
        pools.append(
            Pool(
                fund=f"{currency}{draw(st.sampled_from('-_'))}P{number}",
                currency=currency,
                symbols=tuple(symbols),
                initial_balance=draw(st.none() | _POOL_AMOUNTS.map(Decimal)),
                floor=draw(st.none() | _POOL_AMOUNTS.map(Decimal)),
                from_timestamp=since,
                until_timestamp=until,
            )
        )
    return pools


InputEvent = FillEvent | OperationEvent


@st.composite
def mixed_sequences(
    draw: st.DrawFn,
    *,
    funds: Sequence[str] = CURRENCIES,
    currencies: Sequence[str] = CURRENCIES,
    max_size: int = 30,
) -> list[InputEvent]:
    """Fills and operations (on ``funds``) with unique ids, interleaved in any order, event times
    mostly increasing; no re-sends (tests add their own)."""
    events: list[InputEvent] = []
    clock = BASE_TIMESTAMP
    for index in range(draw(st.integers(1, max_size))):
        clock += draw(st.integers(-60_000, 600_000))
        if draw(st.integers(0, 2)) == 0:
            events.append(
                draw_operation_event(draw, funds=funds, operation_id=f"op-{index:04d}", timestamp=clock)
            )
        else:
            events.append(
                draw_fill_event(draw, currencies=currencies, fill_id=f"fill-{index:04d}", timestamp=clock)
            )
    return events
