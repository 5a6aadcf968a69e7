"""Stand-ins for the Kafka pieces the outbox uses."""

from __future__ import annotations


class FakeTransactions:
    """The one attribute of ``Transactions`` the outbox reads: the topics' partition counts."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self.partitions = partitions
