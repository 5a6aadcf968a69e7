"""Reaching the broker: wait for it at start-up, and say plainly why it cannot be reached.

aiokafka's clients report any failure to connect as "Unable to bootstrap from [...]" and log the
cause separately. Before a command starts its clients, ``wait_for_broker`` opens one connection per
bootstrap address itself (aiokafka's public ``create_conn``, with the same security settings), so it
can tell a broker that is not up yet (retried, with capped exponential backoff, for
``KAFKA_CONNECT_TIMEOUT_SECONDS``) from one that refuses us (TLS or credentials: no retry helps).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Mapping

from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnsupportedSaslMechanismError,
)

from processor.config import Settings
from processor.stream.kafka import BrokerError, client_options, principal

log = logging.getLogger(__name__)

FIRST_DELAY_SECONDS = 0.25
MAX_DELAY_SECONDS = 5.0
ATTEMPT_TIMEOUT_MS = 5_000


class BrokerUnreachableError(BrokerError):
    """No bootstrap address answered within ``KAFKA_CONNECT_TIMEOUT_SECONDS``."""


class BrokerRefusedError(BrokerError):
    """A broker answered but refused the connection: TLS or credentials."""


def _addresses(servers: str) -> list[tuple[str, int]]:
    addresses = []
    for server in filter(None, (part.strip() for part in servers.split(","))):
        host, _, port = server.rpartition(":")
        addresses.append((host.strip("[]") or server, int(port) if port.isdigit() else 9092))
    return addresses


async def probe(settings: Settings) -> None:
    """Connect to each bootstrap address until one answers a metadata request; raise on refusal."""
    options = client_options(settings)
    security = settings.security
    last: BaseException | None = None
    for host, port in _addresses(settings.bootstrap_servers):
        try:
            connection = await create_conn(
                host,
                port,
                request_timeout_ms=ATTEMPT_TIMEOUT_MS,
                ssl_context=options.get("ssl_context"),
                security_protocol=security.protocol,
                sasl_mechanism=options.get("sasl_mechanism"),
                sasl_plain_username=options.get("sasl_plain_username"),
                sasl_plain_password=options.get("sasl_plain_password"),
            )
        except ssl.SSLError as error:
            raise BrokerRefusedError(
                f"KAFKA_SSL_CAFILE / KAFKA_SECURITY_PROTOCOL={security.protocol}: the TLS handshake with "
                f"{host}:{port} failed ({error.reason or error}); does the CA sign the broker's certificate, "
                f"and does it name {host}?"
            ) from None
        except (SaslAuthenticationFailed, AuthenticationFailedError, IllegalSaslStateError) as error:
            raise BrokerRefusedError(
                f"KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD: the broker at {host}:{port} refused the "
                f"credentials of {security.sasl_username!r} ({options.get('sasl_mechanism')}): {error}"
            ) from None
        except UnsupportedSaslMechanismError as error:
            raise BrokerRefusedError(
                f"KAFKA_SASL_MECHANISM: the broker at {host}:{port} does not accept "
                f"{options.get('sasl_mechanism')}: {error}"
            ) from None
        except (TimeoutError, OSError, KafkaError) as error:
            last = error
            continue
        connection.close()
        return
    raise ConnectionError(str(last) if last is not None else "no bootstrap address")


async def wait_for_broker(
    settings: Settings, on_wait: Callable[[str], None] | None = None, level: int = logging.WARNING
) -> None:
    """Return once a bootstrap address answers; retry one that does not for
    ``KAFKA_CONNECT_TIMEOUT_SECONDS``, logging each attempt once; raise ``BrokerError`` otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.connect_timeout_seconds
    delay = FIRST_DELAY_SECONDS
    attempt = 0
    while True:
        attempt += 1
        try:
            await asyncio.wait_for(probe(settings), max(0.1, deadline - loop.time()))
        except BrokerRefusedError:
            raise
        except (TimeoutError, ConnectionError, OSError) as error:
            reason = str(error) or type(error).__name__
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise BrokerUnreachableError(
                    f"KAFKA_BOOTSTRAP_SERVERS={settings.bootstrap_servers}: no broker answered within "
                    f"{settings.connect_timeout_seconds:g} s (KAFKA_CONNECT_TIMEOUT_SECONDS); last error: "
                    f"{reason}. Is Kafka running there and reachable from here?"
                ) from None
            wait = min(delay, remaining)
            message = (
                f"waiting for the broker at {settings.bootstrap_servers} (attempt {attempt}: {reason}); "
                f"next attempt in {wait:.1f} s"
            )
            log.log(level, message)
            if on_wait is not None:
                on_wait(message)
            await asyncio.sleep(wait)
            delay = min(delay * 2, MAX_DELAY_SECONDS)
            continue
        if attempt > 1:
            log.info("the broker at %s answered (attempt %d)", settings.bootstrap_servers, attempt)
        return


#: Authorization failures: what the principal was not allowed to use, and the ACL to look at.
_REFUSALS: tuple[tuple[type[KafkaError], str], ...] = (
    (GroupAuthorizationFailedError, "use consumer group APP_ID (group ACL)"),
    (
        TransactionalIdAuthorizationFailed,
        "use the transactional ids <APP_ID>-fund-<partition> (transactional-id ACL)",
    ),
    (ClusterAuthorizationFailedError, "run a cluster operation (cluster ACL)"),
)


def describe_broker_error(error: BaseException, environ: Mapping[str, str]) -> str | None:
    """One line for an error from the broker, naming the setting or topic involved; ``None`` for
    anything else (a bug, which keeps its traceback)."""
    servers = environ.get("KAFKA_BOOTSTRAP_SERVERS") or "127.0.0.1:9092"
    refused = f"the broker at {servers} does not allow {principal(environ.get('KAFKA_SASL_USERNAME'))} to"
    if isinstance(error, BrokerError):
        return str(error)
    if isinstance(error, TopicAuthorizationFailedError):
        topics = ", ".join(sorted(map(str, error.args))) or "a topic it needs"
        return (
            f"{refused} use {topics} (topic ACL): grant READ on the input and WRITE on the outputs, "
            f"or check the topic names"
        )
    for kind, what in _REFUSALS:
        if isinstance(error, kind):
            return f"{refused} {what}"
    if isinstance(error, KafkaConnectionError):
        return (
            f"KAFKA_BOOTSTRAP_SERVERS={servers}: lost the connection to the broker ({error}); "
            f"is Kafka running there?"
        )
    if isinstance(error, KafkaError):
        return f"the broker at {servers} (KAFKA_BOOTSTRAP_SERVERS) answered with an error: {error!r}"
    return None
