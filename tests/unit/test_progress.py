"""A file replay's progress: the lines still to come are estimated from the bytes read so far."""

from __future__ import annotations

import io
from pathlib import Path

from processor.replay import FileLines, Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_file_lines_count_bytes_and_estimate_the_lines_of_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "fills.jsonl"
    path.write_bytes(b"".join(b"line %06d\r\n" % number for number in range(100_000)))
    lines = FileLines(str(path))
    assert lines.expected(0) is None  # nothing read yet
    seen = 0
    for line in lines:
        seen += 1
        assert not line.endswith(b"\r")
        if seen == 20_000:
            assert lines.expected(seen) is None  # no block read whole yet
        if seen == 90_000:  # the first 1 MiB block (~80,000 lines) read whole
            assert abs((lines.expected(seen) or 0) - 100_000) < 1_000
    assert seen == 100_000
    assert lines.bytes_read == lines.total_bytes == path.stat().st_size
    assert lines.expected(seen) == 100_000


def test_progress_shows_a_bar_the_rate_and_the_time_left_on_a_terminal() -> None:
    stream = Terminal()
    progress = Progress(stream, interval=0.0)
    progress.update(250, 1000)
    shown = stream.getvalue()
    assert shown.startswith("\r[######..................]  25.0%  250 events")
    assert "/s" in shown and "s left" in shown
    progress.finish()
    assert stream.getvalue().endswith("\n")


def test_progress_is_silent_when_stderr_is_not_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(stream, interval=0.0)
    progress.update(10, 100)
    progress.finish()
    assert stream.getvalue() == ""
