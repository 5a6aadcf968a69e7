"""The live feed: committed fund states and ADL records, coalesced into one server-sent event per tick.

Fund states come from the funds view, which takes only committed states (the worker pushes its own right
after each commit; the changelog, read ``read_committed``, brings the others). ADL triggers and ADL state
events come from their topics, read ``read_committed`` while at least one page is open. Each tick's message
is encoded once and queued for every open stream; a stream whose queue outgrows its bound (a client that does
not read) is dropped, its connection aborted, so no client makes the worker hold more than that for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from processor import codec
from processor.domain.state import FundState
from processor.stream.dashboard.source import STATES, TRIGGERS, Sink
from processor.stream.dashboard.timeline import (
    MAX_STATE_CHANGES,
    Marker,
    marker_documents,
    operation_markers,
    state_change,
    trigger_marker,
)
from processor.stream.view import FundsView

log = logging.getLogger(__name__)

KEEP_ALIVE = b": keep-alive\n\n"
MAX_STATES_PER_TICK = 64  # per fund; more (a fund committing faster than the tick) keeps the newest
MAX_RECORDS_PER_TICK = 20_000  # ADL triggers and state events held for the next tick

Follow = Callable[[Sink], Coroutine[Any, Any, None]]


def server_sent_event(event: str, document: object) -> bytes:
    """One event of a ``text/event-stream`` (the JSON is one line: no newline to escape)."""
    return b"event: " + event.encode() + b"\ndata: " + codec.dumps(document) + b"\n\n"


class Subscriber:
    """One open event stream: its queue of encoded messages, bounded in bytes."""

    __slots__ = ("_abort", "_bytes", "_limit", "_queue", "_ready", "dropped", "ended")

    def __init__(self, limit: int, abort: Callable[[], None]) -> None:
        self._queue: deque[bytes] = deque()
        self._bytes = 0
        self._limit = limit
        self._abort = abort
        self._ready = asyncio.Event()
        self.dropped = False
        self.ended = False

    @property
    def queued(self) -> int:
        return self._bytes

    def offer(self, message: bytes) -> bool:
        """Queue ``message``; drop the stream instead when the queue would outgrow its bound."""
        if self.dropped or self.ended:
            return False
        if self._bytes + len(message) > self._limit:
            self.drop()
            return False
        self._queue.append(message)
        self._bytes += len(message)
        self._ready.set()
        return True

    def drop(self) -> None:
        """End the stream at once and abort its connection (a write blocked on it fails)."""
        if not self.dropped:
            self.dropped = True
            self._queue.clear()
            self._bytes = 0
            self._ready.set()
            self._abort()

    def end(self) -> None:
        """End the stream once what is queued has been sent (the server is stopping)."""
        self.ended = True
        self._ready.set()

    async def next(self) -> bytes | None:
        """The next message to send; ``None`` when the stream is over."""
        while not self._queue:
            if self.dropped or self.ended:
                return None
            self._ready.clear()
            await self._ready.wait()
        if self.dropped:
            return None
        message = self._queue.popleft()
        self._bytes -= len(message)
        return message


class LiveFeed:
    """Fan committed changes out to the open event streams, one coalesced message per tick."""

    def __init__(
        self,
        view: FundsView,
        follow: Follow | None,
        *,
        tick_seconds: float = 0.25,
        idle_seconds: float = 30.0,
        keep_alive_seconds: float = 15.0,
        queue_bytes: int = 1 << 20,
        max_streams: int = 1_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._view = view
        self._follow = follow
        self._tick_seconds = tick_seconds
        self._idle_seconds = idle_seconds
        self._keep_alive_seconds = keep_alive_seconds
        self._queue_bytes = queue_bytes
        self.max_streams = max_streams
        self._clock = clock
        self._subscribers: set[Subscriber] = set()
        self._last: dict[str, FundState] = {}
        self._committed_ms: dict[str, int] = {}
        self._pending: dict[str, list[tuple[FundState | None, FundState]]] = {}
        self._triggers: list[Marker] = []
        self._states: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        view.listen(self._take_state)

    @property
    def streams(self) -> int:
        return len(self._subscribers)

    def attach(self, abort: Callable[[], None]) -> Subscriber | None:
        """A new stream, its first message (every fund) queued; ``None`` when ``max_streams`` are open."""
        if len(self._subscribers) >= self.max_streams:
            return None
        subscriber = Subscriber(self._queue_bytes, abort)
        subscriber.offer(b"retry: 2000\n\n" + self.snapshot())
        self._subscribers.add(subscriber)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="dashboard-live-feed")
        return subscriber

    def detach(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def snapshot(self) -> bytes:
        """Every fund of the view as it is now."""
        return server_sent_event(
            "snapshot",
            {
                "funds": {state.fund: self._fund_document(state) for state in self._view.states()},
                "now": self._now_ms(),
            },
        )

    async def close(self) -> None:
        """End every stream and stop the ticks and the ADL reads."""
        for subscriber in list(self._subscribers):
            subscriber.end()
        self._subscribers.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- what comes in ------------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _fund_document(self, state: FundState) -> dict[str, Any]:
        """The fund's state as ``/funds`` has it, but ``by_symbol`` (the page does not show it, and it can be
        long), with when its last commit reached this worker."""
        document = codec.state_document(state)
        document.pop("by_symbol", None)
        document["committed_ms"] = self._committed_ms.get(state.fund)
        return document

    def _take_state(self, state: FundState) -> None:
        """The funds view took a newer committed state: runs after every commit, so it is kept cheap."""
        previous = self._last.get(state.fund)
        self._last[state.fund] = state
        self._committed_ms[state.fund] = self._now_ms()
        if not self._subscribers:
            return
        pending = self._pending.setdefault(state.fund, [])
        if len(pending) >= MAX_STATES_PER_TICK:
            first_previous = pending[-1][0]
            pending[-1] = (first_previous, state)  # the operations of both still show as one marker
        else:
            pending.append((previous, state))

    def _take_record(self, kind: str, document: Any) -> None:
        if (
            not isinstance(document, Mapping)
            or len(self._triggers) + len(self._states) >= MAX_RECORDS_PER_TICK
        ):
            return
        if kind == TRIGGERS:
            marker = trigger_marker(document)
            if marker is not None:
                self._triggers.append(marker)
        elif kind == STATES:
            change = state_change(document)
            if change is not None:
                self._states.append(change)

    # --- what goes out ------------------------------------------------------------------------------

    def _update(self) -> bytes | None:
        """The message of one tick, or ``None`` when nothing changed."""
        if not (self._pending or self._triggers or self._states):
            return None
        pending, self._pending = self._pending, {}
        funds: dict[str, Any] = {}
        points: dict[str, list[list[Any]]] = {}
        markers: list[Marker] = []
        for fund, changes in pending.items():
            funds[fund] = self._fund_document(changes[-1][1])
            points[fund] = [
                [state.last_timestamp, codec.amount_text(state.balance), state.sequence]
                for _, state in changes
                if state.last_timestamp is not None
            ]
            for previous, state in changes:
                if previous is not None:
                    markers.extend(operation_markers(previous, state))
        triggers, self._triggers = self._triggers, []
        states, self._states = self._states, []
        return server_sent_event(
            "update",
            {
                "funds": funds,
                "points": points,
                # one marker per fund, kind and reason per tick: the page's resolution anyway
                "markers": marker_documents(markers + triggers, limit=1),
                "states": states[-MAX_STATE_CHANGES:],
                "now": self._now_ms(),
            },
        )

    def _broadcast(self, message: bytes) -> None:
        for subscriber in list(self._subscribers):
            if not subscriber.offer(message):
                self._subscribers.discard(subscriber)
                if subscriber.dropped:
                    self.dropped += 1
                    log.warning(
                        "dropped a dashboard event stream that does not read (more than %d bytes queued)",
                        self._queue_bytes,
                    )

    async def _run(self) -> None:
        """Tick while streams are open (and ``idle_seconds`` after the last one closed), reading the ADL
        topics meanwhile."""
        loop = asyncio.get_running_loop()
        follower: asyncio.Task[None] | None = (
            asyncio.create_task(self._follow(self._take_record)) if self._follow is not None else None
        )
        sent = idle_since = loop.time()
        try:
            while True:
                await asyncio.sleep(self._tick_seconds)
                now = loop.time()
                try:
                    message = self._update()
                except Exception:  # a record the page cannot be told about must not stop the feed
                    log.exception("building the dashboard's update failed; its changes are skipped")
                    message = None
                if message is None and now - sent >= self._keep_alive_seconds:
                    message = KEEP_ALIVE
                if message is not None:
                    self._broadcast(message)
                    sent = now
                if self._subscribers:
                    idle_since = now
                elif now - idle_since >= self._idle_seconds:
                    self._task = None  # a stream attached from here on starts a new run
                    return
        finally:
            self._pending.clear()
            self._triggers.clear()
            self._states.clear()
            if follower is not None:
                follower.cancel()
                with contextlib.suppress(
                    asyncio.CancelledError, Exception
                ):  # a follower logs its own failures
                    await follower
