"""Kafka client plumbing: security settings for faust and aiokafka, and topic preparation."""

from __future__ import annotations

import logging
import ssl
from contextlib import suppress
from typing import Any

import faust
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from processor.config import KafkaSecurity, Settings

log = logging.getLogger(__name__)


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext | None:
    if "SSL" not in security.protocol:
        return None
    context = ssl.create_default_context(cafile=security.ssl_cafile)
    if security.ssl_certfile:
        context.load_cert_chain(security.ssl_certfile, security.ssl_keyfile, security.ssl_password)
    return context


def faust_credentials(security: KafkaSecurity) -> Any:
    """The ``broker_credentials`` faust wants for these settings (``None`` for plaintext)."""
    context = ssl_context(security)
    if security.protocol.startswith("SASL"):
        mechanism = security.sasl_mechanism or "PLAIN"
        if mechanism.startswith("SCRAM"):
            return faust.SASLCredentials(
                username=security.sasl_username,
                password=security.sasl_password,
                mechanism=mechanism,
                ssl_context=context,
            )
        return faust.SASLCredentials(
            username=security.sasl_username, password=security.sasl_password, ssl_context=context
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
    security = settings.security
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": security.protocol,
    }
    context = ssl_context(security)
    if context is not None:
        options["ssl_context"] = context
    if security.protocol.startswith("SASL"):
        options["sasl_mechanism"] = security.sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = security.sasl_username
        options["sasl_plain_password"] = security.sasl_password
    return options


TABLES = ("funds", "seen-fills")


def repartition_topic(settings: Settings) -> str:
    return f"{settings.app_id}-fills-by-fund"


def changelog_topic(settings: Settings, table: str) -> str:
    """The name faust gives a table's changelog."""
    return f"{settings.app_id}-{table}-changelog"


async def prepare_topics(settings: Settings) -> int:
    """Create the topics that are missing; return the input topic's partition count.

    Outputs and the internal topics get the input's partition count: the re-partition topic and
    the table changelogs must match it (a fund lives on the same partition number of each), the
    outputs spread like the input does. The changelogs are created here, compacted, rather than by
    faust during start-up: a batch that writes a table before faust's metadata shows a changelog
    it just created fails faust's partition check.
    """
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        partitions = settings.partitions
        if settings.input_topic in existing:
            described = await admin.describe_topics([settings.input_topic])
            partitions = len(described[0]["partitions"])
        wanted = [
            settings.input_topic,
            repartition_topic(settings),
            settings.deltas_topic,
            settings.adl_topic,
            settings.dlq_topic,
        ]
        compacted = {changelog_topic(settings, table) for table in TABLES}
        missing = [name for name in [*wanted, *sorted(compacted)] if name not in existing]
        if missing:
            log.info("creating topics %s with %d partitions", ", ".join(missing), partitions)
            with suppress(TopicAlreadyExistsError):  # another worker created them meanwhile
                await admin.create_topics(
                    [
                        NewTopic(
                            name,
                            partitions,
                            settings.replication_factor,
                            topic_configs={"cleanup.policy": "compact"} if name in compacted else {},
                        )
                        for name in missing
                    ]
                )
        return partitions
    finally:
        await admin.close()
