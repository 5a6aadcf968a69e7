"""``FundsView`` against a real broker: committed changelog records only, newest state per fund."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from decimal import Decimal

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic

from processor import codec
from processor.domain.state import FundRules, FundState
from processor.stream.view import FundsView

D = Decimal
WAIT_SECONDS = 30.0

Message = tuple[str, FundState | bytes | None, int]  # (key, state / tombstone / raw value, partition)


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def state(fund: str, sequence: int, balance: str = "1.00000000") -> FundState:
    opened = FundState.opened(fund, FundRules().policy_for(fund))
    return opened._replace(
        balance=D(balance), sequence=sequence, fills=sequence, last_timestamp=1_700_000_000_000 + sequence
    )


def value(payload: FundState | bytes | None) -> bytes | None:
    if payload is None or isinstance(payload, bytes):
        return payload
    return codec.encode_fund_record(codec.FundRecord(payload, {"liquidation-fills:0": payload.sequence}))


async def create_changelog(bootstrap: str, partitions: int = 3) -> str:
    topic = unique("view-funds-changelog")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, partitions, 1, topic_configs={"cleanup.policy": "compact"})]
        )
    finally:
        await admin.close()
    return topic


async def add_partitions(bootstrap: str, topic: str, total: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_partitions({topic: NewPartitions(total_count=total)})
    finally:
        await admin.close()


class Writer:
    """One transactional and one plain producer on the changelog topic."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.transactional = AIOKafkaProducer(
            bootstrap_servers=bootstrap, transactional_id=unique("view-test")
        )
        self.plain = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)

    async def __aenter__(self) -> Writer:
        await self.transactional.start()
        await self.plain.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.transactional.stop()
        await self.plain.stop()

    async def _send(self, producer: AIOKafkaProducer, messages: list[Message]) -> None:
        for key, payload, partition in messages:
            await producer.send_and_wait(self.topic, value(payload), key=key.encode(), partition=partition)

    async def committed(self, *messages: Message) -> None:
        async with self.transactional.transaction():
            await self._send(self.transactional, list(messages))

    async def aborted(self, *messages: Message) -> None:
        await self.transactional.begin_transaction()
        await self._send(self.transactional, list(messages))
        await self.transactional.abort_transaction()

    async def plain_writes(self, *messages: Message) -> None:
        await self._send(self.plain, list(messages))


