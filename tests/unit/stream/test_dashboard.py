"""The dashboard without a broker: ``?since=``, what is drawn, the HTTP answers and the live streams."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from processor import codec
from processor.domain.state import FundRules, FundState
from processor.stream.dashboard import Dashboard
from processor.stream.dashboard.routes import ASSETS, HISTORY_WAITING
from processor.stream.dashboard.source import DELTAS, STATES, TRIGGERS, Sink, Window, share
from processor.stream.dashboard.timeline import (
    MAX_LOOKBACK_MS,
    History,
    Marker,
    Point,
    SinceError,
    decimate,
    marker_documents,
    operation_markers,
    parse_since,
)
from processor.stream.metrics import Metrics
from processor.stream.view import FundsView
from processor.stream.web import create_app, start_web

D = Decimal
T = TypeVar("T")
Client = TestClient[web.Request, web.Application]
NOW_MS = 1_800_000_000_000
HOUR_MS = 3_600_000


class OkHealth:
    def health(self) -> tuple[str, str | None]:
        return "ok", None


def state(fund: str, balance: str, sequence: int, **changes: Any) -> FundState:
    opened = FundState.opened(fund, FundRules().policy_for(fund))
    return opened._replace(
        balance=D(balance), sequence=sequence, last_timestamp=1_700_000_000_000 + sequence, **changes
    )


def delta(
    fund: str, sequence: int, balance: str, kind: str = "liquidation_surplus", **extra: Any
) -> dict[str, Any]:
    return {
        "fund": fund,
        "type": kind,
        "balance_after": balance,
        "sequence": sequence,
        "timestamp": 1_700_000_000_000 + sequence,
        **extra,
    }


def trigger(fund: str, sequence: int, reason: str, balance: str = "0.00000000") -> dict[str, Any]:
    return {
        "fund": fund,
        "reason": reason,
        "fund_balance": balance,
        "sequence": sequence,
        "timestamp": 1_700_000_000_000 + sequence,
        "symbol": "BTCUSDT",
        "quantity": "3.00000000",
    }


def adl_state(fund: str, sequence: int, new: str, previous: str) -> dict[str, Any]:
    return {
        "fund": fund,
        "state": new,
        "previous_state": previous,
        "sequence": sequence,
        "timestamp": 1_700_000_000_000 + sequence,
        "drawdown": "0.31000000",
    }


def window(
    deltas: list[Any] | None = None,
    triggers: list[Any] | None = None,
    states: list[Any] | None = None,
    truncated: list[str] | None = None,
) -> Window:
    return Window({DELTAS: deltas or [], TRIGGERS: triggers or [], STATES: states or []}, truncated or [], [])


class FakeTimeline:
    """The topics as a canned window; ``follow`` hands its sink to the test."""

    def __init__(self, answer: Window | Exception | None = None) -> None:
        self.answer = answer or window()
        self.reads: list[int] = []
        self.sink: Sink | None = None
        self.gate: asyncio.Event | None = None

    async def read(self, since_ms: int) -> Window:
        self.reads.append(since_ms)
        if self.gate is not None:
            await self.gate.wait()
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def follow(self, sink: Sink) -> None:
        self.sink = sink
        await asyncio.Event().wait()


def unstarted_view(*states: FundState) -> FundsView:
    view = FundsView({"bootstrap_servers": "127.0.0.1:9"}, "app-funds-changelog")  # never started here
    view.update(states)
    return view


def dashboard(view: FundsView, timeline: FakeTimeline, **live: Any) -> Dashboard:
    return Dashboard(
        view, timeline, live={"tick_seconds": 0.02, "idle_seconds": 0.1, **live}, clock=lambda: NOW_MS / 1000
    )


def serve(scenario: Callable[[Client], Awaitable[T]], board: Dashboard) -> T:
    async def main() -> T:
        app = create_app(board.view, OkHealth(), Metrics(board.view.states, dict), board)
        async with TestClient(TestServer(app)) as client:
            return await scenario(client)

    return asyncio.run(main())


async def get(client: Client, path: str) -> tuple[int, str, bytes]:
    async with client.get(path) as response:
        return response.status, response.content_type, await response.read()


async def read_event(stream: aiohttp.StreamReader, timeout: float = 5.0) -> tuple[str, Any]:
    """The next ``event:``/``data:`` pair of a server-sent event stream (comments and ``retry:`` skipped)."""
    event = ""
    while True:
        line = (await asyncio.wait_for(stream.readline(), timeout)).decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            return event, codec.loads(line[len("data: ") :])


# --- ?since= -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, NOW_MS - 3 * HOUR_MS),
        ("", NOW_MS - 3 * HOUR_MS),
        ("90m", NOW_MS - 90 * 60_000),
        ("45s", NOW_MS - 45_000),
        ("2h", NOW_MS - 2 * HOUR_MS),
        ("30d", NOW_MS - MAX_LOOKBACK_MS),
        (str(NOW_MS - 5_000), NOW_MS - 5_000),
        ("2027-01-15T08:00:00Z", int(datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp() * 1000)),
        ("2027-01-15T08:00:00", int(datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp() * 1000)),
        ("2027-01-15T09:00:00+01:00", int(datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp() * 1000)),
    ],
)
def test_since_accepts_a_look_back_epoch_milliseconds_or_iso_8601(text: str | None, expected: int) -> None:
    assert parse_since(text, NOW_MS) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("garbage", "is not a look-back"),
        ("3 hours", "is not a look-back"),
        ("-3h", "is not a look-back"),
        ("3H", "is not a look-back"),
        ("٣h", "is not a look-back"),  # Arabic-Indic digit: not ASCII
        ("0h", "more than 0"),
        ("31d", "at most 30 days"),
        (str(NOW_MS + HOUR_MS), "in the future"),
        ("2030-01-01T00:00:00Z", "in the future"),
        ("2020-01-01T00:00:00Z", "more than 30 days back"),
        ("1" * 65, "too long"),
        ("1e12", "is not a look-back"),
    ],
)
def test_since_refuses_what_names_no_usable_start(text: str, says: str) -> None:
    with pytest.raises(SinceError, match=re.escape(says)):
        parse_since(text, NOW_MS)


# --- what is drawn -----------------------------------------------------------------------------------


def test_decimate_keeps_the_ends_and_each_runs_extremes() -> None:
    balances = [100 - (i % 50) if i != 700 else -5000 for i in range(10_000)]
    points = [Point(i, f"{balance}.00000000", i + 1) for i, balance in enumerate(balances)]
    kept = decimate(points, 200)
    assert len(kept) <= 200
    assert kept[0] == points[0] and kept[-1] == points[-1]
    assert points[700] in kept  # the trough survives
    assert [point.sequence for point in kept] == sorted({point.sequence for point in kept})
    assert decimate(points[:150], 200) == points[:150]


def test_markers_beyond_the_limit_are_merged_with_their_count() -> None:
    markers = [
        Marker("adl", "USDT", "insufficient_fund", i, "0.00000000", i, {"symbol": "X"}) for i in range(1, 11)
    ]
    markers.append(Marker("adl", "USDT", "no_liquidity", 20, "1.00000000", 20, {"symbol": "Y"}))
    documents = marker_documents(markers, limit=3)
    merged = [document for document in documents if document["reason"] == "insufficient_fund"]
    assert [document["count"] for document in merged] == [4, 4, 2]
    assert sum(document["count"] for document in merged) == 10
    assert merged[0]["first_timestamp"] == 1 and merged[0]["timestamp"] == 4 and merged[0]["sequence"] == 4
    assert all("detail" not in document for document in merged)
    [single] = [document for document in documents if document["reason"] == "no_liquidity"]
    assert single["count"] == 1 and single["detail"] == {"symbol": "Y"}


def test_history_draws_deltas_operations_triggers_of_any_reason_and_state_changes() -> None:
    history = History()
    for sequence, balance in ((2, "90.00000000"), (1, "100.00000000"), (4, "150.00000000")):
        history.add_delta(delta("USDT", sequence, balance))
    history.add_delta(
        delta(
            "USDT",
            3,
            "190.00000000",
            "top_up",
            amount="100.00000000",
            requested_by="treasury",
            reason="refill",
        )
    )
    history.add_delta(
        delta("USDT", 5, "140.00000000", "withdrawal", amount="-10.00000000", requested_by="ops")
    )
    history.add_delta(delta("BTC", 1, "0.5000000000"))
    for junk in (
        {"fund": "USDT"},
        ["not", "a", "delta"],
        None,
        "text",
        {"fund": 5, "balance_after": "1", "sequence": 1, "timestamp": 1},
        delta("USDT", 9, "NaN"),
        delta("USDT", 9, "1e5"),
        {**delta("USDT", 9, "1"), "sequence": True},
    ):
        history.add_delta(junk)
    history.add_trigger(trigger("USDT", 2, "insufficient_fund"))
    history.add_trigger(trigger("USDT", 6, "fund_drawdown"))
    history.add_trigger(trigger("USDT", 7, "a_reason_added_later"))
    history.add_state(adl_state("USDT", 6, "drawdown", "normal"))
    history.add_state({"fund": "USDT"})
    document = codec.loads(codec.dumps(history.document()))
    assert history.skipped == 9
    assert document["funds"]["USDT"]["points"] == [
        [1_700_000_000_001, "100.00000000", 1],
        [1_700_000_000_002, "90.00000000", 2],
        [1_700_000_000_003, "190.00000000", 3],
        [1_700_000_000_004, "150.00000000", 4],
        [1_700_000_000_005, "140.00000000", 5],
    ]
    assert document["funds"]["BTC"] == {"points": [[1_700_000_000_001, "0.5000000000", 1]], "deltas": 1}
    kinds = [(marker["kind"], marker.get("reason"), marker["sequence"]) for marker in document["markers"]]
    assert kinds == [
        ("adl", "insufficient_fund", 2),
        ("top_up", None, 3),
        ("withdrawal", None, 5),
        ("adl", "fund_drawdown", 6),
        ("adl", "a_reason_added_later", 7),
    ]
    top_up = document["markers"][1]
    assert top_up["detail"] == {"amount": "100.00000000", "requested_by": "treasury", "reason": "refill"}
    assert document["states"] == [
        {
            "fund": "USDT",
            "state": "drawdown",
            "previous_state": "normal",
            "timestamp": 1_700_000_000_006,
            "sequence": 6,
            "drawdown": "0.31000000",
        }
    ]
    assert document["last_sequence"] == {
        "delta": {"USDT": 5, "BTC": 1},
        "trigger": {"USDT": 7},
        "state": {"USDT": 6},
    }


def test_history_of_chosen_funds_leaves_the_others_out() -> None:
    history = History({"BTC"})
    history.add_delta(delta("USDT", 1, "1.00000000"))
    history.add_delta(delta("BTC", 1, "1.0000000000"))
    history.add_trigger(trigger("USDT", 1, "no_liquidity"))
    document = history.document()
    assert list(document["funds"]) == ["BTC"] and document["markers"] == []


def test_operations_between_two_committed_states_are_markers_with_the_summed_amount() -> None:
    before = state(
        "USDT", "100.00000000", 4, total_top_ups=D("5.00000000"), total_withdrawals=D("1.00000000")
    )
    after = before._replace(
        balance=D("150.00000000"),
        sequence=7,
        total_top_ups=D("65.00000000"),
        total_withdrawals=D("11.00000000"),
    )
    markers = operation_markers(before, after)
    assert [
        (marker.kind, marker.detail["amount"], marker.sequence, marker.balance) for marker in markers
    ] == [
        ("top_up", "60.00000000", 7, "150.00000000"),
        ("withdrawal", "-10.00000000", 7, "150.00000000"),
    ]
    assert operation_markers(before, before._replace(sequence=5, balance=D("101.00000000"))) == []


@pytest.mark.parametrize(
    ("available", "budget", "expected"),
    [
        ({"a": 10, "b": 10}, 100, {"a": 10, "b": 10}),
        ({"a": 5, "b": 1_000, "c": 1_000}, 105, {"a": 5, "b": 50, "c": 50}),
        ({"a": 0, "b": 7}, 3, {"a": 0, "b": 3}),
        ({"a": 4, "b": 4, "c": 4}, 2, {"a": 1, "b": 1, "c": 0}),
    ],
)
def test_a_history_budget_is_shared_fairly_over_partitions(
    available: dict[str, int], budget: int, expected: dict[str, int]
) -> None:
    shares = share(available, budget)
    assert sum(shares.values()) == min(budget, sum(available.values()))
    assert all(shares[key] <= available[key] for key in available)
    if budget >= 3:
        assert shares == expected


# --- the page and its assets -------------------------------------------------------------------------


def test_the_page_and_every_asset_it_names_are_served_by_the_worker() -> None:
    board = dashboard(unstarted_view(state("USDT", "1.00000000", 1)), FakeTimeline())

    async def scenario(client: Client) -> None:
        status, content_type, page = await get(client, "/")
        assert (status, content_type) == (200, "text/html")
        async with client.get("/") as response:
            policy = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy
        named = re.findall(rb'(?:src|href)="([^"]+)"', page)
        assert {name.decode() for name in named} >= {f"dashboard/static/{asset}" for asset in ASSETS}
        for name in named:
            status, content_type, body = await get(client, "/" + name.decode())
            assert status == 200, name
            assert body
        assert (await get(client, "/dashboard/static/dashboard.js"))[1] == "text/javascript"
        assert (await get(client, "/dashboard/static/nothing.js"))[0] == 404
        assert (await get(client, "/dashboard/static/..%2Fview.py"))[0] == 404

    serve(scenario, board)


def test_no_asset_names_anything_outside_the_worker() -> None:
    board = dashboard(unstarted_view(), FakeTimeline())
    texts = [board._page] + [body for body, _ in board._assets.values()]
    for text in texts:
        without_namespace = text.replace(b"http://www.w3.org/2000/svg", b"")
        assert re.search(rb"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", without_namespace, re.IGNORECASE) is None
        assert b"@import" not in without_namespace


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/?since=garbage", 400, "invalid_since"),
        ("/?since=2999-01-01", 400, "invalid_since"),
        ("/?fund=NOPE", 404, "unknown_fund"),
        ("/?fund=USDT&fund=NOPE", 404, "unknown_fund"),
        ("/?since=2h&fund=USDT", 200, None),
    ],
)
def test_the_page_refuses_bad_parameters_clearly(path: str, status: int, error: str | None) -> None:
    board = dashboard(unstarted_view(state("USDT", "1.00000000", 1)), FakeTimeline())
    got, content_type, body = serve(lambda client: get(client, path), board)
    assert got == status
    if error is not None:
        assert content_type == "text/plain" and body.decode().startswith(f"{error}: ")


@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        ("?since=garbage", 400, "invalid_since"),
        ("?since=%00%ff", 400, "invalid_since"),
        ("?since=99999999999999999999999", 400, "invalid_since"),
        ("?fund=NOPE", 404, "unknown_fund"),
        ("?" + "&".join(f"fund=F{i}" for i in range(65)), 400, "too_many_funds"),
    ],
)
def test_history_refuses_bad_parameters_as_json(query: str, status: int, error: str) -> None:
    timeline = FakeTimeline()
    board = dashboard(unstarted_view(state("USDT", "1.00000000", 1)), timeline)
    got, content_type, body = serve(lambda client: get(client, "/dashboard/history" + query), board)
    assert (got, content_type, codec.loads(body)["error"]) == (status, "application/json", error)
    assert timeline.reads == []  # refused before reading anything


def test_history_reads_the_window_and_draws_it() -> None:
    timeline = FakeTimeline(
        window(
            deltas=[delta("USDT", 1, "100.00000000"), delta("USDT", 2, "40.00000000", "bankruptcy_loss")],
            triggers=[trigger("USDT", 2, "insufficient_fund")],
            truncated=[DELTAS],
        )
    )
    board = dashboard(unstarted_view(state("USDT", "40.00000000", 2)), timeline)
    status, _, body = serve(lambda client: get(client, "/dashboard/history?since=2h&fund=USDT"), board)
    document = codec.loads(body)
    assert status == 200
    assert timeline.reads == [NOW_MS - 2 * HOUR_MS]
    assert (document["since"], document["now"], document["truncated"]) == (
        NOW_MS - 2 * HOUR_MS,
        NOW_MS,
        [DELTAS],
    )
    assert [point[2] for point in document["funds"]["USDT"]["points"]] == [1, 2]
    assert document["markers"][0]["reason"] == "insufficient_fund"
    assert document["budgets"][DELTAS] > 0


def test_history_answers_503_when_the_topics_cannot_be_read_or_too_many_reads_wait() -> None:
    failing = dashboard(unstarted_view(), FakeTimeline(ConnectionError("broker down")))
    status, _, body = serve(lambda client: get(client, "/dashboard/history"), failing)
    assert (status, codec.loads(body)["error"]) == (503, "history_unavailable")

    timeline = FakeTimeline()
    board = dashboard(unstarted_view(), timeline)

    async def scenario(client: Client) -> list[int]:
        timeline.gate = asyncio.Event()
        waiting = [asyncio.ensure_future(get(client, "/dashboard/history")) for _ in range(HISTORY_WAITING)]
        while len(timeline.reads) < 1:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        refused = await get(client, "/dashboard/history")
        timeline.gate.set()
        return [refused[0]] + [(await answer)[0] for answer in waiting]

    assert serve(scenario, board) == [503] + [200] * HISTORY_WAITING
    assert len(timeline.reads) == HISTORY_WAITING  # one at a time, each once


# --- the live event stream -----------------------------------------------------------------------------


def test_a_stream_starts_with_every_fund_then_carries_committed_changes_and_adl_records() -> None:
    view = unstarted_view(state("USDT", "100.00000000", 1), state("BTC", "1.0000000000", 1))
    timeline = FakeTimeline()
    board = dashboard(view, timeline)

    async def scenario(client: Client) -> list[tuple[str, Any]]:
        async with client.get("/dashboard/events") as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            events = [await read_event(response.content)]
            view.update([state("USDT", "80.00000000", 2), state("USDT", "70.00000000", 3)])
            events.append(await read_event(response.content))
            while timeline.sink is None:
                await asyncio.sleep(0.01)
            timeline.sink(TRIGGERS, trigger("USDT", 3, "fund_drawdown"))
            timeline.sink(TRIGGERS, trigger("USDT", 4, "fund_drawdown"))
            timeline.sink(STATES, adl_state("USDT", 3, "drawdown", "normal"))
            timeline.sink(TRIGGERS, "not a document")
            events.append(await read_event(response.content))
            return events

    (first, snapshot), (second, update), (third, records) = serve(scenario, board)
    assert first == "snapshot" and sorted(snapshot["funds"]) == ["BTC", "USDT"]
    assert snapshot["funds"]["USDT"]["balance"] == "100.00000000"
    assert second == "update"
    assert update["funds"]["USDT"]["balance"] == "70.00000000"
    assert update["funds"]["USDT"]["committed_ms"] == NOW_MS
    assert update["points"]["USDT"] == [
        [1_700_000_000_002, "80.00000000", 2],
        [1_700_000_000_003, "70.00000000", 3],
    ]
    assert third == "update"
    [marker] = records["markers"]
    assert (marker["reason"], marker["count"], marker["sequence"]) == ("fund_drawdown", 2, 4)
    assert records["states"][0]["state"] == "drawdown"


def test_a_client_that_never_reads_is_dropped_and_the_others_keep_streaming() -> None:
    view = unstarted_view(state("USDT", "100.00000000", 1))
    board = dashboard(view, FakeTimeline(), queue_bytes=1 << 20)
    many = [f"F{number:03d}" for number in range(400)]  # an update of them all is ~100 KiB

    async def scenario(client: Client) -> tuple[int, int, int]:
        port = client.server.port
        assert port is not None
        stuck = socket.create_connection(("127.0.0.1", port))
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.sendall(b"GET /dashboard/events HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
        seen = [0]

        async def read(response: aiohttp.ClientResponse) -> None:
            while True:
                name, document = await read_event(response.content)
                if name == "update" and "USDT" in document["funds"]:
                    seen[0] = document["funds"]["USDT"]["sequence"]

        try:
            async with client.get("/dashboard/events") as response:
                reader = asyncio.ensure_future(read(response))
                while board.live.streams < 2:
                    await asyncio.sleep(0.01)
                sequence = 1
                deadline = time.monotonic() + 30
                while board.live.dropped == 0 and time.monotonic() < deadline:
                    sequence += 1
                    view.update([state(fund, f"{sequence}.00000000", sequence) for fund in many])
                    await asyncio.sleep(0.01)
                view.update([state("USDT", "1.00000000", sequence + 1)])
                while seen[0] != sequence + 1 and not reader.done():
                    await asyncio.sleep(0.01)
                reader.cancel()
                return board.live.dropped, board.live.streams, seen[0] - sequence
        finally:
            stuck.close()

    assert serve(scenario, board) == (1, 1, 1)  # one dropped, one left, and that one saw the last update


def test_streams_beyond_the_limit_are_refused() -> None:
    board = dashboard(unstarted_view(), FakeTimeline(), max_streams=1)

    async def scenario(client: Client) -> tuple[int, str]:
        async with client.get("/dashboard/events") as first:
            await read_event(first.content)
            status, _, body = await get(client, "/dashboard/events")
            return status, codec.loads(body)["error"]

    assert serve(scenario, board) == (503, "too_many_streams")


def test_stopping_the_server_ends_open_streams_at_once() -> None:
    view = unstarted_view(state("BTC", "1.0000000000", 1))
    board = dashboard(view, FakeTimeline())

    async def main() -> float:
        runner = await start_web("127.0.0.1", 0, view, OkHealth(), Metrics(view.states, dict), board)
        [(host, port)] = runner.addresses
        session = aiohttp.ClientSession()
        response = await session.get(f"http://{host}:{port}/dashboard/events")
        await read_event(response.content)
        started = time.monotonic()
        await runner.cleanup()
        took = time.monotonic() - started
        response.close()
        await session.close()
        return took

    assert asyncio.run(main()) < 2.0
