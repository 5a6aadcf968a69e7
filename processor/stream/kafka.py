"""Kafka client plumbing: security settings for every aiokafka client, and topic preparation."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Iterable
from typing import Any, NoReturn

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    InvalidReplicationFactorError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    for_code,
)

from processor.config import ConfigError, KafkaSecurity, Settings

log = logging.getLogger(__name__)

#: How long topic creation may take before the command gives up: a controller busy electing, moving
#: or starting, or a new topic's metadata not yet on every broker, is waited for this long.
TOPIC_WAIT_SECONDS = 60.0


class BrokerError(Exception):
    """The broker cannot be used; the message names the settings involved and what to do."""


def principal(username: str | None) -> str:
    """Who the broker refused, for an ``error:`` line."""
    return f"the credentials of {username!r} (KAFKA_SASL_USERNAME)" if username else "this client"


class RedactSaslExchange(logging.Filter):
    """Hide the SASL bytes aiokafka logs at debug level with every request and response.

    For PLAIN they hold the password in clear; for SCRAM, enough to test password guesses offline.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(map(_is_sasl_exchange, record.args)):
            record.args = tuple(
                f"{type(arg).__name__}(<redacted>)" if _is_sasl_exchange(arg) else arg for arg in record.args
            )
        return True


def _is_sasl_exchange(arg: object) -> bool:
    return type(arg).__name__.startswith("SaslAuthenticate")


_REDACT_SASL_EXCHANGE = RedactSaslExchange()


def redact_sasl_exchange_in_logs() -> None:
    """Install the filter on aiokafka's connection logger (idempotent; filters survive log set-up)."""
    logging.getLogger("aiokafka.conn").addFilter(_REDACT_SASL_EXCHANGE)


def _key_password_missing() -> NoReturn:
    # Without a password, OpenSSL would prompt on the terminal for an encrypted key: hang, or fail
    # with EINVAL when there is none.
    raise ConfigError("KAFKA_SSL_KEYFILE: the private key is encrypted; set KAFKA_SSL_PASSWORD")


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext | None:
    """A context that verifies the broker (CA and host name) for SSL and SASL_SSL; else ``None``."""
    if "SSL" not in security.protocol:
        return None
    try:
        context = ssl.create_default_context(cafile=security.ssl_cafile)
    except OSError as error:  # missing file, or no certificate in it (ssl.SSLError is an OSError)
        raise ConfigError(f"KAFKA_SSL_CAFILE: cannot load {security.ssl_cafile}: {error}") from None
    if security.ssl_keyfile and not security.ssl_certfile:
        raise ConfigError("KAFKA_SSL_KEYFILE: set KAFKA_SSL_CERTFILE too (the client certificate)")
    if security.ssl_certfile:
        try:
            context.load_cert_chain(
                security.ssl_certfile, security.ssl_keyfile, security.ssl_password or _key_password_missing
            )
        except ssl.SSLError as error:  # OpenSSL says "PEM lib" for a wrong password
            raise ConfigError(
                f"KAFKA_SSL_CERTFILE / KAFKA_SSL_KEYFILE: cannot load the client certificate and key "
                f"({error}); is KAFKA_SSL_PASSWORD right, and does the key match the certificate?"
            ) from None
        except OSError as error:
            raise ConfigError(f"KAFKA_SSL_CERTFILE / KAFKA_SSL_KEYFILE: {error}") from None
    return context


def _sasl_mechanism(security: KafkaSecurity) -> str:
    if not (security.sasl_username and security.sasl_password):
        raise ConfigError(
            f"KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are required with "
            f"KAFKA_SECURITY_PROTOCOL={security.protocol}"
        )
    return security.sasl_mechanism or "PLAIN"


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
    redact_sasl_exchange_in_logs()
    security = settings.security
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": security.protocol,
    }
    context = ssl_context(security)
    if context is not None:
        options["ssl_context"] = context
    if security.protocol.startswith("SASL"):
        options["sasl_mechanism"] = _sasl_mechanism(security)
        options["sasl_plain_username"] = security.sasl_username
        options["sasl_plain_password"] = security.sasl_password
    return options


TABLES = ("funds", "seen-fills")


def repartition_topic(settings: Settings) -> str:
    return f"{settings.app_id}-fills-by-fund"


def changelog_topic(settings: Settings, table: str) -> str:
    """A table's changelog topic (the name the faust-based v1 worker used, so state carries over)."""
    return f"{settings.app_id}-{table}-changelog"


def durability_configs(replication_factor: int) -> dict[str, str]:
    """Settings of every topic the worker creates: a write (acks=all) is acknowledged only once
    min(2, replication factor) replicas have it, and a replica that may lack acknowledged writes
    never becomes leader, so a committed transaction survives the loss of any one broker."""
    return {
        "min.insync.replicas": str(min(2, replication_factor)),
        "unclean.leader.election.enable": "false",
    }


