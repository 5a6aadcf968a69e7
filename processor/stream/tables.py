"""Changelog-backed tables: restore a partition's records from its compacted changelog topics.

A table is a compacted topic (``<APP_ID>-<table>-changelog``) whose partition ``p`` holds the records of
the funds living on partition ``p``. Writes travel in the batch's transaction (``transactions.py``);
restoring reads the committed records (``read_committed``) from the start to the last stable offset,
newest record per key winning and tombstones deleting, the way compaction itself reads them.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition

if TYPE_CHECKING:
    from rocksdict import Rdict

log = logging.getLogger(__name__)

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
                # small fetches: what a restore holds beside the windows it builds is its peak memory
                max_partition_fetch_bytes=2 << 20,
                fetch_max_bytes=4 << 20,
            )
            await consumer.start()
            self._consumer = consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def stream(
        self, partitions: Iterable[TopicPartition]
    ) -> AsyncIterator[tuple[TopicPartition, list[Any]]]:
        """The committed records of ``partitions`` from the start to the last stable offset as of now,
        in batches, each partition in offset order."""
        await self.start()
        consumer = self._consumer
        assert consumer is not None
        wanted = sorted(set(partitions))
        if not wanted:
            return
        consumer.assign(wanted)
        try:
            ends = await consumer.end_offsets(wanted)  # read_committed: the last stable offsets
            await consumer.seek_to_beginning(*wanted)
            remaining = set(wanted)
            deadline = asyncio.get_running_loop().time() + RESTORE_TIMEOUT_SECONDS
            while True:
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
                if not remaining:
                    return
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"restoring {sorted(map(str, remaining))} took too long")
                batch = await consumer.getmany(*remaining, timeout_ms=200, max_records=20_000)
                for tp, records in batch.items():
                    end = ends[tp]
                    yield tp, [record for record in records if record.offset < end]
        finally:
            consumer.assign([])


class RocksDBFills(MutableMapping[bytes, bytes]):
    """One fund's duplicate window fills in a RocksDB database shared by the worker's funds.

    Keys are ``<fund> NUL <fill_id>``, values the packed fills; the database is the worker's own,
    rebuilt from the changelog at every claim, never read by others.
    """

    def __init__(self, db: Rdict, fund: str) -> None:
        self.db = db
        self.prefix = fund.encode() + b"\0"
        self.count = 0

    def __getitem__(self, fill_id: bytes) -> bytes:
        raw = self.db.get(self.prefix + fill_id)
        if raw is None:
            raise KeyError(fill_id)
        return bytes(raw)

    def get(self, fill_id: bytes, default: Any = None) -> Any:
        raw = self.db.get(self.prefix + fill_id)
        return default if raw is None else raw

    def __setitem__(self, fill_id: bytes, packed: bytes) -> None:
        key = self.prefix + fill_id
        if self.db.get(key) is None:
            self.count += 1
        self.db.put(key, packed)

    def __delitem__(self, fill_id: bytes) -> None:
        key = self.prefix + fill_id
        if self.db.get(key) is None:
            raise KeyError(fill_id)
        self.db.delete(key)
        self.count -= 1

    def __iter__(self) -> Iterator[bytes]:
        prefix = self.prefix
        for key in self.db.keys(from_key=prefix):
            if not isinstance(key, bytes) or not key.startswith(prefix):
                break
            yield key[len(prefix) :]

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
    from rocksdict import Options, Rdict  # ~8 MB of native code: loaded only when asked for

    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    db = Rdict(str(directory), options)
    return (lambda fund: RocksDBFills(db, fund)), db.close
