"""The dashboard's reads against a real broker: windows by record time, budgets, read_committed, the live ADL
records; and the endpoints on a real worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer

from processor import codec
from processor.simulate import fills
from processor.stream.dashboard import Budgets, DashboardTopics, KafkaTimeline
from processor.stream.dashboard.source import DELTAS, FOLLOW_LOOKBACK_MS, STATES, TRIGGERS
from testkit.broker import create_topics, produce, unique
from testkit.worker import RunningWorker, WorkerConfig

HOUR_MS = 3_600_000


def delta(fund: str, sequence: int, balance: str = "1.00000000", kind: str = "liquidation_surplus") -> bytes:
    return codec.dumps(
        {"fund": fund, "type": kind, "balance_after": balance, "sequence": sequence, "timestamp": sequence}
    )


def trigger(fund: str, sequence: int, reason: str) -> bytes:
    return codec.dumps(
        {"fund": fund, "reason": reason, "fund_balance": "0", "sequence": sequence, "timestamp": sequence}
    )


async def eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def sequences(records: list[Any]) -> list[int]:
    return sorted(record["sequence"] for record in records)


def test_a_window_holds_the_committed_records_written_since_its_start(kafka_bootstrap: str) -> None:
    topics = DashboardTopics(unique("deltas"), unique("adl"), unique("adl-states"))

    async def main() -> None:
        await create_topics(kafka_bootstrap, [topics.deltas, topics.adl], partitions=3)
        now = int(time.time() * 1000)
        plain = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
        transactional = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=unique("dash"))
        await plain.start()
        await transactional.start()
        try:
            for sequence in range(1, 4):  # five hours ago: outside a 2 h window
                await plain.send_and_wait(
                    topics.deltas, delta("USDT", sequence), key=b"USDT", timestamp_ms=now - 5 * HOUR_MS
                )
            async with transactional.transaction():
                for sequence in range(4, 10):
                    fund = ("USDT", "BTC", "ETH")[sequence % 3]
                    await transactional.send_and_wait(
                        topics.deltas, delta(fund, sequence), key=fund.encode(), timestamp_ms=now - HOUR_MS
                    )
                await transactional.send_and_wait(
                    topics.adl,
                    trigger("USDT", 6, "insufficient_fund"),
                    key=b"BTCUSDT",
                    timestamp_ms=now - HOUR_MS,
                )
            await transactional.begin_transaction()
            await transactional.send_and_wait(topics.deltas, delta("USDT", 99), key=b"USDT")
            await transactional.abort_transaction()
            await plain.send_and_wait(topics.adl, b"not json", key=b"X")
        finally:
            await plain.stop()
            await transactional.stop()

        timeline = KafkaTimeline({"bootstrap_servers": kafka_bootstrap}, topics)
        window = await timeline.read(now - 2 * HOUR_MS)
        assert sequences(window.records[DELTAS]) == list(
            range(4, 10)
        )  # not the old ones, not the aborted one
        assert sequences(window.records[TRIGGERS]) == [6]  # the undecodable record is left out
        assert window.records[STATES] == []
        assert (window.truncated, window.missing) == ([], [STATES])

        everything = await timeline.read(now - 6 * HOUR_MS)
        assert sequences(everything.records[DELTAS]) == list(range(1, 10))

        budgeted = KafkaTimeline({"bootstrap_servers": kafka_bootstrap}, topics, Budgets(deltas=4))
        cut = await budgeted.read(now - 6 * HOUR_MS)
        # the budget counts offsets (transaction markers take some): at most 4 records, the newest
        assert 0 < len(cut.records[DELTAS]) <= 4 and cut.truncated == [DELTAS]
        assert min(sequences(cut.records[DELTAS])) >= 4

        assert (await timeline.read(now + 1000)).records == {DELTAS: [], TRIGGERS: [], STATES: []}

    asyncio.run(main())


def test_the_live_feed_reads_adl_triggers_and_state_events_committed_after_it_started(
    kafka_bootstrap: str,
) -> None:
    topics = DashboardTopics(unique("deltas"), unique("adl"), unique("adl-states"))

    async def main() -> None:
        await create_topics(kafka_bootstrap, [topics.deltas, topics.adl, topics.adl_states], partitions=2)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=unique("dash"))
        await producer.start()
        got: list[tuple[str, Any]] = []
        timeline = KafkaTimeline({"bootstrap_servers": kafka_bootstrap}, topics)
        try:
            async with producer.transaction():
                await producer.send_and_wait(topics.adl, trigger("USDT", 1, "no_liquidity"), key=b"A")
            await asyncio.sleep(FOLLOW_LOOKBACK_MS / 1000 + 0.5)  # stamped before the feed's margin
            follower = asyncio.ensure_future(
                timeline.follow(lambda kind, document: got.append((kind, document)))
            )
            await asyncio.sleep(3)  # positioned by now: the trigger above is history, not live
            await producer.begin_transaction()
            await producer.send_and_wait(topics.adl, trigger("USDT", 50, "insufficient_fund"), key=b"A")
            await producer.abort_transaction()
            async with producer.transaction():
                await producer.send_and_wait(topics.adl, trigger("USDT", 2, "fund_drawdown"), key=b"A")
                state = {"fund": "USDT", "state": "drawdown", "sequence": 2, "timestamp": 2}
                await producer.send_and_wait(topics.adl_states, codec.dumps(state), key=b"USDT")
            await eventually(lambda: len(got) >= 2, "the trigger and the state event")
            await asyncio.sleep(0.5)
            follower.cancel()
        finally:
            await producer.stop()
        assert sorted((kind, document["sequence"]) for kind, document in got) == [(STATES, 2), (TRIGGERS, 2)]

    asyncio.run(main())


def test_every_worker_draws_every_fund_and_refuses_bad_input(
    start_worker: Callable[..., RunningWorker], worker_config: WorkerConfig
) -> None:
    worker_config.partitions = 4
    first, second = start_worker("w1"), start_worker("w2")
    feed = [(str(fill["margin_currency"]).encode(), codec.dumps(fill)) for fill in fills(400, seed=3)]
    asyncio.run(produce(worker_config.bootstrap, worker_config.input_topic, feed))
    funds = {str(fill["margin_currency"]) for fill in fills(400, seed=3)}
    deadline = time.monotonic() + 60
    while any(set(worker.funds()) != funds for worker in (first, second)):
        assert time.monotonic() < deadline, "the workers' views did not show every fund"
        time.sleep(0.2)
    assert {
        first.metric("insurance_fund_owned_partitions"),
        second.metric("insurance_fund_owned_partitions"),
    } == {2}

    for worker in (first, second):
        status, page = worker.get("/")
        assert status == 200 and b"dashboard/static/dashboard.js" in page
        history = delta_history(worker, len(feed), deadline)
        assert set(history["funds"]) == funds
        assert sum(fund["deltas"] for fund in history["funds"].values()) == len(feed)
        content_type, snapshot = asyncio.run(first_event(worker.url + "/dashboard/events"))
        assert content_type == "text/event-stream" and set(snapshot["funds"]) == funds

    assert first.get("/?since=yesterday")[0] == 400
    assert first.get("/?fund=NOPE")[0] == 404
    status, body = first.get("/dashboard/history?since=yesterday")
    assert status == 400 and codec.loads(body)["error"] == "invalid_since"
    status, body = first.get("/dashboard/history?fund=NOPE")
    assert status == 404 and codec.loads(body)["error"] == "unknown_fund"
    assert first.healthy() and second.healthy()


def delta_history(worker: RunningWorker, expected: int, deadline: float) -> Any:
    """The worker's last hour of history once it counts ``expected`` deltas (or more), or at ``deadline``:
    a fund shows in the view with its first delta, the rest of the feed may still be on its way."""
    while True:
        status, body = worker.get("/dashboard/history?since=1h")
        assert status == 200
        history = codec.loads(body)
        counted = sum(fund["deltas"] for fund in history["funds"].values())
        if counted >= expected or time.monotonic() > deadline:
            return history
        time.sleep(0.2)


async def first_event(url: str) -> tuple[str, Any]:
    """The content type of an event stream and the data of its first event."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        async for line in response.content:
            if line.startswith(b"data: "):
                return response.headers["Content-Type"], codec.loads(line[len(b"data: ") :])
    raise AssertionError("the event stream ended without an event")
