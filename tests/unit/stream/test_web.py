"""The HTTP views on aiohttp, served from a ``FundsView`` fed by ``update()`` (no broker)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TypeVar

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from processor import codec
from processor.domain.state import FundRules, FundState
from processor.stream.metrics import CONTENT_TYPE, Metrics
from processor.stream.view import FundsView
from processor.stream.web import create_app, start_web

D = Decimal
T = TypeVar("T")
Client = TestClient[web.Request, web.Application]


class FixedHealth:
    def __init__(self, status: str = "ok", reason: str | None = None) -> None:
        self.status, self.reason = status, reason

    def health(self) -> tuple[str, str | None]:
        return self.status, self.reason


def state(fund: str, balance: str, sequence: int = 1) -> FundState:
    opened = FundState.opened(fund, FundRules().policy_for(fund))
    return opened._replace(balance=D(balance), sequence=sequence, last_timestamp=1_700_000_000_000 + sequence)


def unstarted_view(*states: FundState) -> FundsView:
    view = FundsView({"bootstrap_servers": "127.0.0.1:9"}, "app-funds-changelog")  # never started here
    view.update(states)
    return view


def serve(
    scenario: Callable[[Client], Awaitable[T]],
    view: FundsView | None = None,
    health: FixedHealth | None = None,
    lag: dict[str, int] | None = None,
) -> T:
    view = view or unstarted_view()
    metrics = Metrics(view.states, lambda: lag or {})

    async def main() -> T:
        async with TestClient(TestServer(create_app(view, health or FixedHealth(), metrics))) as client:
            return await scenario(client)

    return asyncio.run(main())


async def get(client: Client, path: str) -> tuple[int, str, bytes]:
    async with client.get(path) as response:
        return response.status, response.headers["Content-Type"], await response.read()


def test_funds_lists_every_fund_of_the_view() -> None:
    funds = [
        state("USDT", "199.50000000", 3),
        state("BTC", "0.0000000000", 1),
        state("USDT-MEME", "5.00000000"),
    ]
    view = unstarted_view(*funds)
    status, content_type, body = serve(lambda client: get(client, "/funds"), view)
    assert status == 200
    assert content_type == "application/json"
    assert body == codec.encode_states(funds)
    assert list(codec.loads(body)) == ["BTC", "USDT", "USDT-MEME"]


def test_funds_of_an_empty_view_is_an_empty_object() -> None:
    status, _, body = serve(lambda client: get(client, "/funds"))
    assert (status, codec.loads(body)) == (200, {})


def test_one_fund() -> None:
    usdt = state("USDT", "199.50000000", 3)
    view = unstarted_view(usdt, state("USDT-MEME", "5.00000000"))

    async def scenario(client: Client) -> list[tuple[int, str, bytes]]:
        return [await get(client, "/funds/USDT"), await get(client, "/funds/USDT-MEME")]

    (status, content_type, body), (pool_status, _, pool_body) = serve(scenario, view)
    assert (status, content_type) == (200, "application/json")
    assert codec.loads(body) == codec.state_document(usdt)
    assert pool_status == 200 and codec.loads(pool_body)["fund"] == "USDT-MEME"


def test_an_unknown_fund_is_a_json_404() -> None:
    status, content_type, body = serve(
        lambda client: get(client, "/funds/NOPE"), unstarted_view(state("USDT", "1"))
    )
    assert (status, content_type) == (404, "application/json")
    document = codec.loads(body)
    assert document["error"] == "unknown_fund"
    assert "NOPE" in document["detail"]


def test_the_view_keeps_the_highest_sequence_of_each_fund() -> None:
    view = unstarted_view(state("USDT", "10.00000000", 5))
    view.update([state("USDT", "1.00000000", 4)])  # older: ignored
    assert view.get("USDT") == state("USDT", "10.00000000", 5)
    view.update([state("USDT", "12.00000000", 6), state("BTC", "1.0000000000", 1)])
    status, _, body = serve(lambda client: get(client, "/funds/USDT"), view)
    assert status == 200 and codec.loads(body)["balance"] == "12.00000000"
    assert [fund.fund for fund in view.states()] == ["BTC", "USDT"]
    assert view.get("ETH") is None
    assert not view.caught_up
    counted = state("USDT", "12.00000000", 6)._replace(
        duplicates=1
    )  # an identical re-sent fill: same sequence
    view.update([counted])
    assert view.get("USDT") == counted
    view.update([state("USDT", "12.00000000", 6)])
    assert view.get("USDT") == counted


@pytest.mark.parametrize(
    ("health", "expected_status", "expected_body"),
    [
        (FixedHealth(), 200, {"status": "ok"}),
        (
            FixedHealth("starting", "waiting for partition assignment"),
            503,
            {"status": "starting", "reason": "waiting for partition assignment"},
        ),
        (
            FixedHealth("recovering", "restoring funds-changelog:0"),
            503,
            {"status": "recovering", "reason": "restoring funds-changelog:0"},
        ),
    ],
)
def test_health(health: FixedHealth, expected_status: int, expected_body: dict[str, str]) -> None:
    status, content_type, body = serve(lambda client: get(client, "/health"), health=health)
    assert (status, content_type, codec.loads(body)) == (expected_status, "application/json", expected_body)


def test_health_is_asked_at_each_request() -> None:
    health = FixedHealth("recovering", "restoring")

    async def scenario(client: Client) -> list[int]:
        before = (await get(client, "/health"))[0]
        health.status, health.reason = "ok", None
        return [before, (await get(client, "/health"))[0]]

    assert serve(scenario, health=health) == [503, 200]


def test_metrics_is_prometheus_text_with_the_view_funds() -> None:
    view = unstarted_view(state("USDT", "199.50000000", 3))
    status, content_type, body = serve(
        lambda client: get(client, "/metrics"), view, lag={"liquidation-fills:0": 2}
    )
    assert status == 200
    assert content_type == CONTENT_TYPE
    families = {family.name: family for family in text_string_to_metric_families(body.decode())}
    assert [(s.labels, s.value) for s in families["insurance_fund_balance"].samples] == [
        ({"fund": "USDT"}, 199.5)
    ]
    assert [(s.labels, s.value) for s in families["insurance_fund_consumer_lag"].samples] == [
        ({"partition": "liquidation-fills:0"}, 2)
    ]
    assert "insurance_fund_events" in families


def test_an_unknown_path_is_404() -> None:
    assert serve(lambda client: get(client, "/nothing"))[0] == 404


def test_start_web_serves_until_cleanup_without_access_log(caplog: pytest.LogCaptureFixture) -> None:
    view = unstarted_view(state("BTC", "1.0000000000"))
    metrics = Metrics(view.states, dict)

    async def main() -> tuple[int, bytes]:
        runner = await start_web("127.0.0.1", 0, view, FixedHealth(), metrics)
        try:
            [(host, port)] = runner.addresses
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://{host}:{port}/funds/BTC") as response,
            ):
                return response.status, await response.read()
        finally:
            await runner.cleanup()

    with caplog.at_level(logging.DEBUG, logger="aiohttp"):
        status, body = asyncio.run(main())
    assert status == 200 and codec.loads(body)["fund"] == "BTC"
    assert not [record for record in caplog.records if record.name == "aiohttp.access"]


def test_start_web_on_a_port_in_use_raises_os_error() -> None:
    view = unstarted_view()
    metrics = Metrics(view.states, dict)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=str(port)):
            asyncio.run(start_web("127.0.0.1", port, view, FixedHealth(), metrics))
