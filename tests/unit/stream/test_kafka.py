"""The durability settings of the topics the worker creates, and the error when a cluster is too small
for ``TOPIC_REPLICATION_FACTOR``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import InvalidReplicationFactorError, TopicAlreadyExistsError

from processor.config import ConfigError, Settings
from processor.stream import kafka
from processor.stream.kafka import durability_configs


@pytest.mark.parametrize(("replication_factor", "in_sync"), [(1, "1"), (2, "2"), (3, "2"), (5, "2")])
def test_a_write_needs_two_in_sync_replicas_when_there_are_two(replication_factor: int, in_sync: str) -> None:
    assert durability_configs(replication_factor) == {
        "min.insync.replicas": in_sync,
        "unclean.leader.election.enable": "false",
    }


class OneBroker:
    """An admin client of a one-broker cluster, as far as the replication check asks it."""

    async def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"node_id": 1, "host": "127.0.0.1", "port": 9092}]}


def check(errors: list[tuple[Any, ...]], replication_factor: int = 3) -> None:
    settings = Settings(bootstrap_servers="b1:9092", replication_factor=replication_factor)
    asyncio.run(kafka._check_replication(OneBroker(), settings, errors))  # type: ignore[arg-type]


def test_too_few_brokers_for_the_replication_factor_is_an_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as raised:
        check([("deltas", InvalidReplicationFactorError.errno, "Unable to replicate")])
    assert str(raised.value) == (
        "TOPIC_REPLICATION_FACTOR: 3 replicas asked, but the cluster at b1:9092 has 1 broker(s) up;"
        " lower it or start more brokers"
    )


def test_topics_created_or_already_there_pass() -> None:
    check([("deltas", 0, None), ("dlq", TopicAlreadyExistsError.errno, "exists")])
