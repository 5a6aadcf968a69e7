"""HTTP views of the worker on aiohttp: /funds, /funds/{fund}, /health, /metrics, and the dashboard at /."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from processor import codec
from processor.stream.dashboard import Dashboard
from processor.stream.metrics import Metrics
from processor.stream.view import FundsView

JSON = "application/json"
SHUTDOWN_SECONDS = 5.0  # how long runner.cleanup() lets requests in flight finish


class Health(Protocol):
    def health(self) -> tuple[str, str | None]:
        """``("ok", None)`` when the worker serves, else ``("starting" | "recovering", reason)``."""
        ...


def _json(document: object, status: int = 200) -> web.Response:
    return web.Response(body=codec.dumps(document), status=status, content_type=JSON)


def create_app(
    view: FundsView, health: Health, metrics: Metrics, dashboard: Dashboard | None = None
) -> web.Application:
    """The views as an aiohttp application, without a server (tests drive it with aiohttp's TestServer)."""

    async def funds(request: web.Request) -> web.Response:
        return web.Response(body=codec.encode_states(view.states()), content_type=JSON)

    async def fund(request: web.Request) -> web.Response:
        name = request.match_info["fund"]
        state = view.get(name)
        if state is None:
            return _json({"error": "unknown_fund", "detail": f"no fund {name!r}"}, status=404)
        return _json(codec.state_document(state))

    async def status(request: web.Request) -> web.Response:
        current, reason = health.health()
        if current == "ok":
            return _json({"status": "ok"})
        return _json({"status": current, "reason": reason or current}, status=503)

    async def exposition(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": metrics.CONTENT_TYPE})

    app = web.Application()
    app.add_routes(
        [
            web.get("/funds", funds),
            web.get("/funds/{fund}", fund),
            web.get("/health", status),
            web.get("/metrics", exposition),
        ]
    )
    if dashboard is not None:
        dashboard.add_routes(app)
    return app


async def start_web(
    host: str,
    port: int,
    view: FundsView,
    health: Health,
    metrics: Metrics,
    dashboard: Dashboard | None = None,
) -> web.AppRunner:
    """Serve the views on ``host:port``; the caller stops them with ``runner.cleanup()``.

    A port already in use raises ``OSError`` for the caller to report. No access log: scrapes are frequent.
    """
    runner = web.AppRunner(
        create_app(view, health, metrics, dashboard), access_log=None, shutdown_timeout=SHUTDOWN_SECONDS
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
