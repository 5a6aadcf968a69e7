"""The two changelog-backed tables of a worker's partitions (0 and 1), as a test's stand-in for Kafka:
committed writes only, kept compacted (the last value of each key) and as a log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import orjson

from processor import codec
from processor.domain.ledger import DEFAULT_DUPLICATE_WINDOW_MS, Ledger
from processor.domain.state import FundRules
from processor.stream.book import FUNDS, SEEN, FundBook, Write

SOURCE = "liquidation-fills:0"  # the input partition whose offsets the fund records carry


@attrs.define(kw_only=True)
class Tables:
    """``home`` gives a fund's partition; books restored from here fold with ``rules``."""

    home: Callable[[str], int]
    rules: FundRules
    window_ms: int = DEFAULT_DUPLICATE_WINDOW_MS
    funds: dict[int, dict[bytes, bytes]] = attrs.field(factory=lambda: {0: {}, 1: {}})
    seen: dict[int, dict[bytes, bytes]] = attrs.field(factory=lambda: {0: {}, 1: {}})
    log: dict[int, list[Write]] = attrs.field(factory=lambda: {0: [], 1: []})
    writes: int = 0

    def start(self, partitions: tuple[int, ...] = (0, 1), *, compacted: bool = True) -> FundBook:
        """A new book (worker) restored from the tables: the compacted records, or every write."""
        book = FundBook(Ledger(self.rules, self.window_ms), self.home)
        for partition in partitions:
            restoring = book.restoring(partition)
            if compacted:
                for key in sorted(self.seen[partition]):  # segments in sequence order, as written
                    restoring.record(SEEN, key, self.seen[partition][key])
                for key, value in self.funds[partition].items():
                    restoring.record(FUNDS, key, value)
            else:
                for table in (SEEN, FUNDS):
                    for written, key, logged in self.log[partition]:
                        if written == table:
                            restoring.record(table, key, logged)
            restoring.finish()
        return book

    def commit(self, partition: int, writes: list[Write]) -> None:
        self.log[partition] += writes
        for table, key, value in writes:
            target = (self.funds if table == FUNDS else self.seen)[partition]
            self.writes += 1
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value

    def flush(self, book: FundBook, offset: int = 0) -> int:
        """Commit what ``book`` flushes on both partitions; how many writes that was."""
        count = 0
        for partition in (0, 1):
            writes, states = book.flush(partition, {SOURCE: offset})
            assert [state.fund for state in states] == [
                key.decode() for table, key, _ in writes if table == FUNDS
            ]
            self.commit(partition, writes)
            count += len(writes)
        return count

    def record(self, fund: str) -> codec.FundRecord:
        return codec.decode_fund_record(self.funds[self.home(fund)][fund.encode()])

    def segment_keys(self, fund: str) -> list[bytes]:
        return sorted(key for key in self.seen[self.home(fund)] if key.startswith(fund.encode() + b"/"))

    def segments(self, fund: str) -> dict[bytes, list[str]]:
        """Each segment of ``fund``: the ids of the events it keeps."""
        seen = self.seen[self.home(fund)]
        return {
            key: [event.event_id for event in codec.decode_fill_segment(fund, seen[key])]
            for key in self.segment_keys(fund)
        }

    def rows(self, fund: str) -> list[Any]:
        seen = self.seen[self.home(fund)]
        return [row for key in self.segment_keys(fund) for row in orjson.loads(seen[key])]
