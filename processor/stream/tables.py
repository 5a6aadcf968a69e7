"""Table writes that travel in the batch's transaction.

``table[key] = value`` would send its changelog record through faust's own producer, outside any
transaction. A ``ChangelogTable`` instead queues the record in the outbox of the partition it is
bound to, and changes the table's local store only after that transaction has committed
(``apply``): a batch that never commits leaves neither the changelog nor the store changed.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from faust.types import TableT

from processor.stream.outbox import Outbox


class ChangelogTable(MutableMapping[bytes, bytes]):
    """A faust table whose writes go to ``changelog`` partition ``bind(p)`` in ``p``'s transaction.

    Reads see the local store, which holds committed writes only.
    """

    def __init__(self, table: TableT, changelog: str, outbox: Outbox) -> None:
        self.table = table
        self.changelog = changelog
        self.outbox = outbox
        self.partition = -1
        self.staged: dict[int, list[tuple[bytes, bytes | None]]] = {}

    def bind(self, partition: int) -> None:
        self.partition = partition

    def _stage(self, key: bytes, value: bytes | None) -> None:
        partition = self.partition
        if partition < 0:
            raise RuntimeError("a ChangelogTable write needs bind(partition) first")
        self.outbox.add(partition, self.changelog, key, value, partition)
        self.staged.setdefault(partition, []).append((key, value))

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._stage(key, value)

    def __delitem__(self, key: bytes) -> None:
        self._stage(key, None)

    def __getitem__(self, key: bytes) -> bytes:
        data: Any = self.table.data
        return data[key]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.table.data)

    def __len__(self) -> int:
        return len(self.table.data)

    def apply(self, partition: int) -> None:
        """Write what ``partition``'s committed transaction carried into the local store (in the
        context of an event read at ``partition``: faust's RocksDB store picks its database by it)."""
        data: Any = self.table.data
        for key, value in self.staged.pop(partition, ()):
            if value is not None:
                data[key] = value
            elif key in data:
                del data[key]
