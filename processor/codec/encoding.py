"""Domain outputs to the bytes of their topics (deltas, triggers, dead letters), written exactly as
SPEC section 4 shows them; the hot path, so its documents are built inline."""

from __future__ import annotations

import base64
import hashlib
from decimal import Decimal
from typing import Any, Final, NamedTuple

import orjson

from processor.codec.decoding import Rejection
from processor.domain.events import (
    TRIGGER_ID_PREFIX,
    AdlStateChange,
    AdlTrigger,
    FundDelta,
    FundOperation,
    LiquidationFill,
    OperationDelta,
)
from processor.domain.state import EXACT, FundPolicy

OUTPUT_VERSION: Final = 1


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
    #: The length and SHA-256 of the whole key when ``key`` is only its first bytes (a forwarded
    #: fill's key, cut to ``DEAD_LETTER_KEY_LIMIT`` in its header)
    key_summary: tuple[int, str] | None = None


def amount_text(value: Decimal) -> str:
    """Fixed-point text of a value already rounded to the fund's precision."""
    text = str(value)
    return text if "E" not in text else _fixed(value, text)


# The zero of each precision above 6 places, which ``str`` writes in exponent notation ("0E-8").
_FIXED_ZEROS: Final = {
    str(zero): format(zero, "f") for zero in (Decimal(0).scaleb(-places) for places in range(7, 64))
}


def _fixed(value: Decimal, text: str) -> str:
    """Fixed-point text of a value whose ``str`` is ``text``, in exponent notation (zero or tiny)."""
    return _FIXED_ZEROS.get(text) or format(value, "f")


#: Each quantum's number of places (``FundPolicy.precision`` reads the quantum's tuple: slow).
_PLACES: Final[dict[Decimal, int]] = {}


def _exact(value: Decimal, policy: FundPolicy) -> str:
    """Fixed-point text with the fund's places, or more when the value needs them to stay exact.

    The text depends on the value only: 2.5, "2.50" and "2.5000000000" all render "2.50000000".
    A plain text with no more places than the fund's is that text with zeros added (what rounding
    it and writing the rounded value gives, cheaper); anything else is rounded and compared.
    """
    places = _PLACES.get(policy.quantum)
    if places is None:
        places = _PLACES[policy.quantum] = policy.precision
    text = str(value)
    if "E" not in text:
        point = text.find(".")
        shown = 0 if point < 0 else len(text) - point - 1
        if shown == places:
            return text
        if shown < places:
            return f"{text}{'.' if point < 0 else ''}{'0' * (places - shown)}"
    rounded = policy.q(value)
    return amount_text(rounded) if rounded == value else format(value.normalize(EXACT), "f")


def delta_document(delta: FundDelta) -> dict[str, Any]:
    """The delta as its JSON object (SPEC section 4): the reference ``encode_delta`` writes faster."""
    return {
        "delta_id": delta.fill_id,
        "fund": delta.fund,
        "margin_currency": delta.margin_currency,
        "symbol": delta.symbol,
        "liquidation_id": delta.liquidation_id,
        "fill_id": delta.fill_id,
        "type": delta.type,
        "gross_pnl": amount_text(delta.gross_pnl),
        "fee": amount_text(delta.fee),
        "net": amount_text(delta.net),
        "amount": amount_text(delta.amount),
        "shortfall": amount_text(delta.shortfall),
        "balance_before": amount_text(delta.balance_before),
        "balance_after": amount_text(delta.balance_after),
        "sequence": delta.sequence,
        "timestamp": delta.timestamp,
        "version": OUTPUT_VERSION,
    }


#: Funds, currencies and symbols as JSON strings, quoted and escaped once (symbols are free text).
_QUOTED: Final[dict[str, str]] = {}  # Final: compiled, a static rather than a global looked up
_QUOTED_LIMIT: Final = 1 << 12
_dumps: Final = orjson.dumps
#: The last delta's shortfall and balance after, each with its text (one pair, replaced whole, so a
#: reader in another thread never sees a number with another's text): a fund's next delta starts
#: from that very balance, and a surplus's shortfall is the fund's zero, the same object every time.
#: Matched by identity (the pair holds the object, so its identity cannot pass to another): it only
#: saves writing the same number again.
_LAST_SHORTFALL: Final[list[tuple[Any, str]]] = [(None, "")]
_LAST_AFTER: Final[list[tuple[Any, str]]] = [(None, "")]
#: The last liquidation id quoted, with its JSON text: a liquidation's fills mostly come one after
#: another. Matched by equality (a text's quoting depends on its characters only).
_LAST_LIQUIDATION: Final[list[tuple[str, str]]] = [("", '""')]


def _quoted_liquidation(liquidation_id: str) -> str:
    last = _LAST_LIQUIDATION[0]
    if liquidation_id == last[0]:
        return last[1]
    quoted = _dumps(liquidation_id).decode()
    _LAST_LIQUIDATION[0] = (liquidation_id, quoted)
    return quoted


