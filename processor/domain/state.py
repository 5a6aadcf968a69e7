"""Fund state and the per-fund policy (precision, floor, initial balance)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Final, NamedTuple

from mypy_extensions import mypyc_attr

from processor.domain.pools import FundPools
from processor.domain.record import Record

#: Context for every computation that moves money: wide enough that sums, products and the
#: inverse-contract quotient are exact (or, for the quotient, rounded far below the fund's precision).
EXACT = Context(prec=120, rounding=ROUND_HALF_EVEN, Emax=999_999, Emin=-999_999)
#: Round ``value`` to ``quantum``, half to even, in ``EXACT``: the context's own method (two
#: positional arguments, cheaper than ``Decimal.quantize``'s keywords on the per-fill path).
quantize: Final = EXACT.quantize

DEFAULT_PRECISION = 8


DEFAULT_DRAWDOWN_WINDOW_MS = 8 * 3600 * 1000


class DrawdownPolicy(NamedTuple):
    """SPEC section 9: a fund stops paying losses at ``drawdown >= start`` from its peak over the
    trailing ``window_ms`` of event time, and pays again at ``drawdown <= stop``."""

    start: Decimal
    stop: Decimal
    window_ms: int = DEFAULT_DRAWDOWN_WINDOW_MS


class FundPolicy(NamedTuple):
    """How one fund rounds, how far it may be drawn down, and when it stops paying (ADL policy)."""

    quantum: Decimal
    floor: Decimal
    initial_balance: Decimal
    zero: Decimal
    drawdown: DrawdownPolicy | None = None

    @property
    def precision(self) -> int:
        return -int(self.quantum.as_tuple().exponent)

    def q(self, value: Decimal) -> Decimal:
        """Round to the fund's precision, half to even."""
        return quantize(value, self.quantum)


class FundRules(NamedTuple):
    """Per-currency policies, with defaults for currencies not listed."""

    default_precision: int = DEFAULT_PRECISION
    precision: Mapping[str, int] = {}
    floor: Mapping[str, Decimal] = {}
    default_floor: Decimal = Decimal(0)
    initial_balance: Mapping[str, Decimal] = {}
    pools: FundPools = FundPools()
    default_drawdown: DrawdownPolicy | None = None
    drawdown: Mapping[str, DrawdownPolicy] = {}

    def policy_for(self, fund: str) -> FundPolicy:
        """A currency fund's policy from the per-currency settings; a pool's from its own initial
        balance and floor (or the defaults), at its currency's precision."""
        pool = self.pools.by_fund.get(fund)
        currency = pool.currency if pool is not None else fund
        places = self.precision.get(currency, self.default_precision)
        quantum = Decimal(1).scaleb(-places)
        zero = quantum * 0
        if pool is None:
            floor = self.floor.get(fund, self.default_floor)
            initial = self.initial_balance.get(fund, Decimal(0))
        else:
            floor = pool.floor if pool.floor is not None else self.default_floor
            initial = pool.initial_balance if pool.initial_balance is not None else Decimal(0)
        # Adding a positive zero turns a rounded -0 into 0.
        floor = quantize(floor, quantum) + zero
        initial = quantize(initial, quantum) + zero
        drawdown = self.drawdown.get(fund, self.default_drawdown)
        return FundPolicy(quantum=quantum, floor=floor, initial_balance=initial, zero=zero, drawdown=drawdown)


@mypyc_attr(acyclic=True, free_list_len=1)
class FundState(Record):
    """One insurance fund after the fills and operations folded into it so far (SPEC sections 5, 8).

    ``balance = initial + total_surplus - total_paid + total_top_ups - total_withdrawals``.
    """

    _fields = (
        "fund",
        "balance",
        "total_surplus",
        "total_paid",
        "total_shortfall",
        "fills",
        "duplicates",
        "adl_triggers",
        "sequence",
        "last_timestamp",
        "by_symbol",
        "operations",
        "total_top_ups",
        "total_withdrawals",
        "adl_state",
        "peak",
        "drawdown",
        "clock",
    )
    __slots__ = _fields

    def __init__(
        self,
        fund: str,
        balance: Decimal,
        total_surplus: Decimal,
        total_paid: Decimal,
        total_shortfall: Decimal,
        fills: int,
        duplicates: int,
        adl_triggers: int,
        sequence: int,
        last_timestamp: int | None,
        by_symbol: Mapping[str, Decimal],
        operations: int,
        total_top_ups: Decimal,
        total_withdrawals: Decimal,
        adl_state: str,
        peak: Decimal | None,
        drawdown: Decimal | None,
        clock: int | None,
    ) -> None:
        self.fund: Final = fund
        self.balance: Final = balance
        self.total_surplus: Final = total_surplus
        self.total_paid: Final = total_paid
        self.total_shortfall: Final = total_shortfall
        self.fills: Final = fills
        self.duplicates: Final = duplicates
        self.adl_triggers: Final = adl_triggers
        self.sequence: Final = sequence
        self.last_timestamp: Final = last_timestamp
        self.by_symbol: Final = by_symbol
        self.operations: Final = operations
        self.total_top_ups: Final = total_top_ups
        self.total_withdrawals: Final = total_withdrawals
        #: ADL policy (SPEC section 9), as of the last delta; ``peak`` is None while the policy is off
        self.adl_state: Final = adl_state
        self.peak: Final = peak
        self.drawdown: Final = drawdown
        self.clock: Final = clock  # the largest event time of the fund's deltas

    @classmethod
    def opened(cls, fund: str, policy: FundPolicy) -> FundState:
        zero = policy.zero
        return cls(
            fund=fund,
            balance=policy.initial_balance,
            total_surplus=zero,
            total_paid=zero,
            total_shortfall=zero,
            fills=0,
            duplicates=0,
            adl_triggers=0,
            sequence=0,
            last_timestamp=None,
            by_symbol={},
            operations=0,
            total_top_ups=zero,
            total_withdrawals=zero,
            adl_state="normal",
            peak=None,
            drawdown=None,
            clock=None,
        )
