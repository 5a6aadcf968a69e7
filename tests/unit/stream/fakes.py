"""Stand-ins for the Kafka pieces the outbox and tables use: a record batch that remembers what was
appended (and fills up after ``capacity`` records), and the two attributes of ``Transactions`` the
outbox reads."""

from __future__ import annotations

from typing import Any


class FakeBatch:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    def append(self, *, key: bytes | None, value: bytes | None, timestamp: None, headers: Any) -> Any:
        if len(self.records) >= self.capacity:
            return None
        self.records.append((key, value, headers))
        return object()


class FakeTransactions:
    def __init__(self, partitions: dict[str, int], capacity: int = 1000) -> None:
        self.partitions = partitions
        self.capacity = capacity

    def create_batch(self, owner: int) -> FakeBatch:
        return FakeBatch(self.capacity)


class FakeFaustTable:
    """The part of a faust ``Table`` a ``ChangelogTable`` touches: its local store."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
