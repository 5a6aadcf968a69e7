"""Changelog-backed tables: restore a partition's records from its compacted changelog topics.

A table is a compacted topic (``<APP_ID>-<table>-changelog``) whose partition ``p`` holds the records of
the funds living on partition ``p``. Writes travel in the batch's transaction (``transactions.py``);
restoring reads the committed records (``read_committed``) from the start to the last stable offset,
newest record per key winning and tombstones deleting, the way compaction itself reads them.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from rocksdict import Options, Rdict

log = logging.getLogger(__name__)

Records = dict[bytes, bytes]
RESTORE_TIMEOUT_SECONDS = 120.0


class ChangelogReader:
    """Reads changelog partitions to their end, for claiming partitions (no consumer group)."""

    def __init__(self, client_options: Mapping[str, Any]) -> None:
        self.client_options = dict(client_options)
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                **self.client_options,
                enable_auto_commit=False,
                isolation_level="read_committed",
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=8 << 20,
                fetch_max_bytes=64 << 20,
            )
            await consumer.start()
            self._consumer = consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def read(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, Records]:
        """Every live record of ``partitions`` as of now: the newest value per key, deletions applied."""
        await self.start()
        consumer = self._consumer
        assert consumer is not None
        wanted = sorted(set(partitions))
        tables: dict[TopicPartition, Records] = {tp: {} for tp in wanted}
        if not wanted:
            return tables
        consumer.assign(wanted)
        try:
            ends = await consumer.end_offsets(wanted)  # read_committed: the last stable offsets
            await consumer.seek_to_beginning(*wanted)
            remaining = {tp for tp in wanted if ends[tp] > 0}
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
            deadline = asyncio.get_running_loop().time() + RESTORE_TIMEOUT_SECONDS
            while remaining:
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"restoring {sorted(map(str, remaining))} took too long")
                batch = await consumer.getmany(*remaining, timeout_ms=200, max_records=50_000)
                for tp, records in batch.items():
                    table = tables[tp]
                    end = ends[tp]
                    for record in records:
                        if record.offset >= end:
                            break
                        key = record.key
                        if key is None:
                            continue
                        if record.value is None:
                            table.pop(key, None)
                        else:
                            table[key] = record.value
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
        finally:
            consumer.assign([])
        return tables


class RocksDBFills(MutableMapping[str, tuple[object, ...]]):
    """One fund's duplicate window fills in a RocksDB database shared by the worker's funds.

    Keys are ``<fund> NUL <fill_id>``; values are pickled plain tuples (strings, ints, Decimals: the
    database is the worker's own, rebuilt from the changelog at every claim, never read by others).
    """

    def __init__(self, db: Rdict, fund: str) -> None:
        self.db = db
        self.prefix = fund.encode() + b"\0"
        self.count = 0

    def __getitem__(self, fill_id: str) -> tuple[object, ...]:
        raw = self.db.get(self.prefix + fill_id.encode())
        if raw is None:
            raise KeyError(fill_id)
        value: tuple[object, ...] = pickle.loads(raw)
        return value

    def get(self, fill_id: str, default: Any = None) -> Any:
        raw = self.db.get(self.prefix + fill_id.encode())
        return default if raw is None else pickle.loads(raw)

    def __setitem__(self, fill_id: str, fill: tuple[object, ...]) -> None:
        key = self.prefix + fill_id.encode()
        if self.db.get(key) is None:
            self.count += 1
        self.db.put(key, pickle.dumps(fill, pickle.HIGHEST_PROTOCOL))

    def __delitem__(self, fill_id: str) -> None:
        key = self.prefix + fill_id.encode()
        if self.db.get(key) is None:
            raise KeyError(fill_id)
        self.db.delete(key)
        self.count -= 1

    def __iter__(self) -> Iterator[str]:
        prefix = self.prefix
        for key in self.db.keys(from_key=prefix):
            if not isinstance(key, bytes) or not key.startswith(prefix):
                break
            yield key[len(prefix) :].decode()

    def __len__(self) -> int:
        return self.count

    def clear(self) -> None:
        self.db.delete_range(self.prefix, self.prefix[:-1] + b"\1")
        self.count = 0


def fill_store(kind: str, directory: Path) -> tuple[Callable[[str], RocksDBFills] | None, Callable[[], None]]:
    """The ledger's fill store for ``STORE`` (``memory``: plain dicts, ``None`` here) and how to close it.

    ``rocksdb`` keeps the duplicate windows in a database under ``directory``, wiped at start: it is
    a cache of the changelog, which every claim reads anyway, so it never has to be trusted.
    """
    if kind != "rocksdb":
        return None, lambda: None
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    db = Rdict(str(directory), options)
    return (lambda fund: RocksDBFills(db, fund)), db.close
