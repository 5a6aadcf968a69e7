"""Line-per-event output files of a replay; any of them may be absent."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from processor.replay import OutputFiles


class Sinks:
    """Writers for the delta, trigger and dead-letter files that were asked for."""

    def __init__(self, deltas: BinaryIO | None, adl: BinaryIO | None, dlq: BinaryIO | None) -> None:
        self.deltas, self.adl, self.dlq = deltas, adl, dlq

    def write_delta(self, line: bytes) -> None:
        if self.deltas is not None:
            self.deltas.write(line + b"\n")

    def write_trigger(self, line: bytes) -> None:
        if self.adl is not None:
            self.adl.write(line + b"\n")

    def write_dead_letter(self, line: bytes) -> None:
        if self.dlq is not None:
            self.dlq.write(line + b"\n")


@contextmanager
def open_sinks(outputs: OutputFiles) -> Iterator[Sinks]:
    with ExitStack() as stack:

        def open_file(path: Path | None) -> BinaryIO | None:
            if path is None:
                return None
            path.parent.mkdir(parents=True, exist_ok=True)
            return stack.enter_context(path.open("wb", buffering=1 << 20))

        yield Sinks(open_file(outputs.deltas), open_file(outputs.adl), open_file(outputs.dlq))
