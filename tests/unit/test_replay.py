"""Output files of a replay (``processor.replay.open_output``): written from empty, whatever was there;
and the collector's tuning of a replay process."""

from __future__ import annotations

import gc
import os
from pathlib import Path

from processor.replay import REPLAY_COLLECTION_THRESHOLD, collect_rarely, open_output


def test_an_earlier_output_is_replaced_by_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "deltas.jsonl"
    path.write_bytes(b"an earlier run's, longer than the new one\n")
    earlier = path.stat().st_ino
    reader = path.open("rb")  # a reader of the earlier file keeps reading it whole
    with open_output(path) as output:
        output.write(b"new\n")
    assert path.read_bytes() == b"new\n"
    assert path.stat().st_ino != earlier
    assert reader.read() == b"an earlier run's, longer than the new one\n"
    reader.close()


def test_a_symlink_is_written_through(tmp_path: Path) -> None:
    target = tmp_path / "kept" / "deltas.jsonl"
    target.parent.mkdir()
    target.write_bytes(b"old old old\n")
    link = tmp_path / "deltas.jsonl"
    link.symlink_to(target)
    with open_output(link) as output:
        output.write(b"new\n")
    assert link.is_symlink()
    assert target.read_bytes() == b"new\n"


def test_a_fifo_is_opened_as_it_is(tmp_path: Path) -> None:
    fifo = tmp_path / "deltas.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader first, so opening to write does not block
    try:
        with open_output(fifo, buffering=0) as output:
            output.write(b"new\n")
        assert os.read(reader, 100) == b"new\n"
    finally:
        os.close(reader)
    assert fifo.exists() and not fifo.is_file()


def test_a_new_output_is_created(tmp_path: Path) -> None:
    path = tmp_path / "adl.jsonl"
    with open_output(path) as output:
        output.write(b"x\n")
    assert path.read_bytes() == b"x\n"


def test_a_replay_process_collects_rarely() -> None:
    before = gc.get_threshold()
    try:
        collect_rarely()
        assert gc.get_threshold() == (REPLAY_COLLECTION_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0  # what was loaded is out of the collector's reach
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