async def prepare_topics(settings: Settings) -> dict[str, int]:
    """Create the topics that are missing; return the partition count of every topic the worker uses,
    once every one of them is described with its partitions.

    Outputs and the internal topics get the input's partition count: the re-partition topic and
    the table changelogs must match it (a fund lives on the same partition number of each), the
    outputs spread like the input does.
    """
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        deadline = time.monotonic() + TOPIC_WAIT_SECONDS
        existing = set(await admin.list_topics())
        partitions = settings.partitions
        if settings.input_topic in existing:
            # A topic just created, or a cluster just started, can be listed and described without
            # partitions for a while: wait for its count, as for the topics created here, rather than
            # create the others with none.
            described = await _partition_counts(
                admin, [settings.input_topic], created=True, deadline=deadline
            )
            partitions = described[settings.input_topic]
            if not partitions:
                raise _undescribed(settings, [settings.input_topic])
        wanted = [
            settings.input_topic,
            repartition_topic(settings),
            settings.deltas_topic,
            settings.adl_topic,
            settings.dlq_topic,
        ]
        if adl_policy_on(settings):
            wanted.append(settings.adl_states_topic)
        compacted = {changelog_topic(settings, table) for table in TABLES}
        every = [*wanted, *sorted(compacted)]
        missing = [name for name in every if name not in existing]
        if missing:
            log.info("creating topics %s with %d partitions", ", ".join(missing), partitions)
            topics = {
                name: NewTopic(
                    name,
                    partitions,
                    settings.replication_factor,
                    topic_configs={
                        **durability_configs(settings.replication_factor),
                        **({"cleanup.policy": "compact"} if name in compacted else {}),
                    },
                )
                for name in missing
            }
            await _create(admin, settings, topics, deadline)
        counts = await _partition_counts(admin, every, created=True, deadline=deadline)
        absent = [name for name in every if counts[name] == 0]
        if absent:
            raise _undescribed(settings, absent)
        return counts
    finally:
        await admin.close()


def _undescribed(settings: Settings, topics: list[str]) -> BrokerError:
    return BrokerError(
        f"the broker at {settings.bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS) does not describe"
        f" the topic(s) {', '.join(topics)} with partitions within {TOPIC_WAIT_SECONDS:.0f} s;"
        " is its controller quorum healthy?"
    )


async def _create(
    admin: AIOKafkaAdminClient, settings: Settings, topics: dict[str, NewTopic], deadline: float
) -> None:
    """Create ``topics``, asking again for those the controller could not create yet (it timed out, moved,
    or a broker was briefly fenced) until ``deadline``. One that exists already, another worker having
    created it meanwhile, counts as created; a refusal that asking again cannot mend ends the command."""
    pending = sorted(topics)
    while True:
        response = await admin.create_topics([topics[name] for name in pending])
        refused = {
            entry[0]: (entry[1], entry[2] if len(entry) > 2 else None)
            for entry in response.topic_errors
            if entry[1] not in (0, TopicAlreadyExistsError.errno)
        }
        if not refused:
            return
        await _check_replication(admin, settings, response.topic_errors)
        lasting = [
            name
            for name, (code, _) in refused.items()
            if not for_code(code).retriable and code != InvalidReplicationFactorError.errno
        ]
        if lasting or time.monotonic() > deadline:
            name = (lasting or sorted(refused))[0]
            code, message = refused[name]
            if code in (TopicAuthorizationFailedError.errno, ClusterAuthorizationFailedError.errno):
                raise BrokerError(
                    f"the broker at {settings.bootstrap_servers} does not allow"
                    f" {principal(settings.security.sasl_username)} to create the topic {name}"
                    " (CREATE ACL on the topic or the cluster): grant it, or create the topics beforehand"
                )
            raise BrokerError(
                f"the broker at {settings.bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS) refused to create"
                f" the topic {name}: {for_code(code).__name__}{f' ({message})' if message else ''}"
            )
        log.warning(
            "creating topics: %s; asking again",
            ", ".join(f"{name}: {for_code(code).__name__}" for name, (code, _) in sorted(refused.items())),
        )
        pending = sorted(refused)
        await asyncio.sleep(0.5)


async def _check_replication(
    admin: AIOKafkaAdminClient, settings: Settings, topic_errors: Iterable[tuple[Any, ...]]
) -> None:
    """Fail naming the setting when the cluster has fewer brokers than ``TOPIC_REPLICATION_FACTOR``
    (the broker refuses those topics; aiokafka returns the refusal rather than raising it). With enough
    brokers, such a refusal means one of them is briefly fenced (restarting, or late with a heartbeat):
    the caller asks again."""
    if any(entry[1] == InvalidReplicationFactorError.errno for entry in topic_errors):
        brokers = len((await admin.describe_cluster())["brokers"])
        if brokers < settings.replication_factor:
            raise ConfigError(
                f"TOPIC_REPLICATION_FACTOR: {settings.replication_factor} replicas asked, but the cluster"
                f" at {settings.bootstrap_servers} has {brokers} broker(s) up; lower it or start more brokers"
            )


def adl_policy_on(settings: Settings) -> bool:
    """Whether any fund runs the ADL policy (SPEC section 9): only then is its topic written."""
    return settings.rules.default_drawdown is not None or bool(settings.rules.drawdown)


async def partition_counts(settings: Settings, topics: Iterable[str]) -> dict[str, int]:
    """The partition count of each of ``topics`` (0 for one that does not exist)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        return await _partition_counts(admin, list(topics))
    finally:
        await admin.close()


async def _partition_counts(
    admin: AIOKafkaAdminClient, wanted: list[str], created: bool = False, deadline: float | None = None
) -> dict[str, int]:
    """A topic created a moment ago can be missing from the listing, or described with no partitions,
    until its metadata has propagated: ask again until ``deadline`` (5 s from now unless given) before
    believing a 0. Unless the topics are known to exist (``created``), only listed ones are described,
    since a metadata request could auto-create a mistyped one."""
    deadline = time.monotonic() + 5.0 if deadline is None else deadline
    existing = set(wanted) if created else set(await admin.list_topics())
    present = [topic for topic in wanted if topic in existing]
    counts = dict.fromkeys(wanted, 0)
    while present:
        described = await admin.describe_topics(present)
        counts.update({topic["topic"]: len(topic["partitions"]) for topic in described})
        if all(counts[topic] > 0 for topic in present) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    return counts