def _quoted(text: str) -> str:
    quoted = _QUOTED.get(text)
    if quoted is None:
        if len(_QUOTED) >= _QUOTED_LIMIT:
            _QUOTED.clear()
        quoted = _QUOTED[text] = _dumps(text).decode()
    return quoted


#: An output's fund, currency and symbol members as JSON text, by symbol (a symbol's fills mostly
#: go to one fund), with the fund and currency they were written for (compared by equality).
_NAMES: Final[dict[str, tuple[str, str, str]]] = {}


def _names(fund: str, currency: str, symbol: str) -> str:
    known = _NAMES.get(symbol)
    if known is not None and known[0] == fund and known[1] == currency:
        return known[2]
    if len(_NAMES) >= _QUOTED_LIMIT:
        _NAMES.clear()
    text = f'"fund":{_quoted(fund)},"margin_currency":{_quoted(currency)},"symbol":{_quoted(symbol)}'
    _NAMES[symbol] = (fund, currency, text)
    return text


def encode_delta(delta: FundDelta) -> bytes:
    """``orjson.dumps(delta_document(delta))``, byte for byte, written as text: the hot path.

    Strings go through orjson (its quoting and escaping), decimals are their ``str`` (several times
    faster than ``format``; only a text in exponent notation is rewritten; the last balance and
    shortfall written are not written again), integers their digits.
    """
    fund, margin_currency, symbol = delta.fund, delta.margin_currency, delta.symbol
    fill_id, liquidation_id, delta_type = delta.fill_id, delta.liquidation_id, delta.type
    gross_pnl, fee, net, amount, shortfall = (
        delta.gross_pnl,
        delta.fee,
        delta.net,
        delta.amount,
        delta.shortfall,
    )
    balance_before, balance_after = delta.balance_before, delta.balance_after
    sequence, timestamp = delta.sequence, delta.timestamp
    last_shortfall, last_after = _LAST_SHORTFALL[0], _LAST_AFTER[0]
    gross_text, fee_text, net_text = amount_text(gross_pnl), amount_text(fee), amount_text(net)
    paid_text = net_text if amount is net else amount_text(amount)  # a surplus is the net itself
    if shortfall is last_shortfall[0]:
        shortfall_text = last_shortfall[1]
    else:
        shortfall_text = amount_text(shortfall)
        _LAST_SHORTFALL[0] = (shortfall, shortfall_text)
    before_text = last_after[1] if balance_before is last_after[0] else amount_text(balance_before)
    after_text = amount_text(balance_after)
    _LAST_AFTER[0] = (balance_after, after_text)
    key = _dumps(fill_id).decode()
    return (
        f'{{"delta_id":{key},{_names(fund, margin_currency, symbol)},'
        f'"liquidation_id":{_quoted_liquidation(liquidation_id)},'
        f'"fill_id":{key},"type":"{delta_type}","gross_pnl":"{gross_text}","fee":"{fee_text}",'
        f'"net":"{net_text}","amount":"{paid_text}","shortfall":"{shortfall_text}",'
        f'"balance_before":"{before_text}","balance_after":"{after_text}","sequence":{sequence},'
        f'"timestamp":{timestamp},"version":{OUTPUT_VERSION}}}'
    ).encode()


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


def encode_operation(operation: FundOperation) -> bytes:
    """An operation as its canonical input document, which decodes to an equal operation."""
    document: dict[str, Any] = {
        "type": operation.type,
        "operation_id": operation.operation_id,
        "fund": operation.fund,
        "amount": str(operation.amount),
        "requested_by": operation.requested_by,
        "reason": operation.reason,
    }
    if operation.transfer_id is not None:
        document["transfer_id"] = operation.transfer_id
    document["timestamp"] = operation.timestamp
    document["version"] = operation.version
    return orjson.dumps(document)


def operation_delta_document(delta: OperationDelta) -> dict[str, Any]:
    """The delta of a top-up or withdrawal: the fill fields null, the fill's amounts zero."""
    zero = amount_text(delta.amount.copy_abs() * 0)  # the fund's (positive) zero, at its precision
    document: dict[str, Any] = {
        "delta_id": delta.operation_id,
        "fund": delta.fund,
        "margin_currency": delta.margin_currency,
        "symbol": None,
        "liquidation_id": None,
        "fill_id": None,
        "type": delta.type,
        "operation_id": delta.operation_id,
        "gross_pnl": zero,
        "fee": zero,
        "net": zero,
        "amount": amount_text(delta.amount),
        "shortfall": zero,
        "balance_before": amount_text(delta.balance_before),
        "balance_after": amount_text(delta.balance_after),
        "requested_by": delta.requested_by,
        "reason": delta.reason,
    }
    if delta.transfer_id is not None:
        document["transfer_id"] = delta.transfer_id
    document["sequence"] = delta.sequence
    document["timestamp"] = delta.timestamp
    document["version"] = OUTPUT_VERSION
    return document