async def eventually(
    check: Callable[[], bool], what: str, on_poll: Callable[[], None] = lambda: None
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while not check():
        on_poll()
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    on_poll()


def sequences(view: FundsView) -> dict[str, int]:
    return {fund.fund: fund.sequence for fund in view.states()}


def test_the_view_shows_the_newest_committed_state_of_every_fund(kafka_bootstrap: str) -> None:
    async def main() -> None:
        topic = await create_changelog(kafka_bootstrap)
        async with Writer(kafka_bootstrap, topic) as writer:
            # --- history written before the view starts
            await writer.committed(("USDT", state("USDT", 1), 0), ("USDT", state("USDT", 2, "2.00000000"), 0))
            await writer.committed(("ETH", state("ETH", 3), 2))
            await writer.plain_writes(
                ("BTC", state("BTC", 1), 1),
                ("~", b'{"tail": 1}', 1),  # a tail record: never a fund
                ("OLD", b"", 0),  # an old, empty tail value
                ("GONE", state("GONE", 7), 1),
                # a tombstone between two records of one key, most likely in one fetched batch
                ("DOGE", state("DOGE", 5), 2),
                ("DOGE", None, 2),
                ("DOGE", state("DOGE", 1, "0.50000000"), 2),
            )
            await writer.committed(("GONE", None, 1))
            await writer.aborted(
                ("USDT", state("USDT", 99), 0), ("XRP", state("XRP", 1), 2)
            )  # last on 0 and 2

            view = FundsView({"bootstrap_servers": kafka_bootstrap}, topic, refresh_seconds=1.0)
            await view.start()
            try:
                await eventually(lambda: view.caught_up, "the view to catch up")
                assert view.states() == [
                    state("BTC", 1),
                    state("DOGE", 1, "0.50000000"),
                    state("ETH", 3),
                    state("USDT", 2, "2.00000000"),
                ]
                assert view.get("XRP") is None and view.get("GONE") is None and view.get("~") is None

                # --- live: an aborted transaction never shows, the commit after it does
                seen: set[int] = set()

                def record_usdt() -> None:
                    usdt = view.get("USDT")
                    if usdt is not None:
                        seen.add(usdt.sequence)

                await writer.aborted(("USDT", state("USDT", 50), 0))
                await writer.committed(("USDT", state("USDT", 3, "3.00000000"), 0))
                await eventually(lambda: sequences(view)["USDT"] == 3, "USDT sequence 3", record_usdt)
                assert 50 not in seen

                # --- live: a tombstone removes the fund, a plain write adds one
                await writer.committed(("BTC", None, 1))
                await writer.plain_writes(("SOL", state("SOL", 2), 1))
                await eventually(lambda: "SOL" in sequences(view), "SOL")
                assert "BTC" not in sequences(view)

                # --- update(): wins only with a higher sequence
                view.update([state("USDT", 2, "999.00000000")])
                assert view.get("USDT") == state("USDT", 3, "3.00000000")
                view.update([state("USDT", 10, "10.00000000"), state("ADA", 1)])
                assert view.get("USDT") == state("USDT", 10, "10.00000000")
                assert view.get("ADA") == state("ADA", 1)
                await writer.committed(("USDT", state("USDT", 4), 0), ("MARK", state("MARK", 1), 0))
                await eventually(lambda: "MARK" in sequences(view), "MARK")
                assert view.get("USDT") == state(
                    "USDT", 10, "10.00000000"
                )  # the changelog is behind the push
                await writer.committed(("USDT", state("USDT", 11, "11.00000000"), 0))
                await eventually(lambda: sequences(view)["USDT"] == 11, "USDT sequence 11 from the changelog")
                assert view.get("USDT") == state("USDT", 11, "11.00000000")
                assert [fund.fund for fund in view.states()] == ["ADA", "DOGE", "ETH", "MARK", "SOL", "USDT"]
                assert view.caught_up
            finally:
                await view.stop()

    asyncio.run(main())


def test_partitions_added_later_are_followed(kafka_bootstrap: str) -> None:
    async def main() -> None:
        topic = await create_changelog(kafka_bootstrap, partitions=1)
        async with Writer(kafka_bootstrap, topic) as writer:
            await writer.committed(("USDT", state("USDT", 1), 0))
        view = FundsView({"bootstrap_servers": kafka_bootstrap}, topic, refresh_seconds=1.0)
        await view.start()
        try:
            await eventually(lambda: "USDT" in sequences(view) and view.caught_up, "USDT")
            await add_partitions(kafka_bootstrap, topic, 3)
            async with Writer(kafka_bootstrap, topic) as writer:  # new producers: they see the new partitions
                await writer.committed(("BTC", state("BTC", 4), 2), ("USDT", state("USDT", 2), 0))
            await eventually(lambda: sequences(view) == {"BTC": 4, "USDT": 2}, "BTC on the new partition")
        finally:
            await view.stop()

    asyncio.run(main())


def test_the_view_waits_for_its_topic(kafka_bootstrap: str) -> None:
    async def main() -> None:
        topic = unique("view-funds-changelog")
        view = FundsView({"bootstrap_servers": kafka_bootstrap}, topic, refresh_seconds=1.0)
        await view.start()
        try:
            await asyncio.sleep(1.5)
            assert not view.caught_up and view.states() == []
            admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
            await admin.start()
            try:
                await admin.create_topics(
                    [NewTopic(topic, 2, 1, topic_configs={"cleanup.policy": "compact"})]
                )
            finally:
                await admin.close()
            async with Writer(kafka_bootstrap, topic) as writer:
                await writer.committed(("ETH", state("ETH", 2), 1))
            await eventually(lambda: view.caught_up and sequences(view) == {"ETH": 2}, "ETH")
        finally:
            await view.stop()

    asyncio.run(main())


def test_an_unreachable_broker_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        view = FundsView(
            {"bootstrap_servers": "127.0.0.1:9", "request_timeout_ms": 1000}, "no-topic", retry_seconds=0.1
        )
        await view.start()
        try:
            await eventually(
                lambda: sum("reading the funds changelog" in r.message for r in caplog.records) >= 2,
                "two logged failures",
            )
            view.update([state("USDT", 1)])  # the view still serves what the worker pushes
            assert view.states() == [state("USDT", 1)] and not view.caught_up
        finally:
            await view.stop()

    with caplog.at_level(logging.ERROR, logger="processor.stream.view"):
        asyncio.run(main())
