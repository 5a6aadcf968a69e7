"""The baseline of ``make bench``: a bare aiokafka consume -> produce pipe, run as its own process.

A consumer group reads the input (auto-committed offsets) and an idempotent producer writes every record
unchanged to the same partition of the sink: what any Kafka processor in Python pays before doing any
work. A process of its own, like the worker, so both share the machine with the bench the same way.
"""

from __future__ import annotations

import argparse
import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def pipe(bootstrap: str, source: str, sink: str, group: str, count: int) -> None:
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        max_partition_fetch_bytes=8 << 20,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5, max_batch_size=1 << 20
    )
    await consumer.start()
    await producer.start()
    try:
        moved = 0
        pending = []
        while moved < count:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for records in batch.values():
                for record in records:
                    pending.append(
                        await producer.send(
                            sink, value=record.value, key=record.key, partition=record.partition
                        )
                    )
                moved += len(records)
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(pipe(args.bootstrap, args.source, args.sink, args.group, args.count))


if __name__ == "__main__":
    main()
