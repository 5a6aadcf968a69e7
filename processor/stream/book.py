"""The owned funds and their changelog records: a ``Ledger`` restored from, and flushed to, two tables.

``funds`` holds one record per fund (state plus the last input offset applied from each source
partition); ``seen`` holds the fills each batch applied, in segments keyed ``<fund>/<first sequence>``,
so that a restarted worker still recognises duplicates for the whole window. Records are written
once per fund per batch, not once per fill, and travel in the batch's transaction. The ledger's
journal says which funds a batch touched and which fills it applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from processor import codec
from processor.codec import FundRecord
from processor.domain.ledger import Ledger
from processor.domain.state import FundState

SEGMENT_SEPARATOR = b"/"
TAIL_KEY = b"~"  # written by the faust-based worker (v1) to every changelog partition; ignored
FUNDS, SEEN = "funds", "seen"
Write = tuple[str, bytes, bytes | None]  # table, key, value (None deletes)


@dataclass
class _OpenFund:
    partition: int
    applied_offsets: dict[str, int] = field(default_factory=dict)
    segments: dict[bytes, int] = field(default_factory=dict)  # segment key -> newest timestamp in it


class FundBook:
    """Fold fills for the funds of the partitions this worker owns, and say what to write back."""

    def __init__(self, ledger: Ledger, home: Callable[[str], int]) -> None:
        ledger.journal = {}
        self.ledger = ledger
        self.home = home
        self._open: dict[str, _OpenFund] = {}

    def restore(self, partition: int, funds: Mapping[bytes, bytes], seen: Mapping[bytes, bytes]) -> int:
        """Load partition ``partition``'s funds from its restored table records; return how many fills
        the duplicate windows now remember."""
        remembered = 0
        segments_by_fund: dict[str, list[bytes]] = {}
        for key in seen:
            prefix, separator, suffix = key.partition(SEGMENT_SEPARATOR)
            if separator and suffix != TAIL_KEY:
                segments_by_fund.setdefault(prefix.decode(), []).append(key)
        for key, raw in funds.items():
            if key == TAIL_KEY or not raw:
                continue
            record = codec.decode_fund_record(raw)
            name = record.state.fund
            self.ledger.funds[name] = record.state
            window = self.ledger.open_window(name)
            fund = self._open[name] = _OpenFund(partition, record.applied_offsets)
            for segment in sorted(segments_by_fund.get(name, ())):
                fills = codec.decode_fill_segment(name, seen[segment])
                if not fills:
                    continue
                for fill in fills:
                    window.remember(fill)
                fund.segments[segment] = max(fill.timestamp for fill in fills)
            remembered += len(window)
        return remembered

    def release(self, partition: int) -> None:
        """Forget the funds of a partition this worker no longer owns."""
        for name in [name for name, fund in self._open.items() if fund.partition == partition]:
            del self._open[name]
            self.ledger.funds.pop(name, None)
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

    def flush(self, partition: int, offsets: Mapping[str, int]) -> list[Write]:
        """The table writes of every fund of ``partition`` the batch touched; ``offsets`` are the
        last offsets the batch read from each source of ``partition``."""
        journal = self.ledger.journal
        if not journal:
            return []
        writes: list[Write] = []
        for name in [name for name in journal if self.home(name) == partition]:
            applied = journal.pop(name)
            fund = self._open.get(name)
            if fund is None:
                fund = self._open[name] = _OpenFund(partition)
            fund.applied_offsets.update(offsets)
            writes += self._expire(name, fund)
            state = self.ledger.funds[name]
            if applied:
                first_sequence = state.sequence - len(applied) + 1
                key = name.encode() + SEGMENT_SEPARATOR + b"%012d" % first_sequence
                writes.append((SEEN, key, codec.encode_fill_segment(applied)))
                fund.segments[key] = max(fill.timestamp for fill in applied)
            record = FundRecord(state, dict(fund.applied_offsets))
            writes.append((FUNDS, name.encode(), codec.encode_fund_record(record)))
        return writes

    def _expire(self, name: str, fund: _OpenFund) -> Iterable[Write]:
        """Tombstones for the segments the window has forgotten."""
        window = self.ledger.windows.get(name)
        if window is None:
            return []
        horizon = window.newest_timestamp - window.window_ms
        expired = [key for key, newest in fund.segments.items() if newest < horizon]
        for key in expired:
            del fund.segments[key]
        return [(SEEN, key, None) for key in expired]
