"""ADL policy, drawdown protection (SPEC section 9): the rolling peak of a fund's balance over a
trailing event-time window, and the ``normal`` / ``drawdown`` states with hysteresis.

The window is a data structure the ledger keeps beside the fund state (like the duplicate window);
the state change itself is the pure function ``transition``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal, NamedTuple

from processor.domain.state import EXACT, DrawdownPolicy

AdlState = Literal["normal", "drawdown"]
NORMAL: AdlState = "normal"
DRAWDOWN: AdlState = "drawdown"
DRAWDOWN_QUANTUM = Decimal("0.00000001")  # SPEC section 9: drawdown as a string of 8 places
_ZERO = Decimal(0)


class Transition(NamedTuple):
    """A fund's ADL state after a delta, with the drawdown it was judged on."""

    state: AdlState
    drawdown: Decimal  # exact; rounded only where written


def transition(current: AdlState, peak: Decimal, balance: Decimal, policy: DrawdownPolicy) -> Transition:
    """The state after a delta whose ``balance_after`` is ``balance`` with ``peak`` over the window.

    Thresholds are compared without division (``peak - balance >= start x peak``); the drawdown is 0
    when the peak is not positive.
    """
    if peak <= _ZERO:
        return Transition(NORMAL, _ZERO)
    fall = peak - balance
    drawdown = EXACT.divide(fall, peak)
    if current == NORMAL:
        return Transition(DRAWDOWN if fall >= EXACT.multiply(policy.start, peak) else NORMAL, drawdown)
    return Transition(NORMAL if fall <= EXACT.multiply(policy.stop, peak) else DRAWDOWN, drawdown)


def rounded_drawdown(drawdown: Decimal) -> Decimal:
    return drawdown.quantize(DRAWDOWN_QUANTUM, ROUND_HALF_EVEN, EXACT)


class _Record:
    """A balance recorded at ``clock`` (None: the seed, before every record); ``following`` is the
    clock of the record after it, once there is one."""

    __slots__ = ("balance", "clock", "following")

    def __init__(self, clock: int | None, balance: Decimal) -> None:
        self.clock = clock
        self.balance = balance
        self.following: int | None = None


class PeakWindow:
    """The highest balance a fund held in ``[c - window_ms, c]``, exactly, as the clock ``c`` moves.

    The records that can still be that peak: the balance at ``c - window_ms`` (the last one recorded
    at or before it, or the seed, the balance before the first record), and every later one that no
    still later record equals or exceeds (a record dominated so cannot be the peak again, and a
    dominated record at ``c - window_ms`` is outweighed by the later one that dominates it). They are
    kept in recording order, highest first, each with the clock of the record that followed it, which
    says when it has slipped before ``c - window_ms``. Memory: at most the records of the window.
    """

    __slots__ = ("_records", "window_ms")

    def __init__(self, window_ms: int, seed: Decimal | None = None) -> None:
        self.window_ms = window_ms
        self._records: deque[_Record] = deque()
        if seed is not None:
            self._records.append(_Record(None, seed))

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[tuple[int | None, Decimal]]:
        for record in self._records:
            yield record.clock, record.balance

    def copy(self) -> PeakWindow:
        """An independent window holding the same records."""
        twin = PeakWindow(self.window_ms)
        for record in self._records:
            clone = _Record(record.clock, record.balance)
            clone.following = record.following
            twin._records.append(clone)
        return twin

    def record(self, clock: int, balance: Decimal) -> Decimal:
        """Record ``balance`` at ``clock`` (never less than the last clock) and return the peak."""
        records = self._records
        if records:
            records[-1].following = clock
        while records and records[-1].balance <= balance:
            records.pop()
        records.append(_Record(clock, balance))
        horizon = clock - self.window_ms
        while len(records) > 1:
            following = records[0].following
            if following is None or following > horizon:
                break
            records.popleft()
        return records[0].balance
