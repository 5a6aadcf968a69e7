"""The fund state as documents a worker writes and reads back (state file, HTTP view, changelog-backed
table values), so each format's writer and reader sit side by side."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

from processor.codec.encoding import amount_text
from processor.codec.schema import SUPPORTED_VERSION
from processor.domain.events import LiquidationFill
from processor.domain.state import FundState

#: Key of the tail records the faust-based worker (v1) wrote to every changelog partition; never a
#: fund id (those are A-Z, 0-9). Readers of the tables skip them.
TAIL_KEY = b"~"


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
