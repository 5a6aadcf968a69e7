"""Stand-ins for the Kafka pieces the outbox and tables use."""

from __future__ import annotations


class FakeTransactions:
    """The one attribute of ``Transactions`` the outbox reads: the topics' partition counts."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self.partitions = partitions


class FakeFaustTable:
    """The part of a faust ``Table`` a ``ChangelogTable`` touches: its local store."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
