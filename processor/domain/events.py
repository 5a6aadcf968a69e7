"""Domain events: the liquidation fills and treasury operations that come in, the deltas and ADL
triggers that go out.

Records (``processor.domain.record``): immutable, slotted and compared by value like frozen
dataclasses, but, compiled, built in a fiftieth of the time (a 14-field frozen dataclass costs ~2 us to
construct on CPython 3.11, more than the whole per-fill budget of the hot path).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final, Literal

from mypy_extensions import mypyc_attr

from processor.domain.record import Record

Side = Literal["long", "short"]
ContractType = Literal["linear", "inverse"]
DeltaType = Literal["liquidation_surplus", "bankruptcy_loss"]
OperationType = Literal["top_up", "withdrawal"]
AdlReason = Literal["insufficient_fund", "no_liquidity", "fund_drawdown"]

OPPOSITE_SIDE: dict[str, Side] = {"long": "short", "short": "long"}
#: An ADL trigger's id is this and its fill's id (a fill triggers at most once).
TRIGGER_ID_PREFIX: Final = "adl-"


@mypyc_attr(acyclic=True, free_list_len=1)
class LiquidationFill(Record):
    """One fill of a taken-over position, closed in the market by the liquidation engine."""

    _fields = (
        "fill_id",
        "liquidation_id",
        "symbol",
        "margin_currency",
        "side",
        "contract_type",
        "contract_size",
        "bankruptcy_price",
        "fill_price",
        "quantity",
        "unfilled_quantity",
        "fee",
        "timestamp",
        "version",
    )
    __slots__ = _fields

    def __init__(
        self,
        fill_id: str,
        liquidation_id: str,
        symbol: str,
        margin_currency: str,
        side: Side,
        contract_type: ContractType,
        contract_size: Decimal,
        bankruptcy_price: Decimal,
        fill_price: Decimal,
        quantity: Decimal,
        unfilled_quantity: Decimal,
        fee: Decimal,
        timestamp: int,
        version: int = 1,
    ) -> None:
        self.fill_id: Final = fill_id
        self.liquidation_id: Final = liquidation_id
        self.symbol: Final = symbol
        self.margin_currency: Final = margin_currency
        self.side: Final = side
        self.contract_type: Final = contract_type
        self.contract_size: Final = contract_size
        self.bankruptcy_price: Final = bankruptcy_price
        self.fill_price: Final = fill_price
        self.quantity: Final = quantity
        self.unfilled_quantity: Final = unfilled_quantity
        self.fee: Final = fee
        self.timestamp: Final = timestamp
        self.version: Final = version

    @property
    def event_id(self) -> str:
        """The idempotency key: what the duplicate window remembers the fill by."""
        return self.fill_id


@mypyc_attr(acyclic=True, free_list_len=1)
class FundOperation(Record):
    """A treasury top-up or withdrawal of one fund (SPEC section 8)."""

    _fields = (
        "operation_id",
        "type",
        "fund",
        "amount",
        "requested_by",
        "reason",
        "transfer_id",
        "timestamp",
        "version",
    )
    __slots__ = _fields

    def __init__(
        self,
        operation_id: str,
        type: OperationType,
        fund: str,
        amount: Decimal,
        requested_by: str,
        reason: str,
        transfer_id: str | None,
        timestamp: int,
        version: int = 1,
    ) -> None:
        self.operation_id: Final = operation_id
        self.type: Final = type
        self.fund: Final = fund
        self.amount: Final = amount
        self.requested_by: Final = requested_by
        self.reason: Final = reason
        self.transfer_id: Final = transfer_id
        self.timestamp: Final = timestamp
        self.version: Final = version

    @property
    def event_id(self) -> str:
        """The idempotency key: what the duplicate window remembers the operation by."""
        return self.operation_id


@mypyc_attr(acyclic=True, free_list_len=1)
class FundDelta(Record):
    """The change one accepted fill made to its fund (possibly zero)."""

    _fields = (
        "fund",
        "margin_currency",
        "symbol",
        "liquidation_id",
        "fill_id",
        "type",
        "gross_pnl",
        "fee",
        "net",
        "amount",
        "shortfall",
        "balance_before",
        "balance_after",
        "sequence",
        "timestamp",
    )
    __slots__ = _fields

    def __init__(
        self,
        fund: str,
        margin_currency: str,
        symbol: str,
        liquidation_id: str,
        fill_id: str,
        type: DeltaType,
        gross_pnl: Decimal,
        fee: Decimal,
        net: Decimal,
        amount: Decimal,
        shortfall: Decimal,
        balance_before: Decimal,
        balance_after: Decimal,
        sequence: int,
        timestamp: int,
    ) -> None:
        self.fund: Final = fund
        self.margin_currency: Final = margin_currency
        self.symbol: Final = symbol
        self.liquidation_id: Final = liquidation_id
        self.fill_id: Final = fill_id
        self.type: Final = type
        self.gross_pnl: Final = gross_pnl
        self.fee: Final = fee
        self.net: Final = net
        self.amount: Final = amount
        self.shortfall: Final = shortfall
        self.balance_before: Final = balance_before
        self.balance_after: Final = balance_after
        self.sequence: Final = sequence
        self.timestamp: Final = timestamp

    @property
    def delta_id(self) -> str:
        return self.fill_id


@mypyc_attr(acyclic=True, free_list_len=1)
class OperationDelta(Record):
    """The change one applied top-up or withdrawal made to its fund; ``amount`` is signed."""

    _fields = (
        "fund",
        "margin_currency",
        "operation_id",
        "type",
        "amount",
        "balance_before",
        "balance_after",
        "requested_by",
        "reason",
        "transfer_id",
        "sequence",
        "timestamp",
    )
    __slots__ = _fields

    def __init__(
        self,
        fund: str,
        margin_currency: str,
        operation_id: str,
        type: OperationType,
        amount: Decimal,
        balance_before: Decimal,
        balance_after: Decimal,
        requested_by: str,
        reason: str,
        transfer_id: str | None,
        sequence: int,
        timestamp: int,
    ) -> None:
        self.fund: Final = fund
        self.margin_currency: Final = margin_currency
        self.operation_id: Final = operation_id
        self.type: Final = type
        self.amount: Final = amount
        self.balance_before: Final = balance_before
        self.balance_after: Final = balance_after
        self.requested_by: Final = requested_by
        self.reason: Final = reason
        self.transfer_id: Final = transfer_id
        self.sequence: Final = sequence
        self.timestamp: Final = timestamp

    @property
    def delta_id(self) -> str:
        return self.operation_id


@mypyc_attr(acyclic=True, free_list_len=1)
class AdlStateChange(Record):
    """A fund moved between ``normal`` and ``drawdown`` (SPEC section 9) after delta ``sequence``."""

    _fields = (
        "fund",
        "state",
        "previous_state",
        "drawdown",
        "peak",
        "balance",
        "start",
        "stop",
        "sequence",
        "timestamp",
    )
    __slots__ = _fields

    def __init__(
        self,
        fund: str,
        state: str,
        previous_state: str,
        drawdown: Decimal,
        peak: Decimal,
        balance: Decimal,
        start: Decimal,
        stop: Decimal,
        sequence: int,
        timestamp: int,
    ) -> None:
        self.fund: Final = fund
        self.state: Final = state
        self.previous_state: Final = previous_state
        self.drawdown: Final = drawdown  # exact; written with 8 places
        self.peak: Final = peak
        self.balance: Final = balance
        self.start: Final = start
        self.stop: Final = stop
        self.sequence: Final = sequence
        self.timestamp: Final = timestamp


@mypyc_attr(acyclic=True, free_list_len=1)
class AdlTrigger(Record):
    """A request to auto-deleverage what the fund or the market could not absorb."""

    _fields = (
        "fund",
        "margin_currency",
        "symbol",
        "liquidation_id",
        "fill_id",
        "reason",
        "liquidated_side",
        "deleverage_side",
        "bankruptcy_price",
        "quantity",
        "unfilled_quantity",
        "shortfall",
        "fund_balance",
        "sequence",
        "timestamp",
    )
    __slots__ = _fields

    def __init__(
        self,
        fund: str,
        margin_currency: str,
        symbol: str,
        liquidation_id: str,
        fill_id: str,
        reason: AdlReason,
        liquidated_side: Side,
        deleverage_side: Side,
        bankruptcy_price: Decimal,
        quantity: Decimal,
        unfilled_quantity: Decimal,
        shortfall: Decimal,
        fund_balance: Decimal,
        sequence: int,
        timestamp: int,
    ) -> None:
        self.fund: Final = fund
        self.margin_currency: Final = margin_currency
        self.symbol: Final = symbol
        self.liquidation_id: Final = liquidation_id
        self.fill_id: Final = fill_id
        self.reason: Final = reason
        self.liquidated_side: Final = liquidated_side
        self.deleverage_side: Final = deleverage_side
        self.bankruptcy_price: Final = bankruptcy_price
        self.quantity: Final = quantity
        self.unfilled_quantity: Final = unfilled_quantity
        self.shortfall: Final = shortfall
        self.fund_balance: Final = fund_balance
        self.sequence: Final = sequence
        self.timestamp: Final = timestamp

    @property
    def trigger_id(self) -> str:
        return TRIGGER_ID_PREFIX + self.fill_id
