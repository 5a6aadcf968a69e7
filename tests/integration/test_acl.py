"""A topic the credentials may not read or write: one ``error:`` line naming the ACL, exit code 1.

Runs its own broker with ACLs on (``scripts/kafka.sh`` with ``KAFKA_ACL_USER``): the PLAINTEXT
listener is a super user (it sets up topics and grants), the ACL user has only what is granted.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testkit.broker import ROOT, JarBroker, create_topics, free_port, produce, unique
from testkit.cli import assert_one_error_line, run_cli

ACL_USER, ACL_PASSWORD = "reader", "reader-secret"


@dataclass
class AclBroker:
    broker: JarBroker
    sasl_port: int

    @property
    def admin_bootstrap(self) -> str:
        return self.broker.bootstrap

    def environment(self) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.sasl_port}",
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": ACL_USER,
            "KAFKA_SASL_PASSWORD": ACL_PASSWORD,
            "KAFKA_CONNECT_TIMEOUT_SECONDS": "10",
        }

    def grant(self, operation: str, topic: str) -> None:
        script = str(ROOT / "scripts" / "kafka.sh")
        grant = ["--add", "--allow-principal", f"User:{ACL_USER}", "--operation", operation, "--topic", topic]
        subprocess.run(
            ["bash", script, "tool", "acls", "--bootstrap-server", self.admin_bootstrap, *grant],
            env=self.broker.env,
            check=True,
            capture_output=True,
        )


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclBroker]:
    sasl_port = free_port()
    broker = JarBroker(
        tmp_path_factory.mktemp("acl") / "kafka",
        {"KAFKA_SASL_PORT": str(sasl_port), "KAFKA_ACL_USER": ACL_USER, "KAFKA_ACL_PASSWORD": ACL_PASSWORD},
    )
    broker.up()
    try:
        yield AclBroker(broker, sasl_port)
    finally:
        broker.down(purge=True)


@pytest.fixture
def topic(acl_broker: AclBroker) -> str:
    name = unique("acl-fills")
    asyncio.run(create_topics(acl_broker.admin_bootstrap, [name]))
    asyncio.run(produce(acl_broker.admin_bootstrap, name, [(b"USDT", b"{}")]))
    return name


def test_writing_a_topic_the_credentials_may_not_write(
    acl_broker: AclBroker, topic: str, tmp_path: Path
) -> None:
    fills = tmp_path / "fills.jsonl"
    fills.write_bytes(b'{"margin_currency": "USDT"}\n')
    result = run_cli("produce", "--input", str(fills), "--topic", topic, env=acl_broker.environment())
    assert_one_error_line(result, 1, "KAFKA_SASL_USERNAME", "ACL", topic)


def test_reading_a_topic_the_credentials_may_not_read(acl_broker: AclBroker, topic: str) -> None:
    result = run_cli("replay", "--topic", topic, env=acl_broker.environment())  # not even allowed to see it
    assert_one_error_line(result, 2, topic, "may not describe")
    acl_broker.grant("Describe", topic)
    result = run_cli("replay", "--topic", topic, env=acl_broker.environment())
    assert_one_error_line(result, 1, "KAFKA_SASL_USERNAME", "ACL", topic)
