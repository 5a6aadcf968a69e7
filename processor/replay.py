"""Replay a JSONL file of fills through the pipeline into state, delta, trigger and dead-letter files."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, BinaryIO, NamedTuple

from processor import codec
from processor.domain.fold import exact_arithmetic
from processor.domain.ledger import Ledger
from processor.domain.state import FundState
from processor.pipeline import Emitted, Pipeline


class OutputFiles(NamedTuple):
    """Where a replay writes; any of them may be absent."""

    state: Path | None = None
    deltas: Path | None = None
    adl: Path | None = None
    dlq: Path | None = None


class ReplayTotals(NamedTuple):
    messages: int
    deltas: int
    triggers: int
    dead_letters: int
    seconds: float


class _Sinks:
    """Line writers for the three output streams; writes nothing where no file was asked for."""

    def __init__(self, stack: ExitStack, outputs: OutputFiles) -> None:
        self.deltas = self._open(stack, outputs.deltas)
        self.adl = self._open(stack, outputs.adl)
        self.dlq = self._open(stack, outputs.dlq)

    @staticmethod
    def _open(stack: ExitStack, path: Path | None) -> BinaryIO | None:
        if path is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        return stack.enter_context(path.open("wb", buffering=1 << 20))


def read_lines(source: str) -> Iterator[bytes]:
    """Yield the lines of a file (or stdin for ``-``) without their line endings."""
    stream: BinaryIO = sys.stdin.buffer if source == "-" else Path(source).open("rb")  # noqa: SIM115
    try:
        for line in stream:
            yield line.rstrip(b"\r\n")
    finally:
        if source != "-":
            stream.close()


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
            remaining = max(total - done, 0) / rate if rate else 0.0
            line += f"  {100 * done / total:5.1f}%  ETA {remaining:,.0f}s"
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
    started = time.perf_counter()
    messages = deltas = triggers = dead_letters = 0
    with ExitStack() as stack:
        stack.enter_context(exact_arithmetic())
        sinks = _Sinks(stack, outputs)
        process = pipeline.process
        for number, line in enumerate(lines, start=1):
            emitted: Emitted = process(line, None, source_name, None, number)
            messages += 1
            if emitted.delta is not None:
                deltas += 1
                if sinks.deltas is not None:
                    sinks.deltas.write(emitted.delta + b"\n")
                if emitted.trigger is not None:
                    triggers += 1
                    if sinks.adl is not None:
                        sinks.adl.write(emitted.trigger + b"\n")
            elif emitted.dead_letter is not None:
                dead_letters += 1
                if sinks.dlq is not None:
                    sinks.dlq.write(emitted.dead_letter + b"\n")
            if progress is not None and not messages & 0x3FF:
                progress.update(messages)
    if progress is not None:
        progress.finish()
    if outputs.state is not None:
        write_state(outputs.state, pipeline.ledger.funds.values())
    return ReplayTotals(messages, deltas, triggers, dead_letters, time.perf_counter() - started)


def write_state(path: Path, states: Iterable[FundState]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(codec.encode_states(states) + b"\n")


def summary_lines(ledger: Ledger) -> list[str]:
    """One line per fund, for operators."""
    lines = []
    for state in ledger.states().values():
        view = codec.state_document(state)
        lines.append(
            f"{view['fund']}: balance {view['balance']} surplus {view['total_surplus']} "
            f"paid {view['total_paid']} shortfall {view['total_shortfall']} fills {view['fills']} "
            f"duplicates {view['duplicates']} adl_triggers {view['adl_triggers']} sequence {view['sequence']}"
        )
    return lines
