"""The worker's funds: a ``Ledger`` loaded from, and flushed to, two changelog-backed tables.

``funds`` holds one record per fund (state plus the last input offset applied from each source
partition); ``seen`` holds the fills each batch applied, in segments, so that a restarted worker still
recognises duplicates for the whole window. Records are written once per batch, not once per fill.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field

from processor import codec
from processor.codec import FundRecord
from processor.domain.events import LiquidationFill
from processor.domain.fold import Outcome
from processor.domain.ledger import DuplicateWindow, Ledger

SEGMENT_SEPARATOR = b"/"


@dataclass
class _OpenFund:
    applied_offsets: dict[str, int]
    segments: dict[bytes, int]  # segment key -> newest timestamp in it
    pending: list[LiquidationFill] = field(default_factory=list)
    dirty: bool = False


class FundBook:
    """Fold fills for the funds this worker owns, skipping input it has already applied."""

    def __init__(
        self,
        funds_table: MutableMapping[bytes, bytes],
        seen_table: MutableMapping[bytes, bytes],
        ledger: Ledger,
    ) -> None:
        self.funds_table = funds_table
        self.seen_table = seen_table
        self.ledger = ledger
        self._open: dict[str, _OpenFund] = {}

    def forget(self) -> None:
        """Drop everything cached: after a rebalance the tables are the truth."""
        self._open.clear()
        self.ledger.funds.clear()
        self.ledger.windows.clear()

    def fold(self, fill: LiquidationFill, source: str, offset: int) -> Outcome | None:
        """Fold one fill read at ``source``/``offset``; ``None`` when that offset was already applied."""
        name = fill.margin_currency
        fund = self._open.get(name)
        if fund is None:
            fund = self._load(name)
        if offset <= fund.applied_offsets.get(source, -1):
            return None
        outcome = self.ledger.fold(fill)
        fund.applied_offsets[source] = offset
        fund.dirty = True
        if outcome.delta is not None:
            fund.pending.append(fill)
        return outcome

    def flush(self, select: Callable[[str], bool] | None = None) -> int:
        """Write every fund changed since the last flush (of those ``select`` picks); return how many
        records were written.

        Expired segments are deleted before anything is written, so the last record of a changelog
        partition is never a tombstone: faust 0.15.3 recovery stalls on a partition whose last
        offsets were compacted away (faust #176, #597).
        """
        writes = 0
        for name, fund in self._open.items():
            if not fund.dirty or (select is not None and not select(name)):
                continue
            expired = self._expire(name, fund)
            state = self.ledger.funds[name]
            if fund.pending:
                first_sequence = state.sequence - len(fund.pending) + 1
                key = name.encode() + SEGMENT_SEPARATOR + b"%012d" % first_sequence
                self.seen_table[key] = codec.encode_fill_segment(fund.pending)
                fund.segments[key] = max(fill.timestamp for fill in fund.pending)
                fund.pending.clear()
                writes += 1
            self.funds_table[name.encode()] = codec.encode_fund_record(
                FundRecord(state, dict(fund.applied_offsets))
            )
            fund.dirty = False
            writes += 1 + expired
        return writes

    def _expire(self, name: str, fund: _OpenFund) -> int:
        """Delete the segments the window has forgotten; return how many records that wrote."""
        window = self.ledger.windows[name]
        horizon = window.newest_timestamp - window.window_ms
        expired = [key for key, newest in fund.segments.items() if newest < horizon]
        for key in expired:
            del self.seen_table[key]
            del fund.segments[key]
        if expired and not fund.pending:
            # keep a live record last in this partition of the seen table (see ``flush``)
            self.seen_table[name.encode() + SEGMENT_SEPARATOR + b"~"] = b"[]"
            return len(expired) + 1
        return len(expired)

    def _load(self, name: str) -> _OpenFund:
        raw = self.funds_table.get(name.encode())
        window = DuplicateWindow(self.ledger.duplicate_window_ms)
        segments: dict[bytes, int] = {}
        offsets: dict[str, int] = {}
        if raw is not None:
            record = codec.decode_fund_record(raw)
            self.ledger.funds[name] = record.state
            offsets = record.applied_offsets
            prefix = name.encode() + SEGMENT_SEPARATOR
            anchor = prefix + b"~"
            for key in sorted(key for key in self.seen_table if key.startswith(prefix) and key != anchor):
                fills = codec.decode_fill_segment(name, self.seen_table[key])
                for fill in fills:
                    window.remember(fill)
                segments[key] = max(fill.timestamp for fill in fills)
        self.ledger.windows[name] = window
        fund = self._open[name] = _OpenFund(offsets, segments)
        return fund
