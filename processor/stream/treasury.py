"""The operator command (``python -m processor fund ...``): send a top-up, withdrawal or transfer to
the input topic and wait, read_committed, for what the worker made of it: its delta, or its dead
letter (a refusal, a conflict, invalid input). SPEC section 8."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from processor import codec
from processor.codec import FillDecoder, Rejection
from processor.config import InputError, Settings
from processor.domain.events import FundOperation
from processor.stream.connect import wait_for_broker
from processor.stream.kafka import client_options, partition_counts
from processor.stream.produce import WRITE_REFUSED, write_refused

log = logging.getLogger(__name__)

_POLL_MS = 200


@dataclass(frozen=True)
class Request:
    """What the operator asked for: one operation, or a transfer (``to`` set)."""

    kind: str  # "top_up", "withdrawal" or "transfer"
    fund: str
    amount: str
    reason: str
    requested_by: str
    to: str | None = None
    operation_id: str | None = None
    transfer_id: str | None = None


@dataclass(frozen=True)
class Result:
    """What became of one operation: its delta document, or the dead letter that refused it."""

    operation: FundOperation
    delta: dict[str, Any] | None = None
    dead_letter: dict[str, Any] | None = None

    @property
    def applied(self) -> bool:
        return self.delta is not None

    def describe(self) -> str:
        operation = self.operation
        if self.delta is not None:
            delta = self.delta
            verb = "added to" if operation.type == "top_up" else "taken from"
            return (
                f"{operation.type} {operation.operation_id}: {delta['amount'].lstrip('-')} {verb} "
                f"{delta['fund']}, balance {delta['balance_before']} -> {delta['balance_after']} "
                f"(sequence {delta['sequence']})"
            )
        letter = self.dead_letter or {}
        return f"{operation.type} {operation.operation_id} {letter.get('error')}: {letter.get('detail')}"


class OutcomeTimeoutError(Exception):
    """No delta or dead letter for an operation within the time allowed."""


def build_operations(request: Request, decoder: FillDecoder, now_ms: int) -> list[FundOperation]:
    """The operations of a request, checked as the worker will check them (``InputError`` if not)."""
    if request.kind != "transfer":
        return [
            _operation(
                decoder,
                request,
                request.kind,
                request.fund,
                request.operation_id,
                request.transfer_id,
                now_ms,
            )
        ]
    if request.to is None:
        raise InputError("fund transfer: --to is required (the fund that receives the amount)")
    if request.to == request.fund:
        raise InputError(f"fund transfer: --to names the same fund as --fund ({request.fund})")
    transfer_id = request.transfer_id or f"tr-{uuid.uuid4().hex[:20]}"
    return [
        _operation(
            decoder, request, "withdrawal", request.fund, f"{transfer_id}-withdrawal", transfer_id, now_ms
        ),
        _operation(decoder, request, "top_up", request.to, f"{transfer_id}-top-up", transfer_id, now_ms),
    ]


def _operation(
    decoder: FillDecoder,
    request: Request,
    kind: str,
    fund: str,
    operation_id: str | None,
    transfer_id: str | None,
    now_ms: int,
) -> FundOperation:
    document: dict[str, Any] = {
        "type": kind,
        "operation_id": operation_id or f"op-{uuid.uuid4().hex}",
        "fund": fund,
        "amount": request.amount,
        "requested_by": request.requested_by,
        "reason": request.reason,
        "transfer_id": transfer_id,
        "timestamp": now_ms,
    }
    event = decoder.from_document(document)
    if isinstance(event, Rejection):
        raise InputError(f"fund {request.kind}: {event.detail}")
    assert isinstance(event, FundOperation)
    return event


def check_funds(operations: Sequence[FundOperation], settings: Settings) -> str:
    """The currency the operations' funds share (their key); ``InputError`` for an unknown pool or a
    transfer between currencies."""
    pools = settings.rules.pools
    currencies = set()
    for operation in operations:
        currency = pools.currency_of(operation.fund)
        if currency is None:
            raise InputError(
                f"--fund {operation.fund}: no such pool in the pools file (FUND_POOLS_FILE / --pools-file)"
            )
        currencies.add(currency)
    if len(currencies) > 1:
        raise InputError(
            f"fund transfer: the funds hold different currencies ({', '.join(sorted(currencies))})"
        )
    return currencies.pop()


async def run_request(settings: Settings, request: Request, timeout_seconds: float) -> list[Result]:
    """Send the request's operations one after the other, each once the one before is committed
    (a transfer's top-up only after its withdrawal's delta); stop at the first not applied."""
    decoder = FillDecoder.from_schema_dir()
    operations = build_operations(request, decoder, time.time_ns() // 1_000_000)
    currency = check_funds(operations, settings)
    await wait_for_broker(settings, level=logging.INFO)
    counts = await partition_counts(
        settings, (settings.input_topic, settings.deltas_topic, settings.dlq_topic)
    )
    missing = [topic for topic, count in counts.items() if not count]
    if missing:
        raise InputError(
            f"topic {missing[0]!r} does not exist on {settings.bootstrap_servers}: start a worker first "
            f"(it creates its topics), or check INPUT_TOPIC / DELTAS_TOPIC / DLQ_TOPIC"
        )
    results = []
    async with _Channel(settings, counts) as channel:
        for operation in operations:
            result = await channel.apply(operation, currency, timeout_seconds)
            results.append(result)
            if not result.applied:
                break
    return results


class _Channel:
    """A producer to the input topic and a read_committed consumer of the deltas and dead letters."""

    def __init__(self, settings: Settings, counts: dict[str, int]) -> None:
        self.settings = settings
        options = client_options(settings)
        self.producer = AIOKafkaProducer(**options, enable_idempotence=True, acks="all")
        self.consumer = AIOKafkaConsumer(
            **options, isolation_level="read_committed", enable_auto_commit=False, group_id=None
        )
        self.partitions = [
            TopicPartition(topic, partition)
            for topic in (settings.deltas_topic, settings.dlq_topic)
            for partition in range(counts[topic])
        ]

    async def __aenter__(self) -> _Channel:
        await self.producer.start()
        await self.consumer.start()
        self.consumer.assign(self.partitions)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        await self.producer.stop()

    async def apply(self, operation: FundOperation, currency: str, timeout_seconds: float) -> Result:
        settings = self.settings
        consumer = self.consumer
        await consumer.seek_to_end(*self.partitions)  # only what follows our send can answer it
        for tp in self.partitions:
            await consumer.position(tp)
        try:
            sent = await self.producer.send_and_wait(
                settings.input_topic, codec.encode_operation(operation), key=currency.encode()
            )
        except WRITE_REFUSED:
            raise write_refused(
                settings, settings.input_topic, "operators need WRITE on the input topic"
            ) from None
        log.info("sent %s to %s:%d@%d", operation.operation_id, sent.topic, sent.partition, sent.offset)
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=_POLL_MS)
            for tp, records in batch.items():
                for record in records:
                    answer = _answer(tp.topic, record.value, operation, sent.partition, sent.offset, settings)
                    if answer is not None:
                        return answer
        raise OutcomeTimeoutError(
            f"no delta or dead letter for {operation.type} {operation.operation_id} within "
            f"{timeout_seconds:g}s; it was sent to {sent.topic} partition {sent.partition} at offset "
            f"{sent.offset}. Is a worker running? An operation_id applied before gets no new delta "
            f"(a duplicate): check the deltas topic or run audit"
        )


def _answer(
    topic: str, value: bytes | None, operation: FundOperation, partition: int, offset: int, settings: Settings
) -> Result | None:
    document = codec.loads_object(value)
    if document is None:
        return None
    if topic == settings.deltas_topic:
        if document.get("delta_id") == operation.operation_id and document.get("fund") == operation.fund:
            return Result(operation, delta=document)
    elif (
        document.get("source_topic") == settings.input_topic
        and document.get("source_partition") == partition
        and document.get("source_offset") == offset
    ):
        return Result(operation, dead_letter=document)
    return None
