"""Drive the fold over a sequence of fills: fund states plus the duplicate window, kept in memory.

File replay, topic replay and the benchmarks fold through a ``Ledger``; the streaming worker keeps the
same two pieces of state in changelog-backed tables and calls the same ``apply``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from heapq import heappop, heappush

from processor.domain.events import LiquidationFill
from processor.domain.fold import Outcome, apply
from processor.domain.state import FundPolicy, FundRules, FundState

DEFAULT_DUPLICATE_WINDOW_MS = 7 * 24 * 3600 * 1000

_TIMESTAMP = LiquidationFill._fields.index("timestamp")
_as_fill = LiquidationFill._make

#: Where a duplicate window keeps its fills (fill_id -> the fill as a plain tuple): a dict by default;
#: the streaming worker can put large windows on disk instead (``processor.stream.tables``).
FillStore = MutableMapping[str, tuple[object, ...]]


class DuplicateWindow:
    """The fills applied to one fund, remembered for exactly ``window_ms`` of event time.

    A fill is forgotten once the fund has seen an event more than ``window_ms`` newer than it, and
    not before, whatever order the timestamps come in: what is remembered depends only on the set
    of fills applied, so a worker that restores its window from the table after a restart remembers
    exactly what an uninterrupted run does.

    Fills are kept as plain tuples: the garbage collector untracks a plain tuple of strings, numbers
    and decimals, but never a ``NamedTuple``, and a week of fills would otherwise make every full
    collection walk millions of objects.
    """

    __slots__ = ("_expiry_ids", "_expiry_timestamps", "_fills", "_late", "newest_timestamp", "window_ms")

    def __init__(self, window_ms: int = DEFAULT_DUPLICATE_WINDOW_MS, fills: FillStore | None = None) -> None:
        self.window_ms = window_ms
        self._fills: FillStore = {} if fills is None else fills
        # Fills in timestamp order as they usually arrive: two deques rather than one of pairs, so
        # remembering a fill allocates nothing the window has to keep.
        self._expiry_timestamps: deque[int] = deque()
        self._expiry_ids: deque[str] = deque()
        # Fills older than the last one queued above: a heap, so they are forgotten on time too.
        self._late: list[tuple[int, str]] = []
        self.newest_timestamp = -1

    def __len__(self) -> int:
        return len(self._fills)

    def __iter__(self) -> Iterator[LiquidationFill]:
        return map(_as_fill, self._fills.values())

    def clear(self) -> None:
        """Forget every fill (the fund moved to another worker)."""
        self._fills.clear()
        self._expiry_timestamps.clear()
        self._expiry_ids.clear()
        self._late.clear()

    def get(self, fill_id: str) -> LiquidationFill | None:
        remembered = self._fills.get(fill_id)
        return _as_fill(remembered) if remembered is not None else None

    def remember(self, fill: LiquidationFill) -> None:
        timestamp = fill.timestamp
        fill_id = fill.fill_id
        self._fills[fill_id] = fill[:]  # slicing a NamedTuple gives a plain tuple
        timestamps = self._expiry_timestamps
        if not timestamps or timestamp >= timestamps[-1]:
            timestamps.append(timestamp)
            self._expiry_ids.append(fill_id)
        else:
            heappush(self._late, (timestamp, fill_id))
        if timestamp > self.newest_timestamp:
            self.newest_timestamp = timestamp
            horizon = timestamp - self.window_ms
            if timestamps[0] < horizon or (self._late and self._late[0][0] < horizon):
                self._forget_before(horizon)

    def _forget_before(self, horizon: int) -> None:
        timestamps, ids, late = self._expiry_timestamps, self._expiry_ids, self._late
        while timestamps and timestamps[0] < horizon:
            timestamps.popleft()
            self._forget(ids.popleft(), horizon)
        while late and late[0][0] < horizon:
            self._forget(heappop(late)[1], horizon)

    def _forget(self, fill_id: str, horizon: int) -> None:
        remembered = self._fills.get(fill_id)
        if remembered is not None and remembered[_TIMESTAMP] < horizon:  # type: ignore[operator]
            del self._fills[fill_id]


class Ledger:
    """Every fund's state and duplicate window, folded one fill at a time through ``apply``."""

    def __init__(
        self,
        rules: FundRules | None = None,
        duplicate_window_ms: int = DEFAULT_DUPLICATE_WINDOW_MS,
        fill_store: Callable[[str], FillStore] | None = None,
    ) -> None:
        self.rules = rules or FundRules()
        self.duplicate_window_ms = duplicate_window_ms
        self.fill_store = fill_store
        self.funds: dict[str, FundState] = {}
        self.windows: dict[str, DuplicateWindow] = {}
        self._policies: dict[str, FundPolicy] = {}
        #: When set (by the streaming worker), every fund ``fold`` touches gets an entry here, with
        #: the fills it applied: what the fund's changelog records must carry at the next flush.
        self.journal: dict[str, list[LiquidationFill]] | None = None

    def policy(self, fund: str) -> FundPolicy:
        policy = self._policies.get(fund)
        if policy is None:
            policy = self._policies[fund] = self.rules.policy_for(fund)
        return policy

    def fold(self, fill: LiquidationFill) -> Outcome:
        fund = fill.margin_currency
        policy = self._policies.get(fund) or self.policy(fund)
        state = self.funds.get(fund)
        window = self.windows.get(fund)
        if state is None:
            state = FundState.opened(fund, policy)
        if window is None:
            window = self.open_window(fund)
        outcome = apply(state, fill, policy, window.get(fill.fill_id))
        self.funds[fund] = outcome.state
        journal = self.journal
        if journal is not None:
            entries = journal.get(fund)
            if entries is None:
                entries = journal[fund] = []
            if outcome.delta is not None:
                entries.append(fill)
        if outcome.delta is not None:
            window.remember(fill)
        return outcome

    def open_window(self, fund: str) -> DuplicateWindow:
        """A new, empty duplicate window for ``fund``, in the ledger's fill store."""
        store = self.fill_store(fund) if self.fill_store is not None else None
        window = self.windows[fund] = DuplicateWindow(self.duplicate_window_ms, store)
        return window

    def states(self) -> Mapping[str, FundState]:
        return dict(sorted(self.funds.items()))
