"""Load a JSONL file into the input topic, keyed by margin currency (an operation by its fund's
currency); bad lines go as they are."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import ClusterAuthorizationFailedError, TopicAuthorizationFailedError

from processor import codec
from processor.config import Settings
from processor.domain.pools import FundPools
from processor.stream.connect import BrokerRefusedError, wait_for_broker
from processor.stream.kafka import client_options, principal

_NO_POOLS = FundPools()


def key_of(line: bytes, pools: FundPools = _NO_POOLS) -> bytes | None:
    """The margin currency of a fill, or the currency of an operation's fund (SPEC sections 7 and 8:
    a pool's is in the pools file); ``None`` for anything else."""
    document = codec.loads_object(line)
    if document is None:
        return None
    currency = document.get("margin_currency")
    if currency is None and isinstance(document.get("fund"), str):
        currency = pools.currency_of(document["fund"])
    return currency.encode() if isinstance(currency, str) else None


async def produce_lines(settings: Settings, topic: str, lines: Iterable[bytes]) -> int:
    await wait_for_broker(settings, level=logging.INFO)
    producer = AIOKafkaProducer(
        **client_options(settings), enable_idempotence=True, acks="all", linger_ms=10, max_batch_size=1 << 20
    )
    sent = 0
    pools = settings.rules.pools
    try:
        await producer.start()
        pending = []
        for line in lines:
            pending.append(await producer.send(topic, value=line, key=key_of(line, pools)))
            sent += 1
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    except WRITE_REFUSED:
        raise write_refused(settings, topic, "grant WRITE on it") from None
    finally:
        await producer.stop()
    return sent


#: What a producer raises when an ACL forbids it to write a topic.
WRITE_REFUSED = (TopicAuthorizationFailedError, ClusterAuthorizationFailedError)


def write_refused(settings: Settings, topic: str, advice: str) -> BrokerRefusedError:
    """The error for a topic the broker does not let us write; raised where the topic is known, not
    where broker errors are described."""
    who = principal(settings.security.sasl_username)
    return BrokerRefusedError(
        f"the broker at {settings.bootstrap_servers} does not allow {who} to write topic {topic!r} "
        f"(topic ACL): {advice}"
    )
