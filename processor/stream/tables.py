"""Table writes whose changelog sends can be awaited.

``table[key] = value`` queues its changelog record and returns nothing, and faust's commit does not
wait for that queue. Writes through ``AwaitedTable`` keep the send futures, so the agent can wait
until the batch's state is durable before its input offsets may be committed.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from faust.types import TableT


class AwaitedTable(MutableMapping[bytes, bytes]):
    """A faust table, written with the changelog futures kept. Writes need an event context."""

    def __init__(self, table: TableT) -> None:
        self.table = table
        self.pending: list[Any] = []

    def __getitem__(self, key: bytes) -> bytes:
        return self.table[key]

    def __setitem__(self, key: bytes, value: bytes) -> None:
        table: Any = self.table
        self.pending.append(table.send_changelog(table.partition_for_key(key), key, value))
        table.data[key] = value

    def __delitem__(self, key: bytes) -> None:
        table: Any = self.table
        if key not in table.data:
            raise KeyError(key)
        partition = table.partition_for_key(key)
        self.pending.append(table.send_changelog(partition, key, None, value_serializer="raw"))
        del table.data[key]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)

    def drain(self) -> list[Any]:
        """The futures of the writes since the last drain."""
        pending, self.pending = self.pending, []
        return pending
