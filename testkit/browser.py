"""A real headless Chromium driven over the Chrome DevTools Protocol, with aiohttp's websocket client only.

``chromium --headless --remote-debugging-port=N`` serves the protocol; :class:`Page` sends commands
(``Runtime.evaluate``, ``Page.captureScreenshot``, ...) and keeps every event, so a test can tell whether a
request failed (``Network.loadingFailed``, a response >= 400) or the page logged an error.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from testkit.broker import free_port

#: Where Debian's ``chromium`` package puts the browser, and the names other systems use.
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The browser named by ``CHROMIUM``, else the first of :data:`BROWSER_NAMES` on the path."""
    named = os.environ.get("CHROMIUM")
    if named:
        return shutil.which(named) or (named if Path(named).is_file() else None)
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(RuntimeError):
    """The browser did not start, or a protocol command failed."""


class Page:
    """One page target of the browser: commands in, results and events out."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self._socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            document = message.json()
            waiting = self._waiting.pop(document.get("id", -1), None)
            if waiting is not None and not waiting.done():
                if "error" in document:
                    waiting.set_exception(BrowserError(str(document["error"])))
                else:
                    waiting.set_result(document.get("result", {}))
            elif "method" in document:
                self.events.append(document)
        for waiting in self._waiting.values():
            if not waiting.done():
                waiting.set_exception(BrowserError("the browser closed the connection"))

    async def send(self, method: str, timeout: float = 30.0, **params: Any) -> Any:
        number = next(self._ids)
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[number] = answer
        await self._socket.send_json({"id": number, "method": method, "params": params})
        return await asyncio.wait_for(answer, timeout)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited when it is a promise)."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 20.0, every: float = 0.05) -> Any:
        """Poll until the expression is truthy; return its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if loop.time() > deadline:
                raise TimeoutError(f"{expression!r} still falsy after {timeout:.0f} s")
            await asyncio.sleep(every)

    async def screenshot(self, path: Path) -> None:
        result = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(result["data"]))

    def failures(self) -> list[str]:
        """Failed requests, responses >= 400, errors logged and exceptions thrown, one line each."""
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Network.loadingFailed" and not params.get("canceled"):
                found.append(f"request failed: {params.get('errorText')} ({params.get('type')})")
            elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
                found.append(f"HTTP {params['response']['status']}: {params['response']['url']}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                found.append(f"console.error: {params.get('args')}")
        return found

    def requested(self) -> list[str]:
        return [
            event["params"]["request"]["url"]
            for event in self.events
            if event["method"] == "Network.requestWillBeSent"
        ]

    async def close(self) -> None:
        await self._socket.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def chromium(binary: str, profile: Path, width: int = 1400, height: int = 1000) -> AsyncIterator[Page]:
    """A headless Chromium with a private profile, and its first page with Page, Network, Log and Runtime
    events on. Needs no network: only 127.0.0.1."""
    port = free_port()
    command = [
        binary,
        "--headless=new",
        "--no-sandbox",  # root in a container: the sandbox needs user namespaces it may not have
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1",
        f"--remote-debugging-port={port}",
        "about:blank",
    ]
    log = (profile.parent / f"{profile.name}.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    session = aiohttp.ClientSession()
    page: Page | None = None
    try:
        target = await _page_target(session, port, process)
        socket = await session.ws_connect(target, max_msg_size=0)
        page = Page(socket)
        for domain in ("Page", "Network", "Log", "Runtime"):
            await page.send(f"{domain}.enable")
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        yield page
    finally:
        if page is not None:
            await page.close()
        await session.close()
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def _page_target(session: aiohttp.ClientSession, port: int, process: subprocess.Popen[bytes]) -> str:
    """The websocket address of the browser's first page, once its DevTools endpoint answers."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while loop.time() < deadline:
        if process.poll() is not None:
            raise BrowserError(f"chromium exited with {process.returncode}")
        try:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            for target in targets:
                if target.get("type") == "page":
                    return str(target["webSocketDebuggerUrl"])
        except (aiohttp.ClientError, ValueError):
            pass
        await asyncio.sleep(0.1)
    raise BrowserError("chromium's DevTools endpoint did not answer within 30 s")


async def open_page(page: Page, url: str, timeout: float = 30.0) -> None:
    """Navigate and wait for the new document's load event."""

    def loads() -> int:
        return sum(event["method"] == "Page.loadEventFired" for event in page.events)

    before = loads()
    await page.send("Page.navigate", url=url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loads() == before:
        if loop.time() > deadline:
            raise TimeoutError(f"{url} did not load within {timeout:.0f} s")
        await asyncio.sleep(0.05)
