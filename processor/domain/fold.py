"""The fold: SPEC section 3 as one pure function. The only place where money moves."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Context, getcontext, setcontext
from typing import NamedTuple

from processor.domain.events import OPPOSITE_SIDE, AdlTrigger, FundDelta, LiquidationFill
from processor.domain.state import EXACT, FundPolicy, FundState

_ROUND = EXACT.rounding
# Records are built positionally through tuple.__new__: keyword construction of a 14-field NamedTuple
# costs ~1 us, a tenth of the per-fill budget. The field order is the class's.
_new = tuple.__new__


class Outcome(NamedTuple):
    """What one fill did to its fund.

    Accepted: ``delta`` is set (and ``trigger`` when ADL is needed). Identical duplicate: only the
    state's ``duplicates`` moved. Conflicting duplicate: ``conflict`` names the differing fields and
    the state is unchanged.
    """

    state: FundState
    delta: FundDelta | None = None
    trigger: AdlTrigger | None = None
    conflict: str | None = None


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


def apply(
    state: FundState, fill: LiquidationFill, policy: FundPolicy, applied: LiquidationFill | None
) -> Outcome:
    """Fold ``fill`` into ``state``; ``applied`` is the fill already applied under the same fill_id.

    Arithmetic runs in the ``EXACT`` decimal context. Drivers that fold many fills enter it once
    (``with exact_arithmetic():``); a lone call enters it here.
    """
    if getcontext() is not EXACT:
        with exact_arithmetic():
            return apply(state, fill, policy, applied)
    if applied is not None:
        if applied == fill:
            return Outcome(state._replace(duplicates=state.duplicates + 1))
        return Outcome(state, conflict=describe_conflict(applied, fill))

    (
        fill_id,
        liquidation_id,
        symbol,
        _,
        side,
        contract_type,
        contract_size,
        bankruptcy_price,
        fill_price,
        quantity,
        unfilled,
        fill_fee,
        timestamp,
        _,
    ) = fill
    (
        fund,
        balance_before,
        total_surplus,
        total_paid,
        total_shortfall,
        fills,
        duplicates,
        adl_triggers,
        sequence,
        _,
        by_symbol,
    ) = state
    quantum, floor, _, zero = policy

    contracts = quantity * contract_size
    move = fill_price - bankruptcy_price if side == "long" else bankruptcy_price - fill_price
    if contract_type == "linear":
        gross_exact = move * contracts
    else:
        gross_exact = contracts * move / (bankruptcy_price * fill_price)
    # A rounded -0 becomes the fund's (positive) zero, so no output ever reads "-0.00000000".
    gross_pnl = gross_exact.quantize(quantum, _ROUND) or zero
    fee = fill_fee.quantize(quantum, _ROUND)
    net = gross_pnl - fee

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
        paid = (loss if loss < available else available) if available > zero else zero
        amount = zero - paid
        shortfall = loss - paid
    balance_after = balance_before + amount
    sequence += 1

    delta: FundDelta = _new(
        FundDelta,
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
        ),
    )

    trigger: AdlTrigger | None = None
    if shortfall or unfilled:
        if shortfall:
            reason = "insufficient_fund"
            uncovered = (quantity * shortfall / loss).quantize(quantum, _ROUND)
            adl_quantity = uncovered + unfilled
        else:
            reason = "no_liquidity"
            adl_quantity = unfilled
        trigger = _new(
            AdlTrigger,
            (
                fund,
                symbol,
                liquidation_id,
                fill_id,
                reason,
                side,
                OPPOSITE_SIDE[side],
                bankruptcy_price,
                adl_quantity,
                unfilled,
                shortfall,
                balance_after,
                sequence,
                timestamp,
            ),
        )
        adl_triggers += 1

    by_symbol = dict(by_symbol)
    by_symbol[symbol] = by_symbol.get(symbol, zero) + amount
    new_state: FundState = _new(
        FundState,
        (
            fund,
            balance_after,
            total_surplus,
            total_paid + paid,
            total_shortfall + shortfall,
            fills + 1,
            duplicates,
            adl_triggers,
            sequence,
            timestamp,
            by_symbol,
        ),
    )
    return _new(Outcome, (new_state, delta, trigger, None))


def describe_conflict(applied: LiquidationFill, fill: LiquidationFill) -> str:
    """Say which fields of a re-sent fill differ from the one already applied."""
    differences = [
        f"{name} {new!s} (applied: {old!s})"
        for name, old, new in zip(LiquidationFill._fields, applied, fill, strict=True)
        if old != new
    ]
    return (
        f"fill_id {fill.fill_id!r} was already applied to fund {fill.margin_currency} "
        f"with different content: {', '.join(differences)}"
    )
