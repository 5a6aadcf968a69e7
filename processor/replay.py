"""Replay a JSONL file of fills through the pipeline into state, delta, trigger and dead-letter files."""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from io import BufferedReader
from pathlib import Path
from typing import IO, BinaryIO, NamedTuple, cast

from processor import codec
from processor.config import InputError
from processor.domain.fold import exact_arithmetic
from processor.domain.ledger import Ledger
from processor.domain.state import FundState
from processor.pipeline import Emitted, Pipeline

_READ_BLOCK = 1 << 20
BAR_WIDTH = 24


class OutputFiles(NamedTuple):
    """Where a replay writes; any of them may be absent."""

    state: Path | None = None
    deltas: Path | None = None
    adl: Path | None = None
    dlq: Path | None = None
    adl_states: Path | None = None  # ADL policy state changes (SPEC section 9)


class ReplayTotals(NamedTuple):
    messages: int
    deltas: int
    triggers: int
    dead_letters: int
    seconds: float


#: The collector's first threshold during a replay (CPython's default: 700 allocations).
REPLAY_COLLECTION_THRESHOLD = 50_000


def collect_rarely() -> None:
    """Tune the garbage collector for a replay process: what start-up loaded is frozen out of its
    reach, and it runs after 50,000 allocations instead of 700. A replay allocates a few short-lived
    tracked objects a message (a Kafka client's record, tuples) and keeps large structures that
    hold no cycles (the duplicate windows and their queues, which every full collection traversed):
    4-6% of a topic replay's time went to the collector. Cycles are still collected, less often."""
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(REPLAY_COLLECTION_THRESHOLD, second, third)


def clear_output(path: Path) -> bool:
    """Make way for a new output file at ``path``: its directory made if missing, and a regular file
    an earlier run left removed rather than truncated or renamed over (ext4 writes a file truncated
    and written again, or one renamed over another, back to disk at once: its ``auto_da_alloc``
    safeguard, ~0.1 s for a 400 MB deltas file, where a new file is written back whenever the kernel
    chooses). ``False`` for a symlink, a FIFO or a device (``/dev/stdout``): written through."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        return False
    path.unlink(missing_ok=True)
    return True


def open_output(path: Path, buffering: int = -1) -> BinaryIO:
    """Open an output file to write it from empty (``clear_output``: a new file, or what a symlink,
    FIFO or device leads to)."""
    clear_output(path)
    return path.open("wb", buffering=buffering)


class _Sinks:
    """Line writers for the output streams; writes nothing where no file was asked for."""

    def __init__(self, stack: ExitStack, outputs: OutputFiles) -> None:
        self.deltas = self._open(stack, outputs.deltas)
        self.adl = self._open(stack, outputs.adl)
        self.dlq = self._open(stack, outputs.dlq)
        self.adl_states = self._open(stack, outputs.adl_states)

    @staticmethod
    def _open(stack: ExitStack, path: Path | None) -> BinaryIO | None:
        if path is None:
            return None
        return stack.enter_context(open_output(path, 1 << 20))

    def write(
        self, deltas: list[bytes], triggers: list[bytes], dead_letters: list[bytes], states: list[bytes]
    ) -> None:
        """Write the collected lines of each stream (where a file was asked for) and clear them."""
        streams = (
            (self.deltas, deltas),
            (self.adl, triggers),
            (self.dlq, dead_letters),
            (self.adl_states, states),
        )
        for sink, lines in streams:
            if lines:
                if sink is not None:
                    lines.append(b"")
                    sink.write(b"\n".join(lines))
                lines.clear()


class Recorder:
    """Count what a replay emits and write it to the files asked for, a chunk at a time.

    Output lines are collected and written every 1024 messages: one write per line costs more than
    encoding the line. File and topic replays both record through this.
    """

    def __init__(self, sinks: _Sinks, progress: Progress | None) -> None:
        self.sinks = sinks
        self.progress = progress
        self.started = time.perf_counter()
        self.messages = self.deltas = self.triggers = self.dead_letters = 0
        self.expected: int | None = None
        self._delta_lines: list[bytes] = []
        self._trigger_lines: list[bytes] = []
        self._dead_letter_lines: list[bytes] = []
        self._state_lines: list[bytes] = []

    def take(self, emitted: Emitted) -> None:
        self.messages += 1
        if emitted.delta is not None:
            self.deltas += 1
            self._delta_lines.append(emitted.delta)
            if emitted.trigger is not None:
                self.triggers += 1
                self._trigger_lines.append(emitted.trigger)
            if emitted.adl_state is not None:
                self._state_lines.append(emitted.adl_state)
        elif emitted.dead_letter is not None:
            self.dead_letters += 1
            self._dead_letter_lines.append(emitted.dead_letter)
        if not self.messages & 0x3FF:
            self.flush()
            if self.progress is not None:
                self.progress.update(self.messages, self.expected)

    def flush(self) -> None:
        self.sinks.write(self._delta_lines, self._trigger_lines, self._dead_letter_lines, self._state_lines)

    def totals(self) -> ReplayTotals:
        seconds = time.perf_counter() - self.started
        return ReplayTotals(self.messages, self.deltas, self.triggers, self.dead_letters, seconds)


@contextmanager
def recording(
    pipeline: Pipeline, outputs: OutputFiles, progress: Progress | None = None
) -> Iterator[Recorder]:
    """Open the output files, fold in the exact decimal context, and on success write the state file."""
    with ExitStack() as stack:
        stack.enter_context(exact_arithmetic())
        recorder = Recorder(_Sinks(stack, outputs), progress)
        yield recorder
        recorder.flush()
    if progress is not None:
        progress.finish()
    if outputs.state is not None:
        write_state(outputs.state, pipeline.ledger.funds.values())


class FileLines:
    """The lines of a file (or stdin for ``-``) without their line endings, counting the bytes read so
    far, so a replay can tell how far through the file it is.

    Read in large blocks and split in bulk: iterating a file line by line costs more per line
    than the rest of reading it.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.bytes_read = 0  # of the blocks whose lines were all handed out
        self.lines_read = 0  # in those blocks
        self.total_bytes: int | None = None if source == "-" else _readable_size(source)

    def expected(self, lines_done: int) -> int | None:
        """How many lines the whole file holds, estimated from the blocks read whole so far."""
        if not self.total_bytes or not self.bytes_read:
            return None
        return max(lines_done, round(self.lines_read * self.total_bytes / self.bytes_read))

    def __iter__(self) -> Iterator[bytes]:
        source = self.source
        stream = cast(BufferedReader, sys.stdin.buffer) if source == "-" else Path(source).open("rb")  # noqa: SIM115
        try:
            head: list[bytes] = []  # the start of a line that goes on in the next block
            while block := stream.read1(_READ_BLOCK):  # what is there, so a pipe is not held up
                lines = block.split(b"\n")
                head.append(lines[0])
                if len(lines) > 1:
                    lines[0] = b"".join(head)
                    head = [lines.pop()]
                    if b"\r" in block or b"\r" in lines[0]:
                        lines = [line.rstrip(b"\r") for line in lines]
                    yield from lines
                    self.lines_read += len(lines)
                self.bytes_read += len(block)
            last = b"".join(head)
            if last:
                yield last.rstrip(b"\r")
        finally:
            if source != "-":
                stream.close()


