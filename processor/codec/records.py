"""The fund state as documents a worker writes and reads back (state file, HTTP view, changelog-backed
table values), so each format's writer and reader sit side by side."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

from processor.codec.encoding import amount_text
from processor.codec.schema import SUPPORTED_VERSION
from processor.domain.drawdown import rounded_drawdown
from processor.domain.events import FundOperation, LiquidationFill
from processor.domain.fold import Applied
from processor.domain.ledger import Mark
from processor.domain.state import FundState

#: Key of the tail records the faust-based worker (v1) wrote to every changelog partition; never a
#: fund id (those are A-Z, 0-9). Readers of the tables skip them.
TAIL_KEY = b"~"


def state_document(state: FundState) -> dict[str, Any]:
    """SPEC section 5's fields, and section 8's once the fund has applied an operation (so a fund
    without operations reads exactly as in v1)."""
    document = {
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
    if state.operations:
        document["operations"] = state.operations
        document["total_top_ups"] = amount_text(state.total_top_ups)
        document["total_withdrawals"] = amount_text(state.total_withdrawals)
    if state.peak is not None:  # under an ADL policy (SPEC section 9), as of the last delta
        document["adl_state"] = state.adl_state
        document["drawdown"] = amount_text(state.drawdown or rounded_drawdown(Decimal(0)))
        document["peak"] = amount_text(state.peak)
    return document


def encode_states(states: Iterable[FundState]) -> bytes:
    """The state file / HTTP view: an object keyed by fund, funds in sorted order."""
    ordered = sorted(states, key=lambda state: state.fund)
    return orjson.dumps({state.fund: state_document(state) for state in ordered}, option=orjson.OPT_INDENT_2)


def decode_state(document: Mapping[str, Any], clock: int | None = None) -> FundState:
    """Read one fund's state back (from a table value or a state file); ``clock`` is the ADL
    policy's clock, kept in the table record beside the state."""
    balance = Decimal(document["balance"])
    zero = balance * 0  # the fund's zero, at its precision
    return FundState(
        fund=document["fund"],
        balance=balance,
        total_surplus=Decimal(document["total_surplus"]),
        total_paid=Decimal(document["total_paid"]),
        total_shortfall=Decimal(document["total_shortfall"]),
        fills=document["fills"],
        duplicates=document["duplicates"],
        adl_triggers=document["adl_triggers"],
        sequence=document["sequence"],
        last_timestamp=document["last_timestamp"],
        by_symbol={symbol: Decimal(amount) for symbol, amount in document["by_symbol"].items()},
        operations=document.get("operations", 0),
        total_top_ups=Decimal(document.get("total_top_ups", zero)),
        total_withdrawals=Decimal(document.get("total_withdrawals", zero)),
        adl_state=document.get("adl_state", "normal"),
        peak=Decimal(document["peak"]) if "peak" in document else None,
        drawdown=Decimal(document["drawdown"]) if "drawdown" in document else None,
        clock=clock,
    )


class FundRecord(NamedTuple):
    """A fund table value: the state, and the last input offset applied from each source partition."""

    state: FundState
    applied_offsets: dict[str, int]


def encode_fund_record(record: FundRecord) -> bytes:
    document: dict[str, Any] = {
        "state": state_document(record.state),
        "applied_offsets": record.applied_offsets,
    }
    if record.state.clock is not None:
        document["adl_clock"] = record.state.clock
    return orjson.dumps(document)


def decode_fund_record(data: bytes) -> FundRecord:
    document = orjson.loads(data)
    return FundRecord(
        decode_state(document["state"], document.get("adl_clock")), dict(document["applied_offsets"])
    )


def _fill_row(fill: LiquidationFill, fund: str, mark: Mark | None) -> list[Any]:
    """A fill as a segment row: an array, with an object of extras last when there are any: a pool's
    fill (whose currency is not its fund id) its currency, a fund under an ADL policy the mark."""
    row: list[Any] = [
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
    extras: dict[str, Any] = {}
    if fill.margin_currency != fund:
        extras["currency"] = fill.margin_currency
    if mark is not None:
        extras["mark"] = _mark_row(mark)
    if extras:
        row.append(extras)
    return row


def _mark_row(mark: Mark) -> list[Any]:
    return [mark.clock, amount_text(mark.before), amount_text(mark.after)]


def row_currency(row: list[Any], fund: str) -> str:
    """The currency of a fill's segment row (its fund's, unless it came from a pool)."""
    return row[12].get("currency", fund) if len(row) > 12 else fund


def row_mark(row: Any) -> tuple[int, str, str] | None:
    """The mark of a segment row (clock, balance before and after, as text), if it has one."""
    extras = row if type(row) is dict else row[12] if len(row) > 12 else {}
    mark = extras.get("mark")
    return None if mark is None else (mark[0], mark[1], mark[2])


def _operation_row(operation: FundOperation, mark: Mark | None) -> dict[str, Any]:
    """An operation as a segment row: an object, where a fill's row is an array."""
    row: dict[str, Any] = {
        "operation_id": operation.operation_id,
        "type": operation.type,
        "amount": str(operation.amount),
        "requested_by": operation.requested_by,
        "reason": operation.reason,
        "transfer_id": operation.transfer_id,
        "timestamp": operation.timestamp,
    }
    if mark is not None:
        row["mark"] = _mark_row(mark)
    return row


def operation_from_row(fund: str, row: Mapping[str, Any]) -> FundOperation:
    return FundOperation(
        row["operation_id"],
        row["type"],
        fund,
        Decimal(row["amount"]),
        row["requested_by"],
        row["reason"],
        row["transfer_id"],
        row["timestamp"],
        SUPPORTED_VERSION,
    )


def encode_fill_segment(fund: str, events: Sequence[Applied], marks: Sequence[Mark] | None = None) -> bytes:
    """The fills and operations one batch applied to ``fund``, kept so a restarted worker still knows
    its duplicates (and, with ``marks``, one per event, its ADL peak window)."""
    rows = [
        _fill_row(event, fund, marks[index] if marks else None)
        if isinstance(event, LiquidationFill)
        else _operation_row(event, marks[index] if marks else None)
        for index, event in enumerate(events)
    ]
    return orjson.dumps(rows)


def decode_fill_segment(fund: str, data: bytes) -> list[Applied]:
    events: list[Applied] = []
    for row in orjson.loads(data):
        if type(row) is dict:
            events.append(operation_from_row(fund, row))
            continue
        currency = row_currency(row, fund)
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
        ) = row[:12]
        events.append(
            LiquidationFill(
                fill_id,
                liquidation_id,
                symbol,
                currency,
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
    return events
