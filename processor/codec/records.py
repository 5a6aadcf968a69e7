"""The fund state as documents a worker writes and reads back (state file, HTTP view, changelog-backed
table values), so each format's writer and reader sit side by side."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

from processor.codec.encoding import amount_text
from processor.codec.schema import SUPPORTED_VERSION
from processor.domain.events import FundOperation, LiquidationFill
from processor.domain.fold import Applied
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
    return document


def encode_states(states: Iterable[FundState]) -> bytes:
    """The state file / HTTP view: an object keyed by fund, funds in sorted order."""
    ordered = sorted(states, key=lambda state: state.fund)
    return orjson.dumps({state.fund: state_document(state) for state in ordered}, option=orjson.OPT_INDENT_2)


def decode_state(document: Mapping[str, Any]) -> FundState:
    """Read one fund's state back (from a table value or a state file)."""
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
    )


class FundRecord(NamedTuple):
    """A fund table value: the state, and the last input offset applied from each source partition."""

    state: FundState
    applied_offsets: dict[str, int]


def encode_fund_record(record: FundRecord) -> bytes:
    return orjson.dumps({"state": state_document(record.state), "applied_offsets": record.applied_offsets})


def decode_fund_record(data: bytes) -> FundRecord:
    document = orjson.loads(data)
    return FundRecord(decode_state(document["state"]), dict(document["applied_offsets"]))


def _fill_row(fill: LiquidationFill, fund: str) -> list[Any]:
    """A fill as a segment row; a pool's fill (whose currency is not its fund id) adds its currency."""
    row = [
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
    if fill.margin_currency != fund:
        row.append(fill.margin_currency)
    return row


def _operation_row(operation: FundOperation) -> dict[str, Any]:
    """An operation as a segment row: an object, where a fill's row is an array."""
    return {
        "operation_id": operation.operation_id,
        "type": operation.type,
        "amount": str(operation.amount),
        "requested_by": operation.requested_by,
        "reason": operation.reason,
        "transfer_id": operation.transfer_id,
        "timestamp": operation.timestamp,
    }


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


def encode_fill_segment(fund: str, events: Iterable[Applied]) -> bytes:
    """The fills and operations one batch applied to ``fund``, kept so a restarted worker still knows
    its duplicates."""
    rows = [
        _fill_row(event, fund) if isinstance(event, LiquidationFill) else _operation_row(event)
        for event in events
    ]
    return orjson.dumps(rows)


def decode_fill_segment(fund: str, data: bytes) -> list[Applied]:
    events: list[Applied] = []
    for row in orjson.loads(data):
        if type(row) is dict:
            events.append(operation_from_row(fund, row))
            continue
        currency = row[12] if len(row) > 12 else fund
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