def _readable_size(path: str) -> int:
    """The size of a file this process can read; an ``InputError`` naming it otherwise."""
    try:
        with open(path, "rb") as stream:
            stream.read(0)
            return os.fstat(stream.fileno()).st_size
    except OSError as error:  # missing, unreadable, a directory (reading it fails)
        raise InputError(f"--input {path}: {error.strerror or error}") from None


def read_lines(source: str) -> FileLines:
    """The lines of a file (or stdin for ``-``): see ``FileLines``."""
    return FileLines(source)


class Progress:
    """A throttled progress line on stderr, shown only when stderr is a terminal."""

    def __init__(self, stream: IO[str] | None = None, interval: float = 0.5) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.interval = interval
        self.started = time.perf_counter()
        self._next = self.started + interval

    def update(self, done: int, total: int | None = None) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now < self._next:
            return
        self._next = now + self.interval
        rate = done / max(now - self.started, 1e-9)
        line = f"\r{done:,} events  {rate:,.0f}/s"
        if total:
            share = min(done / total, 1.0)
            filled = round(share * BAR_WIDTH)
            remaining = max(total - done, 0) / rate if rate else 0.0
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            line = f"\r[{bar}] {100 * share:5.1f}%  {done:,} events  {rate:,.0f}/s  {remaining:,.0f} s left"
        self.stream.write(line)
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def replay_lines(
    lines: Iterable[bytes],
    pipeline: Pipeline,
    outputs: OutputFiles,
    source_name: str,
    progress: Progress | None = None,
) -> ReplayTotals:
    """Fold every line; a blank or bad line goes to the dead letters with its 1-based line number."""
    estimate = lines.expected if isinstance(lines, FileLines) else None
    with recording(pipeline, outputs, progress) as recorder:
        process, take = pipeline.process, recorder.take
        for number, line in enumerate(lines, start=1):
            if estimate is not None and not number & 0x3FF:
                recorder.expected = estimate(number)
            take(process(line, None, source_name, None, number))
    return recorder.totals()


def write_state(path: Path, states: Iterable[FundState]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(codec.encode_states(states) + b"\n")


def summary_lines(ledger: Ledger) -> list[str]:
    """One line per fund, for operators."""
    lines = []
    for state in ledger.states().values():
        view = codec.state_document(state)
        line = (
            f"{view['fund']}: balance {view['balance']} surplus {view['total_surplus']} "
            f"paid {view['total_paid']} shortfall {view['total_shortfall']} fills {view['fills']} "
            f"duplicates {view['duplicates']} adl_triggers {view['adl_triggers']} sequence {view['sequence']}"
        )
        if "operations" in view:
            line += (
                f" operations {view['operations']} top_ups {view['total_top_ups']}"
                f" withdrawals {view['total_withdrawals']}"
            )
        lines.append(line)
    return lines
