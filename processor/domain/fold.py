"""The fold: SPEC section 3 as one pure function. The only place where money moves."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Context, Decimal, getcontext, setcontext
from typing import Final

from mypy_extensions import mypyc_attr

from processor.domain.events import (
    OPPOSITE_SIDE,
    AdlReason,
    AdlStateChange,
    AdlTrigger,
    DeltaType,
    FundDelta,
    FundOperation,
    LiquidationFill,
    OperationDelta,
)
from processor.domain.record import Record
from processor.domain.state import EXACT, FundPolicy, FundState
from processor.domain.state import quantize as _quantize

_EXACT: Final = EXACT  # Final: compiled, a constant rather than a look-up of the module's globals


#: What a fund remembers under an idempotency key: the fill or operation applied with it.
Applied = LiquidationFill | FundOperation


@mypyc_attr(acyclic=True, free_list_len=1)
class Outcome(Record):
    """What one fill or operation did to its fund.

    Accepted: ``delta`` is set (and ``trigger`` when ADL is needed). Identical duplicate: only the
    state's ``duplicates`` moved. Conflicting duplicate: ``conflict`` names the differing fields and
    the state is unchanged. Refused withdrawal: ``refusal`` says why, and the state is unchanged.
    ``state_change`` is set when the delta moved the fund between ``normal`` and ``drawdown`` (SPEC
    section 9).
    """

    _fields = ("state", "delta", "trigger", "conflict", "refusal", "state_change")
    __slots__ = _fields

    def __init__(
        self,
        state: FundState,
        delta: FundDelta | OperationDelta | None = None,
        trigger: AdlTrigger | None = None,
        conflict: str | None = None,
        refusal: str | None = None,
        state_change: AdlStateChange | None = None,
    ) -> None:
        self.state: Final = state
        self.delta: Final = delta
        self.trigger: Final = trigger
        self.conflict: Final = conflict
        self.refusal: Final = refusal
        self.state_change: Final = state_change


# Compiled, a module constant (``Final``) is read from a static, where a global name is a
# dictionary look-up on every call: the names ``apply`` reaches for on every fill, as constants.
_getcontext: Final = getcontext


@contextmanager
def exact_arithmetic() -> Iterator[Context]:
    """Make ``EXACT`` itself the current decimal context for a run of ``apply`` calls.

    Installed, not copied (``localcontext`` would copy it, and ``apply`` would then enter a context
    of its own for every fill), so ``apply`` recognises it by identity. It is shared: code inside the
    block must not change its settings; its flags are never read.
    """
    previous = getcontext()
    setcontext(EXACT)
    try:
        yield EXACT
    finally:
        setcontext(previous)


def apply(state: FundState, fill: LiquidationFill, policy: FundPolicy, applied: Applied | None) -> Outcome:
    """Fold ``fill`` into ``state``; ``applied`` is what was already applied under the same id.

    Arithmetic runs in the ``EXACT`` decimal context. Drivers that fold many fills enter it once
    (``with exact_arithmetic():``); a lone call enters it here.
    """
    if _getcontext() is not _EXACT:
        with exact_arithmetic():
            return apply(state, fill, policy, applied)
    if applied is not None:
        if applied == fill:
            return Outcome(state._replace(duplicates=state.duplicates + 1))
        return Outcome(state, conflict=describe_conflict(state.fund, applied, fill))

    bankruptcy_price, fill_price, quantity = fill.bankruptcy_price, fill.fill_price, fill.quantity
    unfilled, side, symbol = fill.unfilled_quantity, fill.side, fill.symbol
    balance_before, total_surplus, adl_state = state.balance, state.total_surplus, state.adl_state
    quantum, floor, _, zero, _ = policy

    contracts = quantity * fill.contract_size
    move = fill_price - bankruptcy_price if side == "long" else bankruptcy_price - fill_price
    if fill.contract_type == "linear":
        gross_exact = move * contracts
    else:
        gross_exact = contracts * move / (bankruptcy_price * fill_price)
    # A rounded -0 becomes the fund's (positive) zero, so no output ever reads "-0.00000000".
    gross_pnl = _quantize(gross_exact, quantum) or zero
    fee = _quantize(fill.fee, quantum)
    net = gross_pnl - fee

    delta_type: DeltaType
    if net >= zero:
        delta_type = "liquidation_surplus"
        amount = net
        paid = shortfall = zero
        if amount:
            total_surplus += amount
    else:
        delta_type = "bankruptcy_loss"
        loss = -net
        available = balance_before - floor
        # SPEC section 9: in drawdown (the state before the fill decides) the fund pays nothing
        paying = adl_state != "drawdown"
        if paying and loss < available:
            # Covered in full: the fund pays the net loss and nothing is short. These are the numbers
            # ``zero - paid`` and ``loss - paid`` give, with the same exponent (every amount has the
            # quantum's), without computing them, and the writer then has their texts already.
            paid, amount, shortfall = loss, net, zero
        else:
            paid = available if paying and available > zero else zero
            amount = zero - paid
            shortfall = loss - paid
    balance_after = balance_before + amount
    sequence = state.sequence + 1

    delta = FundDelta(
        state.fund,
        fill.margin_currency,
        symbol,
        fill.liquidation_id,
        fill.fill_id,
        delta_type,
        gross_pnl,
        fee,
        net,
        amount,
        shortfall,
        balance_before,
        balance_after,
        sequence,
        fill.timestamp,
    )

    trigger: AdlTrigger | None = None
    adl_triggers = state.adl_triggers
    if shortfall or unfilled:
        reason: AdlReason
        if shortfall:
            reason = "fund_drawdown" if adl_state == "drawdown" else "insufficient_fund"
            uncovered = _quantize(quantity * shortfall / loss, quantum)
            adl_quantity = uncovered + unfilled
        else:
            reason = "no_liquidity"
            adl_quantity = unfilled
        trigger = AdlTrigger(
            state.fund,
            fill.margin_currency,
            symbol,
            fill.liquidation_id,
            fill.fill_id,
            reason,
            side,
            OPPOSITE_SIDE[side],
            bankruptcy_price,
            adl_quantity,
            unfilled,
            shortfall,
            balance_after,
            sequence,
            fill.timestamp,
        )
        adl_triggers += 1

    by_symbol = dict(state.by_symbol)
    by_symbol[symbol] = by_symbol.get(symbol, zero) + amount
    new_state = FundState(
        state.fund,
        balance_after,
        total_surplus,
        state.total_paid + paid,
        state.total_shortfall + shortfall,
        state.fills + 1,
        state.duplicates,
        adl_triggers,
        sequence,
        fill.timestamp,
        by_symbol,
        state.operations,
        state.total_top_ups,
        state.total_withdrawals,
        adl_state,
        state.peak,
        state.drawdown,
        state.clock,
    )
    return Outcome(new_state, delta, trigger)


def apply_operation(
    state: FundState, operation: FundOperation, policy: FundPolicy, currency: str, applied: Applied | None
) -> Outcome:
    """Fold a top-up or withdrawal of ``currency`` into ``state`` (SPEC section 8).

    A withdrawal that would take the balance below the floor is refused: nothing changes, and the
    operation is not remembered, so sending it again later tries again.
    """
    if getcontext() is not _EXACT:
        with exact_arithmetic():
            return apply_operation(state, operation, policy, currency, applied)
    if applied is not None:
        if applied == operation:
            return Outcome(state._replace(duplicates=state.duplicates + 1))
        return Outcome(state, conflict=describe_conflict(state.fund, applied, operation))
    amount = policy.q(operation.amount)
    balance_before = state.balance
    if operation.type == "top_up":
        signed = amount
        top_ups, withdrawals = state.total_top_ups + amount, state.total_withdrawals
    else:
        if balance_before - amount < policy.floor:
            return Outcome(state, refusal=describe_refusal(state.fund, balance_before, policy.floor, amount))
        signed = policy.zero - amount
        top_ups, withdrawals = state.total_top_ups, state.total_withdrawals + amount
    balance_after = balance_before + signed
    sequence = state.sequence + 1
    timestamp = operation.timestamp
    delta = OperationDelta(
        state.fund,
        currency,
        operation.operation_id,
        operation.type,
        signed,
        balance_before,
        balance_after,
        operation.requested_by,
        operation.reason,
        operation.transfer_id,
        sequence,
        timestamp,
    )
    new_state = state._replace(
        balance=balance_after,
        sequence=sequence,
        last_timestamp=timestamp,
        operations=state.operations + 1,
        total_top_ups=top_ups,
        total_withdrawals=withdrawals,
    )
    return Outcome(new_state, delta)


def describe_refusal(fund: str, balance: Decimal, floor: Decimal, amount: Decimal) -> str:
    return (
        f"withdrawal of amount {amount:f} from fund {fund} refused: balance {balance:f} - amount "
        f"{amount:f} would fall below the floor {floor:f}"
    )


def describe_conflict(fund: str, applied: Applied, event: Applied) -> str:
    """Say which fields of a re-sent fill or operation differ from the one already applied."""
    kind, key = (
        ("fill_id", event.fill_id)
        if isinstance(event, LiquidationFill)
        else ("operation_id", event.operation_id)
    )
    if type(applied) is not type(event):
        other = "a fill" if type(applied) is LiquidationFill else "an operation"
        return f"{kind} {key!r} was already used by {other} applied to fund {fund}"
    differences = [
        f"{name} {new!s} (applied: {old!s})"
        for name, old, new in zip(event._fields, applied._values(), event._values(), strict=True)
        if old != new
    ]
    return (
        f"{kind} {key!r} was already applied to fund {fund} with different content: {', '.join(differences)}"
    )
