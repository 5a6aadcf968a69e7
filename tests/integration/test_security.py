"""SASL (PLAIN, SCRAM-SHA-256/512) and TLS against a real broker, configured as a user would.

One broker for the module, started by ``scripts/kafka.sh`` with PLAINTEXT, SASL_PLAINTEXT, SSL (client
certificate required) and SASL_SSL listeners; its keys and certificates are made by ``keytool`` in a
temporary directory. Every client comes from ``client_options(Settings.from_env(environment))`` with the
variables of the README, and every secret is a unique string looked for in each log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import ssl
import subprocess
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from processor import codec
from processor.codec import FillDecoder
from processor.config import Settings
from processor.domain.ledger import Ledger
from processor.domain.state import FundRules
from processor.pipeline import Pipeline
from processor.simulate import fills
from processor.stream.kafka import client_options
from processor.stream.produce import produce_lines
from testkit.broker import ROOT, free_port, unique
from testkit.cli import assert_one_error_line, run_cli
from testkit.worker import RunningWorker, WorkerConfig
from tests.integration import certs

SASL_USER = "fund-worker"
SASL_PASSWORD = f"sasl-{uuid.uuid4().hex}"
STORE_PASSWORD = f"store-{uuid.uuid4().hex}"  # the broker's keystore, truststore and the CA's keystore
CLIENT_KEY_PASSWORD = f"client-key-{uuid.uuid4().hex}"
SECRETS = (SASL_PASSWORD, STORE_PASSWORD, CLIENT_KEY_PASSWORD)
LISTENERS = ("PLAINTEXT", "CONTROLLER", "SASL_PLAINTEXT", "SSL", "SASL_SSL")
TIMEOUT = 30.0  # seconds any one client operation may take before the test fails instead of hanging

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None
    or not certs.tools_available()
    or (shutil.which("mvn") is None and not any((ROOT / ".kafka" / "libs").glob(".fetched-kafka-*"))),
    reason="needs java, keytool, openssl and the Kafka jars (or Maven to fetch them): a broker of its own",
)


@dataclass(frozen=True)
class SecuredBroker:
    ports: dict[str, int]
    ca: certs.CertificateAuthority
    client: certs.ClientCertificate
    home: Path
    script_output: str

    def address(self, listener: str, host: str = "127.0.0.1") -> str:
        return f"{host}:{self.ports[listener]}"

    def environment(self, protocol: str, mechanism: str | None = None) -> dict[str, str]:
        """What a user exports to reach the listener for ``protocol`` (with a client certificate on SSL)."""
        # Over TLS, bootstrap by name: DNS:localhost is checked, then IP:127.0.0.1 (the advertised host).
        host = "localhost" if protocol.endswith("SSL") else "127.0.0.1"
        environment = {
            "KAFKA_BOOTSTRAP_SERVERS": self.address(protocol, host),
            "KAFKA_SECURITY_PROTOCOL": protocol,
        }
        if protocol.startswith("SASL"):
            environment |= {"KAFKA_SASL_USERNAME": SASL_USER, "KAFKA_SASL_PASSWORD": SASL_PASSWORD}
            if mechanism is not None:
                environment["KAFKA_SASL_MECHANISM"] = mechanism
        if protocol.endswith("SSL"):
            environment["KAFKA_SSL_CAFILE"] = str(self.ca.pem)
        if protocol == "SSL":
            environment |= {
                "KAFKA_SSL_CERTFILE": str(self.client.certfile),
                "KAFKA_SSL_KEYFILE": str(self.client.keyfile),
                "KAFKA_SSL_PASSWORD": self.client.password,
            }
        return environment


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    directory = tmp_path_factory.mktemp("security")
    ca = certs.certificate_authority(directory / "tls", "test-ca", STORE_PASSWORD)
    stores = certs.broker_stores(directory / "tls", ca, STORE_PASSWORD)
    client = certs.client_certificate(directory / "tls", ca, CLIENT_KEY_PASSWORD)
    ports = {listener: free_port() for listener in LISTENERS}
    home = directory / "kafka"
    environment = {
        **os.environ,
        "KAFKA_HOME_DIR": str(home),
        "KAFKA_PORT": str(ports["PLAINTEXT"]),
        "KAFKA_CONTROLLER_PORT": str(ports["CONTROLLER"]),
        "KAFKA_SASL_PORT": str(ports["SASL_PLAINTEXT"]),
        "KAFKA_SSL_PORT": str(ports["SSL"]),
        "KAFKA_SASL_SSL_PORT": str(ports["SASL_SSL"]),
        "KAFKA_SASL_USER": SASL_USER,
        "KAFKA_SASL_PASSWORD": SASL_PASSWORD,
        "KAFKA_SSL_KEYSTORE": str(stores.keystore),
        "KAFKA_SSL_KEYSTORE_PASSWORD": stores.password,
        "KAFKA_SSL_TRUSTSTORE": str(stores.truststore),
        "KAFKA_SSL_TRUSTSTORE_PASSWORD": stores.password,
        "KAFKA_SSL_CLIENT_AUTH": "required",
    }
    script = ["bash", str(ROOT / "scripts" / "kafka.sh")]
    # Run here rather than through broker.jar_broker, so that what the script prints can be checked.
    started = subprocess.run([*script, "up"], env=environment, capture_output=True, text=True, check=False)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield SecuredBroker(ports, ca, client, home, started.stdout + started.stderr)
    finally:
        subprocess.run([*script, "down", "--purge"], env=environment, capture_output=True, check=False)


def settings_for(environment: dict[str, str]) -> Settings:
    return Settings.from_env(environment)


def assert_no_secret(text: str, *extra: str) -> None:
    for secret in (*SECRETS, *extra):
        assert secret not in text


async def bounded(awaitable: Any) -> Any:
    return await asyncio.wait_for(awaitable, TIMEOUT)


async def create_topic(settings: Settings, topic: str) -> None:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await bounded(admin.start())
    try:
        await bounded(admin.create_topics([NewTopic(topic, 1, 1)]))
    finally:
        await admin.close()


async def send(settings: Settings, topic: str, messages: list[bytes]) -> None:
    producer = AIOKafkaProducer(**client_options(settings), enable_idempotence=True, acks="all")
    try:
        await bounded(producer.start())
        await bounded(asyncio.gather(*[await producer.send(topic, message) for message in messages]))
    finally:
        await producer.stop()


async def receive(settings: Settings, topic: str, expected: int) -> list[bytes]:
    """Read ``topic`` from the start until ``expected`` records (or ``TIMEOUT``)."""
    consumer = AIOKafkaConsumer(
        **client_options(settings), enable_auto_commit=False, isolation_level="read_committed"
    )
    try:
        await bounded(consumer.start())
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        values: list[bytes] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while len(values) < expected and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            values.extend(record.value for records in batch.values() for record in records)
        return values
    finally:
        await consumer.stop()


# --- clients built from the environment -----------------------------------------------------------------

CLIENT_CASES = [
    pytest.param("SASL_PLAINTEXT", "PLAIN", id="sasl-plain"),
    pytest.param("SASL_PLAINTEXT", "SCRAM-SHA-256", id="sasl-scram-sha-256"),
    pytest.param("SASL_PLAINTEXT", "SCRAM-SHA-512", id="sasl-scram-sha-512"),
    pytest.param("SSL", None, id="ssl-client-certificate"),
    pytest.param("SASL_SSL", "SCRAM-SHA-512", id="sasl-ssl-scram-sha-512"),
]


@pytest.mark.parametrize(("protocol", "mechanism"), CLIENT_CASES)
def test_produce_and_consume(
    broker: SecuredBroker, protocol: str, mechanism: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # aiokafka logs every request, the SASL exchange included
    settings = settings_for(broker.environment(protocol, mechanism))
    topic = unique("secured")
    messages = [f"message {n} over {protocol}".encode() for n in range(5)]

    async def scenario() -> list[bytes]:
        await create_topic(settings, topic)
        await send(settings, topic, messages)
        return await receive(settings, topic, len(messages))

    assert asyncio.run(scenario()) == messages
    assert_no_secret(caplog.text)
    if mechanism is not None:
        assert f"Authenticated as {SASL_USER} via {mechanism}" in caplog.text
        assert "SaslAuthenticateRequest_v1(<redacted>)" in caplog.text


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_a_wrong_password_fails_fast_with_an_authentication_error(
    broker: SecuredBroker, mechanism: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = f"wrong-{uuid.uuid4().hex}"
    settings = settings_for(broker.environment("SASL_PLAINTEXT", mechanism) | {"KAFKA_SASL_PASSWORD": wrong})
    with pytest.raises(KafkaConnectionError):
        asyncio.run(send(settings, unique("never"), [b"x"]))
    assert "SaslAuthenticationFailed" in caplog.text
    assert "Authentication failed" in caplog.text
    assert_no_secret(caplog.text, wrong)


@pytest.mark.parametrize("trusted", ["another CA", "the system store"])
def test_tls_rejects_a_broker_the_client_ca_did_not_sign(
    broker: SecuredBroker, trusted: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    environment = broker.environment("SSL")
    if trusted == "another CA":
        other = certs.certificate_authority(tmp_path, "other-ca", STORE_PASSWORD)
        environment["KAFKA_SSL_CAFILE"] = str(other.pem)
    else:
        del environment["KAFKA_SSL_CAFILE"]
    with pytest.raises(KafkaConnectionError):
        asyncio.run(send(settings_for(environment), unique("never"), [b"x"]))
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


def test_tls_checks_the_broker_host_name(broker: SecuredBroker) -> None:
    """The certificate names 127.0.0.1 and localhost: another name for the same socket is refused."""
    context = client_options(settings_for(broker.environment("SSL")))["ssl_context"]
    assert context.check_hostname

    async def handshake(server_hostname: str) -> None:
        _, writer = await bounded(
            asyncio.open_connection(
                "127.0.0.1", broker.ports["SSL"], ssl=context, server_hostname=server_hostname
            )
        )
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()

    asyncio.run(handshake("localhost"))
    asyncio.run(handshake("127.0.0.1"))
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        asyncio.run(handshake("kafka.example.com"))


def test_the_ssl_listener_requires_the_client_certificate(broker: SecuredBroker) -> None:
    environment = broker.environment("SSL")
    for variable in ("KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE", "KAFKA_SSL_PASSWORD"):
        del environment[variable]
    with pytest.raises(KafkaConnectionError):
        asyncio.run(send(settings_for(environment), unique("never"), [b"x"]))


def test_the_broker_script_prints_and_logs_no_secret(broker: SecuredBroker) -> None:
    assert f"password from KAFKA_SASL_PASSWORD) at {broker.address('SASL_PLAINTEXT')}" in broker.script_output
    assert f"TLS (client certificate: required) at {broker.address('SSL')}" in broker.script_output
    assert broker.address("SASL_SSL") in broker.script_output
    assert_no_secret(broker.script_output)
    for log in (broker.home / "logs").iterdir():
        assert_no_secret(log.read_text(errors="replace"))
    assert (broker.home / "server.properties").stat().st_mode & 0o077 == 0


# --- the real worker ------------------------------------------------------------------------------------


def expected_deltas(messages: list[bytes]) -> dict[str, list[bytes]]:
    """What the file replay makes of ``messages``, per fund."""
    pipeline = Pipeline(FillDecoder.from_schema_dir(), Ledger(FundRules()))
    deltas = [
        pipeline.process(message, None, "file", None, offset).delta for offset, message in enumerate(messages)
    ]
    return by_fund([delta for delta in deltas if delta is not None])


def by_fund(deltas: list[bytes]) -> dict[str, list[bytes]]:
    ledgers: dict[str, list[bytes]] = defaultdict(list)
    for delta in deltas:
        ledgers[orjson.loads(delta)["fund"]].append(delta)
    return dict(ledgers)


def run_worker_over(broker: SecuredBroker, environment: dict[str, str], scratch: Path) -> str:
    """Run the worker at debug level, feed it fills, check its deltas; return its whole log."""
    messages = [codec.dumps(fill) for fill in fills(40, seed=11)]
    expected = expected_deltas(messages)
    config = WorkerConfig(
        bootstrap=environment["KAFKA_BOOTSTRAP_SERVERS"],
        scratch=scratch,
        extra_env=environment | {"LOG_LEVEL": "debug"},
    )
    settings = settings_for(environment)
    worker = RunningWorker(config)
    try:
        worker.wait_healthy()
        asyncio.run(produce_lines(settings, config.input_topic, messages))  # `python -m processor produce`
        count = sum(map(len, expected.values()))
        deltas = asyncio.run(receive(settings, config.deltas_topic, count))
        assert by_fund(deltas) == expected, worker.log()
    finally:
        worker.stop()
    return worker.log_path.read_text(errors="replace")


def test_worker_over_sasl_scram_sha_512(broker: SecuredBroker, tmp_path: Path) -> None:
    environment = broker.environment("SASL_PLAINTEXT", "SCRAM-SHA-512")
    log = run_worker_over(broker, environment, tmp_path)
    assert_no_secret(log)
    assert f"Authenticated as {SASL_USER} via SCRAM-SHA-512" in log
    assert "SaslAuthenticateRequest_v1(<redacted>)" in log  # the debug log of the exchange is redacted
    settings = settings_for(environment)
    assert_no_secret(repr(settings) + str(settings) + repr(client_options(settings)))


def test_worker_over_ssl_with_a_client_certificate(broker: SecuredBroker, tmp_path: Path) -> None:
    environment = broker.environment("SSL")
    log = run_worker_over(broker, environment, tmp_path)
    assert " DEBUG " in log
    assert_no_secret(log)
    settings = settings_for(environment)
    assert_no_secret(repr(settings) + str(settings) + repr(client_options(settings)))


def test_worker_with_a_wrong_password_exits_with_the_authentication_error(
    broker: SecuredBroker, tmp_path: Path
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    environment = broker.environment("SASL_PLAINTEXT", "SCRAM-SHA-512") | {"KAFKA_SASL_PASSWORD": wrong}
    config = WorkerConfig(
        bootstrap=environment["KAFKA_BOOTSTRAP_SERVERS"],
        scratch=tmp_path,
        extra_env=environment | {"LOG_LEVEL": "debug"},
    )
    worker = RunningWorker(config)
    try:
        assert worker.process.wait(TIMEOUT) != 0
    finally:
        worker.kill()
    log = worker.log_path.read_text(errors="replace")
    assert "SaslAuthenticationFailed" in log
    assert_no_secret(log, wrong)


def run_command(environment: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={**environment, "KAFKA_CONNECT_TIMEOUT_SECONDS": "5"}, timeout=60)


@pytest.mark.parametrize("args", [("replay", "--topic", "fills"), ("audit",)], ids=["replay", "audit"])
def test_refused_credentials_are_one_error_line_naming_them(
    broker: SecuredBroker, args: tuple[str, ...]
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    environment = broker.environment("SASL_PLAINTEXT", "SCRAM-SHA-512") | {"KAFKA_SASL_PASSWORD": wrong}
    result = run_command(environment, *args)
    assert_one_error_line(result, 1, "KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD", "SaslAuthenticationFailed")
    assert_no_secret(result.stderr, wrong)


def test_an_untrusted_broker_is_one_error_line_naming_the_ca(broker: SecuredBroker, tmp_path: Path) -> None:
    environment = broker.environment("SSL")
    other = certs.certificate_authority(tmp_path, "other-ca", STORE_PASSWORD)
    environment["KAFKA_SSL_CAFILE"] = str(other.pem)
    result = run_command(environment, "replay", "--topic", "fills")
    assert_one_error_line(result, 1, "KAFKA_SSL_CAFILE", "CERTIFICATE_VERIFY_FAILED")