def encode_operation_delta(delta: OperationDelta) -> bytes:
    return orjson.dumps(operation_delta_document(delta))


def trigger_document(trigger: AdlTrigger, policy: FundPolicy) -> dict[str, Any]:
    return {
        "trigger_id": trigger.trigger_id,
        "fund": trigger.fund,
        "margin_currency": trigger.margin_currency,
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


def adl_state_document(change: AdlStateChange) -> dict[str, Any]:
    """An ADL state change (SPEC section 9): thresholds as their shortest text, drawdown 8 places."""
    return {
        "fund": change.fund,
        "state": change.state,
        "previous_state": change.previous_state,
        "drawdown": amount_text(change.drawdown),
        "peak": amount_text(change.peak),
        "balance": amount_text(change.balance),
        "start": _shortest(change.start),
        "stop": _shortest(change.stop),
        "sequence": change.sequence,
        "timestamp": change.timestamp,
        "version": OUTPUT_VERSION,
    }


def _shortest(value: Decimal) -> str:
    return format(value.normalize(EXACT), "f")


def encode_adl_state(change: AdlStateChange) -> bytes:
    return orjson.dumps(adl_state_document(change))


def encode_trigger(trigger: AdlTrigger, policy: FundPolicy) -> bytes:
    """``orjson.dumps(trigger_document(trigger, policy))``, byte for byte, written as text as
    ``encode_delta`` writes (the reason and sides are names that need no escaping)."""
    fill_key = _dumps(trigger.fill_id).decode()  # the trigger's id is the prefix (plain) and this
    return (
        f'{{"trigger_id":"{TRIGGER_ID_PREFIX}{fill_key[1:]},'
        f"{_names(trigger.fund, trigger.margin_currency, trigger.symbol)},"
        f'"liquidation_id":{_quoted_liquidation(trigger.liquidation_id)},'
        f'"fill_id":{fill_key},"reason":"{trigger.reason}",'
        f'"liquidated_side":"{trigger.liquidated_side}","deleverage_side":"{trigger.deleverage_side}",'
        f'"bankruptcy_price":"{_exact(trigger.bankruptcy_price, policy)}",'
        f'"quantity":"{_exact(trigger.quantity, policy)}",'
        f'"unfilled_quantity":"{_exact(trigger.unfilled_quantity, policy)}",'
        f'"shortfall":"{amount_text(trigger.shortfall)}","fund_balance":"{amount_text(trigger.fund_balance)}",'
        f'"sequence":{trigger.sequence},"timestamp":{trigger.timestamp},"version":{OUTPUT_VERSION}}}'
    ).encode()


def encode_rejection(
    rejection: Rejection,
    value: bytes | None,
    key: bytes | None,
    topic: str,
    partition: int | None,
    offset: int,
    timestamp: int,
    summary: tuple[int, str] | None = None,
) -> bytes:
    """The dead letter of a rejected message read at ``topic``/``partition``/``offset``; ``summary``
    is the whole key's length and SHA-256 when ``key`` is only its first bytes."""
    letter = DeadLetter(
        rejection.error, rejection.detail, topic, partition, offset, value, key, timestamp, summary
    )
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
    summary = letter.key_summary
    if summary is None and key is not None and len(key) > DEAD_LETTER_KEY_LIMIT:
        summary = key_summary(key)
    if summary is not None:
        document["key_length"], document["key_sha256"] = summary
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


def key_summary(key: bytes) -> tuple[int, str]:
    """The length and SHA-256 (hex) of a key: what a dead letter keeps of one over the limit."""
    return len(key), hashlib.sha256(key).hexdigest()


def dead_letter_key(key: bytes | None) -> bytes | None:
    """The record key of a dead letter: the input key, cut to ``DEAD_LETTER_KEY_LIMIT`` bytes.

    Keying a dead letter by a key of nearly 1 MB (which the input's value can leave room for) would
    make the dead letter too large for the broker.
    """
    return key if key is None or len(key) <= DEAD_LETTER_KEY_LIMIT else key[:DEAD_LETTER_KEY_LIMIT]


def encode_dead_letter(letter: DeadLetter) -> bytes:
    return orjson.dumps(dead_letter_document(letter))


def loads(data: bytes | str) -> Any:
    """Parse trusted JSON (state files, our own outputs); raises ``ValueError`` on bad input."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise ValueError(str(error)) from error


def loads_object(data: bytes | None) -> dict[str, Any] | None:
    """A message's JSON object, or ``None`` for no value, not JSON, or JSON that is not an object."""
    if data is None:
        return None
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return document if type(document) is dict else None


def dumps(document: Any) -> bytes:
    return orjson.dumps(document)
