"""The dashboard's HTTP side: the page at ``/``, its assets, ``/dashboard/history``, ``/dashboard/events``.

Every asset ships in the package (``static/``) and is served by the worker: the page needs no internet, and
its Content-Security-Policy lets it load nothing from anywhere else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any, Protocol

from aiohttp import web

from processor import codec
from processor.config import Settings
from processor.stream.dashboard.live import LiveFeed
from processor.stream.dashboard.source import (
    DELTAS,
    STATES,
    TRIGGERS,
    Budgets,
    DashboardTopics,
    KafkaTimeline,
    Sink,
    Window,
)
from processor.stream.dashboard.timeline import History, SinceError, parse_since
from processor.stream.view import FundsView

log = logging.getLogger(__name__)

ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none';"
        " frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
MAX_FUNDS_PER_REQUEST = 64
HISTORY_WAITING = 4  # history reads queued behind the one running; more are told to come back
RETRY_AFTER_SECONDS = 2
DEFAULT_BUDGETS = Budgets()
BUILD_CHUNK = 5_000  # records drawn between two turns of the worker's loop


class Timeline(Protocol):
    async def read(self, since_ms: int) -> Window: ...

    async def follow(self, sink: Sink) -> None: ...


class _ProblemError(Exception):
    """A request the dashboard refuses: its status, error code and a sentence saying why."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def _json(document: object, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=codec.dumps(document),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-cache", **(headers or {})},
    )


def _problem_json(problem: _ProblemError, headers: Mapping[str, str] | None = None) -> web.Response:
    return _json({"error": problem.error, "detail": problem.detail}, problem.status, headers)


class Dashboard:
    """The funds drawn over event time, live: history from the output topics, then committed changes."""

    def __init__(
        self,
        view: FundsView,
        timeline: Timeline,
        *,
        budgets: Budgets = DEFAULT_BUDGETS,
        live: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.view = view
        self.timeline = timeline
        self.budgets = budgets
        self.live = LiveFeed(view, timeline.follow, clock=clock, **(live or {}))
        self._clock = clock
        self._history_slot = asyncio.Semaphore(1)
        self._history_waiting = 0
        self._page = _static("index.html")
        self._assets = {name: (_static(name), content_type) for name, content_type in ASSETS.items()}

    @classmethod
    def for_worker(cls, view: FundsView, options: Mapping[str, Any], settings: Settings) -> Dashboard:
        budgets = DEFAULT_BUDGETS
        return cls(
            view, KafkaTimeline(options, DashboardTopics.from_settings(settings), budgets), budgets=budgets
        )

    def add_routes(self, app: web.Application) -> None:
        app.add_routes(
            [
                web.get("/", self.page),
                web.get("/dashboard/static/{name}", self.asset),
                web.get("/dashboard/history", self.history),
                web.get("/dashboard/events", self.events),
            ]
        )
        app.on_shutdown.append(self._shutdown)

    async def _shutdown(self, app: web.Application) -> None:
        await self.live.close()

    # --- the parameters: ?since= and ?fund= ---------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _since(self, request: web.Request, now_ms: int) -> int:
        try:
            return parse_since(request.query.get("since"), now_ms)
        except SinceError as error:
            raise _ProblemError(400, "invalid_since", str(error)) from None

    def _funds(self, request: web.Request) -> set[str] | None:
        names = request.query.getall("fund", [])
        if not names:
            return None
        if len(names) > MAX_FUNDS_PER_REQUEST:
            raise _ProblemError(
                400, "too_many_funds", f"fund: at most {MAX_FUNDS_PER_REQUEST} funds per request"
            )
        known = {state.fund for state in self.view.states()}
        unknown = sorted(set(names) - known)
        if unknown:
            detail = f"no fund {unknown[0][:64]!r}" + (
                f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
            )
            raise _ProblemError(404, "unknown_fund", detail)
        return set(names)

    # --- handlers ------------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        try:
            self._since(request, self._now_ms())
            self._funds(request)
        except _ProblemError as problem:
            return web.Response(
                status=problem.status, text=f"{problem.error}: {problem.detail}\n", headers=PAGE_HEADERS
            )
        return web.Response(body=self._page, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)

    async def asset(self, request: web.Request) -> web.Response:
        found = self._assets.get(request.match_info["name"])
        if found is None:
            return _problem_json(_ProblemError(404, "not_found", "no such dashboard asset"))
        body, content_type = found
        return web.Response(body=body, headers={**PAGE_HEADERS, "Content-Type": content_type})

    async def history(self, request: web.Request) -> web.Response:
        """The window's balance points, markers and ADL state changes, read from the topics now."""
        now_ms = self._now_ms()
        try:
            since = self._since(request, now_ms)
            funds = self._funds(request)
            if self._history_waiting >= HISTORY_WAITING:
                raise _ProblemError(503, "busy", "too many history reads at once; try again in a moment")
        except _ProblemError as problem:
            retry = {"Retry-After": str(RETRY_AFTER_SECONDS)} if problem.status == 503 else None
            return _problem_json(problem, retry)
        self._history_waiting += 1
        try:
            async with self._history_slot:
                window = await self.timeline.read(since)
        except Exception as error:
            log.exception("reading the dashboard history failed")
            return _problem_json(
                _ProblemError(503, "history_unavailable", f"cannot read the output topics now ({error!r})"),
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        finally:
            self._history_waiting -= 1
        history = History(funds)
        for kind, add in (
            (DELTAS, history.add_delta),
            (TRIGGERS, history.add_trigger),
            (STATES, history.add_state),
        ):
            records = window.records[kind]
            for start in range(0, len(records), BUILD_CHUNK):
                for record in records[start : start + BUILD_CHUNK]:
                    add(record)
                await asyncio.sleep(0)  # the worker's loop gets a turn between chunks
        document = history.document()
        document.update(
            since=since,
            now=now_ms,
            truncated=window.truncated,
            missing=window.missing,
            budgets={
                DELTAS: self.budgets.deltas,
                TRIGGERS: self.budgets.triggers,
                STATES: self.budgets.states,
            },
        )
        return _json(document)

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: ``snapshot`` (every fund) first, then one ``update`` per tick with changes."""
        transport = request.transport
        subscriber = self.live.attach(transport.abort if transport is not None else lambda: None)
        if subscriber is None:
            return _problem_json(
                _ProblemError(
                    503, "too_many_streams", f"{self.live.max_streams} event streams are open already"
                ),
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        try:
            await response.prepare(request)
            while (message := await subscriber.next()) is not None:
                await response.write(message)
        except ConnectionError:  # the client left, or was dropped for not reading
            pass
        finally:
            self.live.detach(subscriber)
        return response
