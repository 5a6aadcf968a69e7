"""The durability settings of the topics the worker creates, the error when a cluster is too small for
``TOPIC_REPLICATION_FACTOR``, and topic creation asking again for what the controller could not create
yet."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.admin import NewTopic
from aiokafka.errors import (
    InvalidConfigurationError,
    InvalidReplicationFactorError,
    NotControllerError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
)

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


class Controller:
    """An admin client whose controller answers each ``create_topics`` with the next of ``answers``
    (topic name -> error code); it records what it was asked."""

    def __init__(self, *answers: dict[str, int], brokers: int = 3) -> None:
        self.answers = list(answers)
        self.asked: list[list[str]] = []
        self.brokers = brokers

    async def create_topics(self, topics: list[NewTopic]) -> Any:
        self.asked.append([topic.name for topic in topics])
        answer = self.answers.pop(0)
        return SimpleNamespace(
            topic_errors=[(topic.name, answer.get(topic.name, 0), None) for topic in topics]
        )

    async def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"node_id": node} for node in range(self.brokers)]}


def create(admin: Controller, *names: str, seconds: float = 30.0) -> None:
    settings = Settings(bootstrap_servers="b1:9092", replication_factor=3)
    topics = {name: NewTopic(name, 4, 3) for name in names}
    deadline = time.monotonic() + seconds
    asyncio.run(kafka._create(admin, settings, topics, deadline))  # type: ignore[arg-type]


def test_topics_the_controller_could_not_create_yet_are_asked_for_again() -> None:
    admin = Controller(
        {"deltas": RequestTimedOutError.errno, "dlq": NotControllerError.errno},
        {"dlq": TopicAlreadyExistsError.errno},  # the timed-out request went through after all
    )
    create(admin, "deltas", "dlq", "adl")
    assert admin.asked == [["adl", "deltas", "dlq"], ["deltas", "dlq"]]


def test_a_briefly_fenced_broker_is_waited_for_when_the_cluster_has_enough() -> None:
    admin = Controller({"deltas": InvalidReplicationFactorError.errno}, {})
    create(admin, "deltas")
    assert admin.asked == [["deltas"], ["deltas"]]


def test_a_refusal_asking_again_cannot_mend_names_the_topic() -> None:
    admin = Controller({"dlq": InvalidConfigurationError.errno})
    with pytest.raises(kafka.BrokerError) as raised:
        create(admin, "deltas", "dlq")
    assert str(raised.value) == (
        "the broker at b1:9092 (KAFKA_BOOTSTRAP_SERVERS) refused to create the topic dlq:"
        " InvalidConfigurationError"
    )
    assert admin.asked == [["deltas", "dlq"]]


def test_a_controller_that_keeps_timing_out_ends_the_command_at_the_deadline() -> None:
    admin = Controller({"deltas": RequestTimedOutError.errno})
    with pytest.raises(kafka.BrokerError, match="refused to create the topic deltas: RequestTimedOutError"):
        create(admin, "deltas", seconds=-1.0)  # the deadline has passed: no second request
    assert admin.asked == [["deltas"]]


def test_a_client_not_allowed_to_create_topics_is_told_which_acl_to_grant() -> None:
    admin = Controller({"dlq": TopicAuthorizationFailedError.errno})
    with pytest.raises(kafka.BrokerError) as raised:
        create(admin, "dlq")
    assert str(raised.value) == (
        "the broker at b1:9092 does not allow this client to create the topic dlq (CREATE ACL on the"
        " topic or the cluster): grant it, or create the topics beforehand"
    )


class SlowMetadata:
    """An admin client of a cluster where the input topic exists but is described without partitions
    for its first ``blank`` descriptions (a cluster just started); every other topic is created here."""

    def __init__(self, settings: Settings, blank: int, partitions: int = 4) -> None:
        self.input = settings.input_topic
        self.blank = blank
        self.partitions = partitions
        self.created: dict[str, int] = {}

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_topics(self) -> list[str]:
        return [self.input]

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        described = []
        for topic in topics:
            count = self.partitions if topic != self.input else 0 if self.blank > 0 else self.partitions
            if topic == self.input:
                self.blank -= 1
            described.append({"topic": topic, "partitions": [{"partition": n} for n in range(count)]})
        return described

    async def create_topics(self, topics: list[NewTopic]) -> Any:
        self.created.update({topic.name: topic.num_partitions for topic in topics})
        return SimpleNamespace(topic_errors=[(topic.name, 0, None) for topic in topics])

    async def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"node_id": 1}]}


def prepare(monkeypatch: pytest.MonkeyPatch, admin: SlowMetadata, settings: Settings) -> dict[str, int]:
    monkeypatch.setattr(kafka, "AIOKafkaAdminClient", lambda **_: admin)
    return asyncio.run(kafka.prepare_topics(settings))


def test_an_input_topic_described_without_partitions_at_first_is_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(bootstrap_servers="b1:9092", replication_factor=1)
    admin = SlowMetadata(settings, blank=3, partitions=6)
    counts = prepare(monkeypatch, admin, settings)
    assert set(admin.created.values()) == {6}  # never 0: the outputs get the input's count
    assert settings.deltas_topic in admin.created
    assert counts[settings.input_topic] == 6


def test_an_input_topic_never_described_with_partitions_ends_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(bootstrap_servers="b1:9092", replication_factor=1)
    admin = SlowMetadata(settings, blank=10**9)
    monkeypatch.setattr(kafka, "TOPIC_WAIT_SECONDS", 0.3)
    with pytest.raises(kafka.BrokerError) as raised:
        prepare(monkeypatch, admin, settings)
    assert f"does not describe the topic(s) {settings.input_topic} with partitions" in str(raised.value)
    assert admin.created == {}  # nothing created with 0 partitions
