"""A parallel topic replay's join (``processor.stream.replay._join``): the partitions' shares in
partition order, the first one moved into place where it can be, whatever the output was."""

from __future__ import annotations

from pathlib import Path

from processor.config import Settings
from processor.replay import OutputFiles
from processor.stream.replay import _join, _ReplayTask

PARTITIONS = [0, 1, 2, 3]


def task_with_shares(tmp_path: Path, deltas: Path, adl: Path) -> _ReplayTask:
    """A task whose processes left shares of the deltas on partitions 0, 2 and 3, and of the ADL
    triggers on none."""
    scratch = tmp_path / ".replay-scratch"
    scratch.mkdir()
    task = _ReplayTask(Settings(), "fills", OutputFiles(deltas=deltas, adl=adl), None, 0, scratch)
    for partition in (0, 2, 3):
        share = task.partition_files(partition).deltas
        assert share is not None
        share.write_bytes(f"delta of partition {partition}\n".encode())
    return task


JOINED = b"delta of partition 0\ndelta of partition 2\ndelta of partition 3\n"


def test_shares_are_joined_in_partition_order_over_an_earlier_output(tmp_path: Path) -> None:
    deltas, adl = tmp_path / "deltas.jsonl", tmp_path / "adl.jsonl"
    deltas.write_bytes(b"an earlier run's deltas, longer than the new ones\n" * 10)
    reader = deltas.open("rb")  # a reader of the earlier file keeps it whole
    task = task_with_shares(tmp_path, deltas, adl)
    _join(task, PARTITIONS)
    assert deltas.read_bytes() == JOINED
    assert adl.read_bytes() == b""  # asked for, and no partition had any
    assert task.partition_files(0).deltas is not None
    assert not task.partition_files(0).deltas.exists()  # moved, not copied
    assert reader.read().startswith(b"an earlier run's deltas")
    reader.close()


def test_a_symlinked_output_is_written_through(tmp_path: Path) -> None:
    target = tmp_path / "kept" / "deltas.jsonl"
    target.parent.mkdir()
    target.write_bytes(b"old\n")
    link = tmp_path / "deltas.jsonl"
    link.symlink_to(target)
    _join(task_with_shares(tmp_path, link, tmp_path / "adl.jsonl"), PARTITIONS)
    assert link.is_symlink()
    assert target.read_bytes() == JOINED


def test_an_absent_output_is_created(tmp_path: Path) -> None:
    deltas = tmp_path / "out" / "deltas.jsonl"
    deltas.parent.mkdir()
    _join(task_with_shares(tmp_path, deltas, tmp_path / "adl.jsonl"), PARTITIONS)
    assert deltas.read_bytes() == JOINED
