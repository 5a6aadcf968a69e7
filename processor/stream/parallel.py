"""Fold groups of a topic's partitions in parallel processes, and fold again, as one group, the groups
that turn out to share a fund.

A fund's outputs depend on the order of its own events only, so a group of partitions can be folded
on its own, by its own process and consumer, exactly when none of its funds has events in another
group. Which funds a partition holds is known only once it is read: each process reports the funds
it meets as it goes, and the first fund met by two groups stops both. When every group has run, the
groups that share a fund (or were stopped) are merged and folded again, until no two share one.
Input keyed by margin currency never shares: each fund lives on one partition.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import pickle
import threading
from collections.abc import Callable, Collection, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from processor.logs import configure_logging
from processor.replay import collect_rarely

log = logging.getLogger(__name__)

#: Processes are started fresh (``spawn``), never forked from a process with an event loop,
#: aiokafka's sockets and threads.
_CONTEXT = multiprocessing.get_context("spawn")

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class PartitionRange(NamedTuple):
    """The offsets ``[start, end)`` of one partition: what a replay reads of it."""

    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return max(self.end - self.start, 0)


class StoppedError(Exception):
    """Folding was stopped: a process's group shares a fund with another, or the caller gave up."""


class Control:
    """A folding process's line to the coordinator: progress and funds met, and the order to stop."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.reported: set[str] = set()

    def tick(self, messages: int, funds: Collection[str]) -> None:
        """Report the messages folded so far and the funds not reported yet; raise ``StoppedError`` when
        the coordinator has said so. Call it once per batch."""
        new = (
            [fund for fund in funds if fund not in self.reported] if len(funds) != len(self.reported) else []
        )
        self.reported.update(new)
        self.connection.send(("tick", messages, new))
        if self.connection.poll() and self.connection.recv() == "stop":
            raise StoppedError


class GroupTask(Protocol[R_co]):
    """What each process runs: fold ``ranges`` (ascending partitions, each from start to end) and
    return the funds it touched with its result. Picklable: it travels to a fresh process."""

    async def fold(
        self, ranges: Sequence[PartitionRange], control: Control | None
    ) -> tuple[Collection[str], R_co]: ...


class Folded(NamedTuple, Generic[R]):
    """A group that was folded alone: no other group touched any of its funds."""

    ranges: tuple[PartitionRange, ...]
    funds: frozenset[str]
    result: R


def balance(ranges: Sequence[PartitionRange], groups: int) -> list[tuple[PartitionRange, ...]]:
    """The partitions with records in at most ``groups`` groups of about equal record counts: the
    largest first, each to the lightest group (ties to the lower number); each group ascending."""
    filled = sorted((r for r in ranges if r.size), key=lambda r: (-r.size, r.partition))
    members: list[list[PartitionRange]] = [[] for _ in range(max(min(groups, len(filled)), 1))]
    loads = [0] * len(members)
    for partition_range in filled:
        lightest = min(range(len(members)), key=lambda index: (loads[index], index))
        members[lightest].append(partition_range)
        loads[lightest] += partition_range.size
    return [tuple(sorted(group)) for group in members if group]


def fold_in_parallel(
    task: GroupTask[R],
    ranges: Sequence[PartitionRange],
    jobs: int,
    on_progress: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
    log_format: str = "text",
) -> list[Folded[R]]:
    """Fold ``ranges`` in up to ``jobs`` processes; return the groups, each folded alone, in
    ascending order of their first partition. Blocking: run it in a thread from an event loop;
    ``cancel`` stops every process (and raises ``StoppedError``)."""
    groups = balance(ranges, jobs)
    kept: list[Folded[R]] = []
    logging_setup = (logging.getLevelName(logging.getLogger().getEffectiveLevel()), log_format)
    while groups:
        outcome = _Round(task, groups, kept, logging_setup, on_progress, cancel).run()
        kept, groups = _regroup(outcome)
        if groups:
            log.info(
                "funds shared between partition groups; folding %s again",
                "; ".join(", ".join(str(r.partition) for r in group) for group in groups),
            )
    return sorted(kept, key=lambda folded: folded.ranges[0].partition)


@dataclass
class _Member(Generic[R]):
    ranges: tuple[PartitionRange, ...]
    funds: set[str] = field(default_factory=set)
    result: R | None = None
    done: bool = False
    messages: int = 0
    process: Any = None
    connection: Connection | None = None


class _Round(Generic[R]):
    """One round: a process per group, beside the groups kept from earlier rounds."""

    def __init__(
        self,
        task: GroupTask[R],
        groups: list[tuple[PartitionRange, ...]],
        kept: list[Folded[R]],
        logging_setup: tuple[str, str],
        on_progress: Callable[[int], None] | None,
        cancel: threading.Event | None,
    ) -> None:
        self.task = task
        self.logging_setup = logging_setup
        self.on_progress = on_progress
        self.cancel = cancel
        self.members: list[_Member[R]] = [
            _Member(folded.ranges, set(folded.funds), folded.result, True, sum(r.size for r in folded.ranges))
            for folded in kept
        ]
        self.running = list(range(len(self.members), len(self.members) + len(groups)))
        self.members += [_Member(group) for group in groups]
        self.owner: dict[str, int] = {}
        for index, member in enumerate(self.members):
            for fund in member.funds:
                self.owner.setdefault(fund, index)

    def run(self) -> list[_Member[R]]:
        try:
            for index in self.running:
                self._start(index)
            live: dict[Any, int] = {self.members[index].connection: index for index in self.running}
            while live:
                if self.cancel is not None and self.cancel.is_set():
                    raise StoppedError
                for connection in wait(list(live), timeout=0.5):
                    if self._receive(live[connection]):
                        del live[connection]
            for index in self.running:
                self.members[index].process.join()
            return self.members
        finally:
            self._end()

    def _start(self, index: int) -> None:
        member = self.members[index]
        parent, child = _CONTEXT.Pipe()
        member.connection = parent
        member.process = _CONTEXT.Process(
            target=_work,
            args=(self.task, member.ranges, child, self.logging_setup),
            name=f"replay-{'-'.join(str(r.partition) for r in member.ranges)}",
            daemon=True,
        )
        member.process.start()
        child.close()

    def _receive(self, index: int) -> bool:
        """Handle one message of process ``index``; whether it has finished."""
        member = self.members[index]
        assert member.connection is not None
        try:
            kind, *body = member.connection.recv()
        except EOFError:
            member.process.join()
            raise RuntimeError(
                f"the replay process for partitions {_names(member.ranges)} exited with code "
                f"{member.process.exitcode}"
            ) from None
        if kind == "tick":
            member.messages, new = body
            self._met(index, new)
            if self.on_progress is not None:
                self.on_progress(sum(m.messages for m in self.members))
            return False
        if kind == "done":
            funds, member.result = body[0]
            member.done = True
            self._met(index, funds)
            return True
        if kind == "stopped":
            return True
        raise body[0]  # "error": what the process raised

    def _met(self, index: int, funds: Collection[str]) -> None:
        """Record that group ``index`` touched ``funds``; stop the groups that share one."""
        member = self.members[index]
        for fund in funds:
            member.funds.add(fund)
            other = self.owner.setdefault(fund, index)
            if other != index:
                self._stop(index)
                self._stop(other)

    def _stop(self, index: int) -> None:
        member = self.members[index]
        if member.done or member.connection is None or member.connection.closed:
            return
        with suppress(OSError):  # it has ended already
            member.connection.send("stop")

    def _end(self) -> None:
        for index in self.running:
            member = self.members[index]
            if member.process is not None and member.process.is_alive():
                member.process.join(timeout=0.1)
                if member.process.is_alive():
                    member.process.terminate()
                    member.process.join()
            if member.connection is not None:
                member.connection.close()


def _regroup(members: list[_Member[R]]) -> tuple[list[Folded[R]], list[tuple[PartitionRange, ...]]]:
    """Groups that share no fund with another (and finished) are kept; the others are merged, by
    shared funds, into the next round's groups."""
    parent = list(range(len(members)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    first: dict[str, int] = {}
    for index, member in enumerate(members):
        for fund in member.funds:
            parent[root(index)] = root(first.setdefault(fund, index))
    components: dict[int, list[int]] = {}
    for index in range(len(members)):
        components.setdefault(root(index), []).append(index)
    kept: list[Folded[R]] = []
    groups: list[tuple[PartitionRange, ...]] = []
    for indexes in components.values():
        if len(indexes) == 1 and members[indexes[0]].done:
            member = members[indexes[0]]
            kept.append(Folded(member.ranges, frozenset(member.funds), member.result))  # type: ignore[arg-type]
        else:
            groups.append(tuple(sorted(r for index in indexes for r in members[index].ranges)))
    return kept, sorted(groups)


def _names(ranges: Sequence[PartitionRange]) -> str:
    return ", ".join(str(r.partition) for r in ranges)


def _work(
    task: GroupTask[Any],
    ranges: tuple[PartitionRange, ...],
    connection: Connection,
    logging_setup: tuple[str, str],
) -> None:
    """A folding process: fold, then send the result, ``stopped``, or what went wrong."""
    configure_logging(*logging_setup)
    collect_rarely()
    try:
        try:
            funds, result = asyncio.run(task.fold(ranges, Control(connection)))
        except StoppedError:
            connection.send(("stopped",))
            return
        except BaseException as error:  # sent to the coordinator, which raises it
            connection.send(("error", _transportable(error)))
            return
        connection.send(("done", (list(funds), result)))
    finally:
        connection.close()


def _transportable(error: BaseException) -> BaseException:
    """``error`` itself when it survives pickling, else a ``RuntimeError`` that says what it was."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error
