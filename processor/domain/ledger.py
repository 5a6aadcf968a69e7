"""Drive the fold over a sequence of fills and operations: fund states plus the duplicate window.

File replay, topic replay and the benchmarks fold through a ``Ledger``; the streaming worker keeps the
same two pieces of state in changelog-backed tables and calls the same ``apply``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from decimal import Decimal
from heapq import heappop, heappush
from typing import Final, NamedTuple

from processor.domain.drawdown import PeakWindow, rounded_drawdown, transition
from processor.domain.events import AdlStateChange, FundOperation, LiquidationFill
from processor.domain.fold import Applied, Outcome, apply, apply_operation
from processor.domain.state import DrawdownPolicy, FundPolicy, FundRules, FundState

DEFAULT_DUPLICATE_WINDOW_MS = 7 * 24 * 3600 * 1000

_SEPARATOR: Final = "\x1f"
SEPARATOR_BYTE: Final = b"\x1f"
_COMPACT_AFTER: Final = 1 << 16
# Timestamps are >= 0 (SPEC section 2): an empty expiry queue's head never expires, and any
# timestamp goes after its tail.
_NOTHING_AT_HEAD: Final = 1 << 63  # beyond the largest timestamp, 2**63 - 1
_NOTHING_AT_TAIL: Final = -1

#: Where a duplicate window keeps its fills (fill_id -> the packed fill): a dict by default; the
#: streaming worker can put large windows on disk instead (``processor.stream.tables``).
FillStore = MutableMapping[bytes, bytes]


#: The fields ``pack_texts`` writes first, in its order, each followed by the separator (the length
#: of the liquidation id, the separator, the liquidation id and the symbol come after them).
PACKED_FIELDS: Final = (
    "timestamp",
    "margin_currency",
    "side",
    "contract_type",
    "contract_size",
    "bankruptcy_price",
    "fill_price",
    "quantity",
    "unfilled_quantity",
    "fee",
    "version",
)


def pack_texts(
    timestamp: str,
    currency: str,
    side: str,
    contract_type: str,
    contract_size: str,
    bankruptcy_price: str,
    fill_price: str,
    quantity: str,
    unfilled_quantity: str,
    fee: str,
    version: str,
    liquidation_id: str,
    symbol: str,
) -> bytes:
    """A remembered fill (but its id) as one compact bytes object, from its fields as text: a
    decimal's text is any text ``Decimal`` reads back to it, exponent included.

    Every field but the last two is free of the separator (numbers, enums, fund ids); the two
    free-form strings go last, the first one's length in front, so any text survives.
    """
    # one f-string: the texts are copied once, with no tuple to build and join
    return (
        f"{timestamp}\x1f{currency}\x1f{side}\x1f{contract_type}\x1f{contract_size}\x1f{bankruptcy_price}"
        f"\x1f{fill_price}\x1f{quantity}\x1f{unfilled_quantity}\x1f{fee}\x1f{version}\x1f{len(liquidation_id)}"
        f"\x1f{liquidation_id}{symbol}"
    ).encode()


def pack_fill(fill: LiquidationFill) -> bytes:
    """A fill packed from its values (the decoder's fast path packs from the message's texts)."""
    return pack_texts(
        str(fill.timestamp),
        fill.margin_currency,
        fill.side,
        fill.contract_type,
        str(fill.contract_size),
        str(fill.bankruptcy_price),
        str(fill.fill_price),
        str(fill.quantity),
        str(fill.unfilled_quantity),
        str(fill.fee),
        str(fill.version),
        fill.liquidation_id,
        fill.symbol,
    )


def unpack_fill(fill_id: str, packed: bytes) -> LiquidationFill:
    """The fill ``pack_fill`` packed: equal to it field by field (decimals keep their exponent)."""
    (
        timestamp,
        fund,
        side,
        contract_type,
        contract_size,
        bankruptcy_price,
        fill_price,
        quantity,
        unfilled_quantity,
        fee,
        version,
        length,
        rest,
    ) = packed.decode().split(_SEPARATOR, 12)
    cut = int(length)
    return LiquidationFill(
        fill_id,
        rest[:cut],
        rest[cut:],
        fund,
        side,  # type: ignore[arg-type]
        contract_type,  # type: ignore[arg-type]
        Decimal(contract_size),
        Decimal(bankruptcy_price),
        Decimal(fill_price),
        Decimal(quantity),
        Decimal(unfilled_quantity),
        Decimal(fee),
        int(timestamp),
        int(version),
    )


def pack_operation(operation: FundOperation) -> bytes:
    """A remembered operation (but its id): like a fill's, with an empty second field (a fill's
    fund is never empty), and the free-form texts last, their lengths in front."""
    requested_by, reason, transfer_id = operation.requested_by, operation.reason, operation.transfer_id
    return _SEPARATOR.join(
        (
            str(operation.timestamp),
            "",
            operation.type,
            operation.fund,
            str(operation.amount),
            str(operation.version),
            str(len(requested_by)),
            str(len(reason)),
            str(-1 if transfer_id is None else len(transfer_id)),
            requested_by + reason + (transfer_id or ""),
        )
    ).encode()


def unpack_operation(operation_id: str, packed: bytes) -> FundOperation:
    """The operation ``pack_operation`` packed, equal to it field by field."""
    timestamp, _, kind, fund, amount, version, by_length, reason_length, transfer_length, rest = (
        packed.decode().split(_SEPARATOR, 9)
    )
    by_end = int(by_length)
    reason_end = by_end + int(reason_length)
    transfer = int(transfer_length)
    return FundOperation(
        operation_id,
        kind,  # type: ignore[arg-type]
        fund,
        Decimal(amount),
        rest[:by_end],
        rest[by_end:reason_end],
        None if transfer < 0 else rest[reason_end:],
        int(timestamp),
        int(version),
    )


def unpack(key: str, packed: bytes) -> Applied:
    """The fill or operation remembered under ``key``."""
    cut = packed.index(SEPARATOR_BYTE) + 1
    if packed[cut : cut + 1] == SEPARATOR_BYTE:
        return unpack_operation(key, packed)
    return unpack_fill(key, packed)


class Mark(NamedTuple):
    """An applied event's place in its fund's peak window: the clock, the balance before and after."""

    clock: int
    before: Decimal
    after: Decimal


def _packed_timestamp(packed: bytes) -> int:
    return int(packed[: packed.index(SEPARATOR_BYTE)])


class DuplicateWindow:
    """The fills applied to one fund, remembered for exactly ``window_ms`` of event time.

    A fill is forgotten once the fund has seen an event more than ``window_ms`` newer than it, and
    not before, whatever order the timestamps come in: what is remembered depends only on the set
    of fills applied, so a worker that restores its window from the table after a restart remembers
    exactly what an uninterrupted run does.

    Memory is the window's cost (a week of a busy fund is millions of fills), so a fill is kept
    packed into one bytes object (``pack_fill``, ~120 B instead of ~500 B for a tuple of decimals)
    and unpacked only when its id comes again; expiry order is a list of timestamps and a list of
    ids, consumed from a moving head (a list of ints costs ~30 B a fill more than an ``array``, whose
    every append and read compiled code makes through a method call: ~50 ns a fill). The timestamps
    at the head and the tail are kept apart, so remembering a fill in order compares two integers
    and appends to the two queues.
    """

    __slots__ = (
        "_expiry_head",
        "_expiry_ids",
        "_expiry_timestamps",
        "_fills",
        "_fills_dict",
        "_head_timestamp",
        "_late",
        "_tail_timestamp",
        "newest_timestamp",
        "window_ms",
    )

    def __init__(self, window_ms: int = DEFAULT_DUPLICATE_WINDOW_MS, fills: FillStore | None = None) -> None:
        self.window_ms = window_ms
        self._fills: FillStore = {} if fills is None else fills
        # The same store when it is a dict: compiled, a dict's look-up is a direct call, another
        # mapping's a method call (~20 ns a fill).
        self._fills_dict: dict[bytes, bytes] | None = self._fills if type(self._fills) is dict else None
        # Fills in timestamp order as they usually arrive, from ``_expiry_head`` on, and the first
        # and last of their timestamps (``_NOTHING_AT_HEAD`` and ``_NOTHING_AT_TAIL`` when none).
        self._expiry_timestamps: list[int] = []
        self._expiry_ids: list[bytes] = []
        self._expiry_head = 0
        self._head_timestamp = _NOTHING_AT_HEAD
        self._tail_timestamp = _NOTHING_AT_TAIL
        # Fills older than the last one queued above: a heap, so they are forgotten on time too.
        self._late: list[tuple[int, bytes]] = []
        self.newest_timestamp = -1

    def __len__(self) -> int:
        return len(self._fills)

    def __iter__(self) -> Iterator[Applied]:
        for fill_id, packed in self._fills.items():  # a loop: compiled, a generator expression is a list
            yield unpack(fill_id.decode(), packed)

    def clear(self) -> None:
        """Forget every fill (the fund moved to another worker)."""
        self._fills.clear()
        self._expiry_timestamps = []
        self._expiry_ids = []
        self._expiry_head = 0
        self._head_timestamp = _NOTHING_AT_HEAD
        self._tail_timestamp = _NOTHING_AT_TAIL
        self._late.clear()

    def get(self, fill_id: str) -> Applied | None:
        return self.get_key(fill_id.encode())

    def get_key(self, key: bytes) -> Applied | None:
        """``get`` by the id's UTF-8 bytes (``Ledger.fold`` encodes an id once for both look-ups)."""
        fills = self._fills_dict
        packed = fills.get(key) if fills is not None else self._fills.get(key)
        return unpack(key.decode(), packed) if packed is not None else None

    def remember(self, fill: LiquidationFill) -> None:
        self.remember_packed(fill.fill_id, fill.timestamp, pack_fill(fill))

    def remember_operation(self, operation: FundOperation) -> None:
        self.remember_packed(operation.operation_id, operation.timestamp, pack_operation(operation))

    def remember_packed(self, fill_id: str, timestamp: int, packed: bytes) -> None:
        """Remember a fill already packed (restoring from the changelog packs without decimals)."""
        self.remember_key(fill_id.encode(), timestamp, packed)

    def remember_key(self, key: bytes, timestamp: int, packed: bytes) -> None:
        """``remember_packed`` by the id's UTF-8 bytes: 16 B less than a str, for every fill of the
        window."""
        self._fills[key] = packed
        if timestamp >= self._tail_timestamp:
            self._expiry_timestamps.append(timestamp)
            self._expiry_ids.append(key)
            self._tail_timestamp = timestamp
            if self._head_timestamp == _NOTHING_AT_HEAD:
                self._head_timestamp = timestamp
        else:
            heappush(self._late, (timestamp, key))
        if timestamp > self.newest_timestamp:
            self.newest_timestamp = timestamp
            horizon = timestamp - self.window_ms
            if self._head_timestamp < horizon or (self._late and self._late[0][0] < horizon):
                self._forget_before(horizon)

    def _forget_before(self, horizon: int) -> None:
        timestamps, ids, late = self._expiry_timestamps, self._expiry_ids, self._late
        head, end = self._expiry_head, len(timestamps)
        while head < end and timestamps[head] < horizon:
            self._forget(ids[head], horizon)
            head += 1
        if head > _COMPACT_AFTER and 2 * head > end:
            del timestamps[:head]
            del ids[:head]
            end -= head
            head = 0
        self._expiry_head = head
        if head < end:
            self._head_timestamp = timestamps[head]
        else:
            self._head_timestamp, self._tail_timestamp = _NOTHING_AT_HEAD, _NOTHING_AT_TAIL
        while late and late[0][0] < horizon:
            self._forget(heappop(late)[1], horizon)

    def _forget(self, fill_id: bytes, horizon: int) -> None:
        packed = self._fills.get(fill_id)
        if packed is not None and _packed_timestamp(packed) < horizon:
            del self._fills[fill_id]


