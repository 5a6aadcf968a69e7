"""Folding partition groups in parallel processes: balance, groups kept, groups sharing a fund folded
again as one, early stops, errors. The processes run a table instead of Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from processor.stream.parallel import Control, PartitionRange, balance, fold_in_parallel


@dataclass(frozen=True)
class TableTask:
    """Each partition holds ``funds[partition]`` (met in its first batch), then ``batches`` more
    batches of ``pause`` seconds; every fold appends a line to ``log``."""

    funds: dict[int, tuple[str, ...]]
    log: Path
    batches: int = 1
    pause: float = 0.0
    fail_on: int | None = None

    async def fold(
        self, ranges: Sequence[PartitionRange], control: Control | None
    ) -> tuple[Collection[str], tuple[int, ...]]:
        partitions = tuple(r.partition for r in ranges)
        touched: set[str] = set()
        messages = 0
        try:
            for partition_range in ranges:
                if partition_range.partition == self.fail_on:
                    raise ValueError(f"partition {self.fail_on} is unreadable")
                touched.update(self.funds[partition_range.partition])
                for _ in range(self.batches):
                    messages += 1
                    if control is not None:
                        control.tick(messages, touched)
                    await asyncio.sleep(self.pause)
        except BaseException:
            self._note("ended early", partitions)
            raise
        self._note("folded", partitions)
        return touched, partitions

    def _note(self, what: str, partitions: tuple[int, ...]) -> None:
        with self.log.open("a") as log:
            log.write(f"{what} {','.join(map(str, partitions))}\n")


def ranges(*sizes: int) -> list[PartitionRange]:
    return [PartitionRange(partition, 10, 10 + size) for partition, size in enumerate(sizes)]


def test_balance_spreads_record_counts_and_keeps_each_group_in_partition_order() -> None:
    groups = balance(ranges(100, 10, 60, 50, 0), 2)
    assert [[r.partition for r in group] for group in groups] == [[0, 1], [2, 3]]  # 110 / 110
    assert balance(ranges(5, 0, 5), 8) == [(PartitionRange(0, 10, 15),), (PartitionRange(2, 10, 15),)]
    assert balance(ranges(0, 0), 2) == []
    assert [len(group) for group in balance(ranges(1, 1, 1), 1)] == [3]
    assert len(balance(ranges(1, 1, 1), 10**12)) == 3  # a process per partition at most


def test_groups_that_share_no_fund_are_each_folded_once(tmp_path: Path) -> None:
    task = TableTask({0: ("USDT",), 1: ("BTC",), 2: ("ETH",), 3: ("USDC", "USDC-MEME")}, tmp_path / "log")
    folded = fold_in_parallel(task, ranges(4, 3, 2, 1), 2)
    assert [group.result for group in folded] == [(0, 3), (1, 2)]
    assert [sorted(group.funds) for group in folded] == [["USDC", "USDC-MEME", "USDT"], ["BTC", "ETH"]]
    assert sorted((tmp_path / "log").read_text().splitlines()) == ["folded 0,3", "folded 1,2"]


def test_groups_sharing_a_fund_are_folded_again_as_one_and_the_others_kept(tmp_path: Path) -> None:
    funds = {0: ("USDT",), 1: ("BTC", "USDT"), 2: ("ETH",), 3: ("SOL",), 4: ("XRP",), 5: ("DOGE",)}
    task = TableTask(funds, tmp_path / "log")
    folded = fold_in_parallel(task, ranges(1, 1, 1, 1, 1, 1), 3)  # groups 0,3 / 1,4 / 2,5
    assert [group.result for group in folded] == [(0, 1, 3, 4), (2, 5)]
    assert [len(group.ranges) for group in folded] == [4, 2]
    runs = (tmp_path / "log").read_text().splitlines()
    assert runs.count("folded 2,5") == 1  # kept from the first round
    assert runs[-1] == "folded 0,1,3,4"


def test_a_shared_fund_stops_both_groups_early(tmp_path: Path) -> None:
    task = TableTask({0: ("USDT",), 1: ("USDT",)}, tmp_path / "log", batches=40, pause=0.02)
    folded = fold_in_parallel(task, ranges(1, 1), 2)
    assert [group.result for group in folded] == [(0, 1)]
    runs = (tmp_path / "log").read_text().splitlines()
    assert sorted(runs[:2]) == ["ended early 0", "ended early 1"]  # not 0.8 s each in vain
    assert runs[2:] == ["folded 0,1"]


def test_a_group_that_meets_a_kept_groups_fund_later_is_merged_with_it(tmp_path: Path) -> None:
    """Round one: 0,2 and 1,3 share USDT and are stopped, 4 is kept; round two meets BTC of 4."""
    funds = {0: ("USDT",), 1: ("USDT",), 2: ("BTC",), 3: ("ETH",), 4: ("BTC",)}
    task = TableTask(funds, tmp_path / "log", batches=20, pause=0.02)
    folded = fold_in_parallel(task, [*ranges(3, 3, 2, 2), PartitionRange(4, 0, 4)], 3)
    assert [group.result for group in folded] == [(0, 1, 2, 3, 4)]


def test_what_a_process_raises_is_raised(tmp_path: Path) -> None:
    task = TableTask({0: ("USDT",), 1: ("BTC",)}, tmp_path / "log", fail_on=1)
    with pytest.raises(ValueError, match="partition 1 is unreadable"):
        fold_in_parallel(task, ranges(1, 1), 2)
