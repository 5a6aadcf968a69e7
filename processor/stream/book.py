"""The owned funds and their changelog records: a ``Ledger`` restored from, and flushed to, two tables.

``funds`` holds one record per fund (state plus the last input offset applied from each source
partition); ``seen`` holds the fills and operations each batch applied, in segments keyed
``<fund>/<first sequence>``, so that a restarted worker still recognises duplicates for the whole
window. Records are written once per fund per batch, not once per event, and travel in the batch's
transaction. The ledger's journal says which funds a batch touched and what it applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from processor import codec
from processor.codec import FundRecord
from processor.domain.drawdown import PeakWindow
from processor.domain.events import LiquidationFill
from processor.domain.fold import Applied
from processor.domain.ledger import Ledger, Mark, pack_texts
from processor.domain.state import FundState

SEGMENT_SEPARATOR = b"/"
TAIL_KEY = codec.TAIL_KEY
FUNDS, SEEN = "funds", "seen"
#: Fills per segment record: a row of printable ids is at most ~700 bytes (ids of 128 characters,
#: 18-place decimals), so a segment stays below the broker's 1 MB default message size.
SEGMENT_FILLS = 1000
OPERATION_WEIGHT = 8
#: Ids of control characters are escaped to 6 bytes each (a row of ~2.2 KB): a segment encoded
#: larger than this is split in halves until each part fits, so hostile ids can never make a batch's
#: transaction fail on the message size (and crash-loop the worker).
SEGMENT_BYTES = 512 * 1024
ACCEPTED_VERSION = "1"  # segments hold applied fills only, and only version 1 is accepted
Write = tuple[str, bytes, bytes | None]  # table, key, value (None deletes)


@dataclass
class _OpenFund:
    partition: int
    applied_offsets: dict[str, int] = field(default_factory=dict)
    #: segment key -> the newest timestamp in it, and the clock of its first event under the ADL
    #: policy (None without); in sequence order
    segments: dict[bytes, tuple[int, int | None]] = field(default_factory=dict)


class FundBook:
    """Fold fills for the funds of the partitions this worker owns, and say what to write back."""

    def __init__(self, ledger: Ledger, home: Callable[[str], int]) -> None:
        ledger.journal = {}
        self.ledger = ledger
        self.home = home
        self._open: dict[str, _OpenFund] = {}

    def adopt(self, name: str, fund: _OpenFund) -> None:
        """Own fund ``name`` (restored from its partition's tables)."""
        self._open[name] = fund

    def restoring(self, partition: int) -> Restoring:
        """Restore partition ``partition`` record by record, in changelog order."""
        return Restoring(self, partition)

    def release(self, partition: int) -> None:
        """Forget the funds of a partition this worker no longer owns."""
        for name in [name for name, fund in self._open.items() if fund.partition == partition]:
            del self._open[name]
            self.ledger.funds.pop(name, None)
            self.ledger.peaks.pop(name, None)
            self.ledger.marks.pop(name, None)
            window = self.ledger.windows.pop(name, None)
            if window is not None:
                window.clear()  # a store on disk would keep it otherwise

    def states(self, partition: int | None = None) -> list[FundState]:
        """The owned funds' states (of one partition, or all)."""
        funds = self.ledger.funds
        return [
            funds[name]
            for name, opened in self._open.items()
            if name in funds and (partition is None or opened.partition == partition)
        ]

    def applied_offsets(self, partition: int) -> dict[str, int]:
        """The highest input offset each source has applied to any fund of ``partition``."""
        highest: dict[str, int] = {}
        for opened in self._open.values():
            if opened.partition == partition:
                for source, offset in opened.applied_offsets.items():
                    highest[source] = max(offset, highest.get(source, -1))
        return highest

    def flush(self, partition: int, offsets: Mapping[str, int]) -> tuple[list[Write], list[FundState]]:
        """The table writes of every fund of ``partition`` the batch touched, and their states;
        ``offsets`` are the last offsets the batch read from each source of ``partition``."""
        journal = self.ledger.journal
        if not journal:
            return [], []
        writes: list[Write] = []
        states: list[FundState] = []
        for name in [name for name in journal if self.home(name) == partition]:
            applied = journal.pop(name)
            marks = self.ledger.marks.pop(name, None)
            fund = self._open.get(name)
            if fund is None:
                fund = self._open[name] = _OpenFund(partition)
            fund.applied_offsets.update(offsets)
            writes += self._expire(name, fund)
            state = self.ledger.funds[name]
            first_sequence = state.sequence - len(applied) + 1
            for start, chunk in _segments(applied):
                chunk_marks = marks[start : start + len(chunk)] if marks else None
                for offset, part, part_marks, data in _encoded(name, chunk, chunk_marks):  # each < 1 MB
                    key = name.encode() + SEGMENT_SEPARATOR + b"%012d" % (first_sequence + start + offset)
                    writes.append((SEEN, key, data))
                    first_clock = part_marks[0].clock if part_marks else None
                    fund.segments[key] = (max(event.timestamp for event in part), first_clock)
            record = FundRecord(state, dict(fund.applied_offsets))
            writes.append((FUNDS, name.encode(), codec.encode_fund_record(record)))
            states.append(state)
        return writes, states

    def _expire(self, name: str, fund: _OpenFund) -> Iterable[Write]:
        """Tombstones for the segments both windows have forgotten: the duplicate window (all its
        fills older than it), and under an ADL policy the peak window (the next segment starts at or
        before ``clock - window``, so this one ends before the balance the peak still starts from)."""
        ledger = self.ledger
        window = ledger.windows.get(name)
        if window is None:
            return []
        horizon = window.newest_timestamp - window.window_ms
        peaks, state = ledger.peaks.get(name), ledger.funds.get(name)
        peak_horizon = None
        if peaks is not None and state is not None and state.clock is not None:
            peak_horizon = state.clock - peaks.window_ms
        keys = list(fund.segments)
        expired = []
        for index, key in enumerate(keys):
            newest, first_clock = fund.segments[key]
            if newest >= horizon:
                continue
            if peak_horizon is not None and first_clock is not None:
                following = fund.segments[keys[index + 1]][1] if index + 1 < len(keys) else None
                if following is None or following > peak_horizon:
                    continue
            expired.append(key)
        for key in expired:
            del fund.segments[key]
        return [(SEEN, key, None) for key in expired]


def _segments(applied: list[Applied]) -> Iterator[tuple[int, list[Applied]]]:
    """Cut a fund's applied events into segments of at most ``SEGMENT_FILLS`` fills' worth: an
    operation's row (free-form texts up to 512 characters) weighs ``OPERATION_WEIGHT`` fills."""
    start = weight = 0
    for index, event in enumerate(applied):
        cost = 1 if isinstance(event, LiquidationFill) else OPERATION_WEIGHT
        if weight + cost > SEGMENT_FILLS:
            yield start, applied[start:index]
            start, weight = index, 0
        weight += cost
    if start < len(applied):
        yield start, applied[start:]


def _encoded(
    name: str, events: list[Applied], marks: list[Mark] | None, offset: int = 0
) -> Iterator[tuple[int, list[Applied], list[Mark] | None, bytes]]:
    """The segment records of ``events`` (offset, events, marks, bytes): one, or halves of it while
    it is larger than ``SEGMENT_BYTES`` (a single row is a few KB at most)."""
    data = codec.encode_fill_segment(name, events, marks)
    if len(data) <= SEGMENT_BYTES or len(events) == 1:
        yield offset, events, marks, data
        return
    half = len(events) // 2
    yield from _encoded(name, events[:half], marks[:half] if marks else None, offset)
    yield from _encoded(name, events[half:], marks[half:] if marks else None, offset + half)


class Restoring:
    """One partition's restore, fed the changelogs' records in order (``FundBook.restoring``).

    Segments are folded into the duplicate windows as they arrive, so the restore never holds the
    partition's raw records: a tombstone needs no undoing, because a segment is deleted only once
    all its fills are older than the window, and the window, seeing the same newer fills, forgets
    them by itself.
    """

    def __init__(self, book: FundBook, partition: int) -> None:
        self.book = book
        self.partition = partition
        self.funds: dict[bytes, bytes | None] = {}
        self.segments: dict[str, dict[bytes, tuple[int, int | None]]] = {}
        self.peaks: dict[str, PeakWindow] = {}

    def record(self, table: str, key: bytes, value: bytes | None) -> None:
        if table == FUNDS:
            self.funds[key] = value
            return
        prefix, separator, suffix = key.partition(SEGMENT_SEPARATOR)
        if not separator or suffix == TAIL_KEY:
            return
        name = prefix.decode()
        segments = self.segments.get(name)
        if segments is None:
            segments = self.segments[name] = {}
        if value is None:
            segments.pop(key, None)
            return
        rows = codec.loads(value)
        if not rows:
            return
        ledger = self.book.ledger
        window = ledger.windows.get(name) or ledger.open_window(name)
        remember = window.remember_packed
        drawdown = ledger.policy(name).drawdown
        newest = -1
        first_clock: int | None = None
        # A fill's row is fill_id, liquidation_id, symbol, then the packed fields in order, the
        # timestamp, and a pool's fill adds its currency; an operation's row is an object.
        for row in rows:
            if type(row) is dict:
                operation = codec.operation_from_row(name, row)
                window.remember_operation(operation)
                timestamp = operation.timestamp
            else:
                timestamp = row[11]
                currency = codec.row_currency(row, name)
                side, kind, size, bankruptcy, price, quantity, unfilled, fee = row[3:11]
                packed = pack_texts(
                    str(timestamp), currency, side, kind, size, bankruptcy, price, quantity, unfilled, fee,
                    ACCEPTED_VERSION, row[1], row[2],
                )  # fmt: skip
                remember(row[0], timestamp, packed)
            newest = max(newest, timestamp)
            if drawdown is not None:
                mark = codec.row_mark(row)
                if mark is not None:
                    first_clock = mark[0] if first_clock is None else first_clock
                    self._peak(name, drawdown.window_ms, mark)
        segments[key] = (newest, first_clock)

    def _peak(self, name: str, window_ms: int, mark: tuple[int, str, str]) -> None:
        """Replay a mark into the fund's peak window: the first one the window restores seeds it with
        its balance before (which the window forgets at once unless it is still needed)."""
        clock, before, after = mark
        peaks = self.peaks.get(name)
        if peaks is None:
            peaks = self.peaks[name] = PeakWindow(window_ms, Decimal(before))
        peaks.record(clock, Decimal(after))

    def finish(self) -> int:
        """Install the restored funds; return how many fills their windows remember."""
        book, ledger = self.book, self.book.ledger
        remembered = 0
        names = set()
        for key, raw in self.funds.items():
            if key == TAIL_KEY or not raw:
                continue
            record = codec.decode_fund_record(raw)
            name = record.state.fund
            names.add(name)
            ledger.funds[name] = record.state
            window = ledger.windows.get(name) or ledger.open_window(name)
            peaks = self.peaks.get(name)
            if peaks is not None and record.state.peak is not None:
                ledger.peaks[name] = peaks
            book.adopt(name, _OpenFund(self.partition, record.applied_offsets, self.segments.get(name, {})))
            remembered += len(window)
        for name in set(self.segments) - names:  # segments of a fund without a record: none to keep
            orphan = ledger.windows.pop(name, None)
            if orphan is not None:
                orphan.clear()
        return remembered