class Ledger:
    """Every fund's state and duplicate window, folded one event at a time through ``apply`` and
    ``apply_operation``; fills go to the fund the rules' pools give them (SPEC section 7)."""

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
        pools = self.rules.pools
        self._route = pools.fund_of if pools else None
        #: When set (by the streaming worker), every fund ``fold`` touches gets an entry here, with
        #: the events it applied: what the fund's changelog records must carry at the next flush.
        self.journal: dict[str, list[Applied]] | None = None
        #: Beside the journal, for funds under an ADL policy: each applied event's clock and balances
        #: (before, after), so a restarted worker rebuilds the peak window (SPEC section 9).
        self.marks: dict[str, list[Mark]] = {}
        self.peaks: dict[str, PeakWindow] = {}

    def policy(self, fund: str) -> FundPolicy:
        policy = self._policies.get(fund)
        if policy is None:
            policy = self._policies[fund] = self.rules.policy_for(fund)
        return policy

    def currency_of(self, fund: str) -> str | None:
        """The currency of a fund id; ``None`` for a pool the rules do not define."""
        return self.rules.pools.currency_of(fund)

    def fold(self, fill: LiquidationFill, packed: bytes | None = None) -> Outcome:
        """Fold a fill into its fund: its pool's, else its currency's; ``packed`` is the fill as
        ``pack_fill`` would pack it, when the decoder has it already."""
        route = self._route
        fund = (
            fill.margin_currency
            if route is None
            else route(fill.margin_currency, fill.symbol, fill.timestamp)
        )
        policy = self._policies.get(fund)
        if policy is None:
            policy = self.policy(fund)
        state = self.funds.get(fund)
        window = self.windows.get(fund)
        if state is None:
            state = FundState.opened(fund, policy)
        if window is None:
            window = self.open_window(fund)
        key = fill.fill_id.encode()
        outcome = apply(state, fill, policy, window.get_key(key))
        if policy.drawdown is not None and outcome.delta is not None:
            outcome = self._watch(fund, policy.drawdown, outcome)
        self.funds[fund] = outcome.state
        journal = self.journal
        if journal is not None:
            entries = journal.get(fund)
            if entries is None:
                entries = journal[fund] = []
            if outcome.delta is not None:
                entries.append(fill)
        if outcome.delta is not None:
            window.remember_key(key, fill.timestamp, packed or pack_fill(fill))
        return outcome

    def operate(self, operation: FundOperation, currency: str) -> Outcome:
        """Fold a top-up or withdrawal of fund ``operation.fund``, whose currency is ``currency``."""
        fund = operation.fund
        policy = self.policy(fund)
        state = self.funds.get(fund) or FundState.opened(fund, policy)
        window = self.windows.get(fund)
        applied = window.get(operation.operation_id) if window is not None else None
        outcome = apply_operation(state, operation, policy, currency, applied)
        if outcome.refusal is not None or outcome.conflict is not None:
            return outcome  # nothing changed: not even a fund (or window) that has seen nothing is opened
        if policy.drawdown is not None and outcome.delta is not None:
            outcome = self._watch(fund, policy.drawdown, outcome)
        self.funds[fund] = outcome.state
        if self.journal is not None:
            entries = self.journal.setdefault(fund, [])
            if outcome.delta is not None:
                entries.append(operation)
        if outcome.delta is not None:
            (window or self.open_window(fund)).remember_operation(operation)
        return outcome

    def _watch(self, fund: str, drawdown: DrawdownPolicy, outcome: Outcome) -> Outcome:
        """Record the delta's balance in the fund's peak window and move its ADL state (SPEC
        section 9): the clock is the largest event time the fund has seen."""
        state, delta = outcome.state, outcome.delta
        assert delta is not None
        timestamp, before, after = delta.timestamp, delta.balance_before, delta.balance_after
        clock = timestamp if state.clock is None or timestamp > state.clock else state.clock
        window = self.peaks.get(fund)
        if window is None:  # the fund's first delta under the policy: the window starts before it
            window = self.peaks[fund] = PeakWindow(drawdown.window_ms, before)
        peak = window.record(clock, after)
        moved = transition(state.adl_state, peak, after, drawdown)  # type: ignore[arg-type]
        value = rounded_drawdown(moved.drawdown)
        change = None
        if moved.state != state.adl_state:
            change = AdlStateChange(
                fund,
                moved.state,
                state.adl_state,
                value,
                peak,
                after,
                drawdown.start,
                drawdown.stop,
                delta.sequence,
                timestamp,
            )
        if self.journal is not None:
            self.marks.setdefault(fund, []).append(Mark(clock, before, after))
        state = state._replace(adl_state=moved.state, peak=peak, drawdown=value, clock=clock)
        return Outcome(state, delta, outcome.trigger, outcome.conflict, outcome.refusal, change)

    def open_window(self, fund: str) -> DuplicateWindow:
        """A new, empty duplicate window for ``fund``, in the ledger's fill store."""
        store = self.fill_store(fund) if self.fill_store is not None else None
        window = self.windows[fund] = DuplicateWindow(self.duplicate_window_ms, store)
        return window

    def states(self) -> Mapping[str, FundState]:
        return dict(sorted(self.funds.items()))
