"""Settings, read once from the environment by the composition root (never on import)."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from processor.codec import decimal_or_none
from processor.domain.ledger import DEFAULT_DUPLICATE_WINDOW_MS
from processor.domain.state import DEFAULT_PRECISION, FundRules


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the variable."""


CURRENCY = re.compile(r"[A-Z0-9]{2,16}")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _currency_map(variable: str, text: str) -> dict[str, str]:
    """Parse ``USDT=8,BTC=10`` into a dict; currencies must match the input schema's pattern."""
    result: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        currency, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not currency or not value:
            raise ConfigError(f"{variable}: expected CURRENCY=VALUE[,CURRENCY=VALUE...], got {item!r}")
        if CURRENCY.fullmatch(currency) is None:
            raise ConfigError(
                f"{variable}: {currency!r} in {item!r} is not a margin currency (2-16 of A-Z, 0-9)"
            )
        result[currency] = value
    return result


def _choice(variable: str, text: str, choices: tuple[str, ...]) -> str:
    if text not in choices:
        raise ConfigError(f"{variable}: expected one of {', '.join(choices)}, got {text!r}")
    return text


def _seconds(variable: str, text: str) -> float:
    number = _decimal(variable, text)
    if number <= 0:
        raise ConfigError(f"{variable}: must be > 0, got {text}")
    return float(number)


def _decimal(variable: str, text: str) -> Decimal:
    number = decimal_or_none(text)
    if number is None:
        raise ConfigError(f"{variable}: {text!r} is not a finite decimal")
    return number


def _integer(variable: str, text: str, minimum: int = 0, maximum: int | None = None) -> int:
    try:
        number = int(text)
    except ValueError:
        raise ConfigError(f"{variable}: {text!r} is not an integer") from None
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ConfigError(f"{variable}: must be {bounds}, got {number}")
    return number


WORKER_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")


def _worker_id(text: str | None) -> str:
    """The worker's static group membership id; empty means "derive one" (see ``Settings.member_id``)."""
    if text is None:
        return ""
    if WORKER_ID.fullmatch(text) is None:
        raise ConfigError(f"WORKER_ID: expected 1-200 of A-Z, a-z, 0-9, '.', '_', '-', got {text!r}")
    return text


def fund_rules(
    default_precision: str | None = None,
    precision: str = "",
    default_floor: str | None = None,
    floors: str = "",
    initial_balances: str = "",
) -> FundRules:
    """Build the per-currency fund rules from their textual settings."""
    places = {
        currency: _integer("FUND_PRECISION", value)
        for currency, value in _currency_map("FUND_PRECISION", precision).items()
    }
    return FundRules(
        default_precision=(
            _integer("FUND_DEFAULT_PRECISION", default_precision) if default_precision else DEFAULT_PRECISION
        ),
        precision=places,
        default_floor=_decimal("FUND_DEFAULT_FLOOR", default_floor) if default_floor else Decimal(0),
        floor={
            currency: _decimal("FUND_FLOORS", value)
            for currency, value in _currency_map("FUND_FLOORS", floors).items()
        },
        initial_balance={
            currency: _decimal("FUND_INITIAL_BALANCES", value)
            for currency, value in _currency_map("FUND_INITIAL_BALANCES", initial_balances).items()
        },
    )


class Secret(str):
    """A password: its text wherever it is used, ``'<redacted>'`` in every ``repr``.

    Dumps of a configuration go through ``repr`` (dataclass and dict reprs, ``%r``, ``pprint``,
    ``dataclasses.asdict``), so printing or logging one never shows the password.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'<redacted>'"


@dataclass(frozen=True)
class KafkaSecurity:
    """Client security settings; the passwords are ``Secret``s and never part of ``repr``."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("sasl_password", "ssl_password"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Secret):
                object.__setattr__(self, name, Secret(value))


@dataclass(frozen=True)
class Settings:
    """Everything the processor can be told; see the README's configuration table."""

    bootstrap_servers: str = "127.0.0.1:9092"
    app_id: str = "insurance-fund"
    input_topic: str = "liquidation-fills"
    deltas_topic: str = "insurance-fund-deltas"
    adl_topic: str = "adl-triggers"
    dlq_topic: str = "liquidation-fills-dlq"
    partitions: int = 3
    replication_factor: int = 1
    worker_id: str = ""
    store: str = "memory"
    data_dir: Path = Path("var/data")
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    batch_size: int = 5000
    batch_seconds: float = 0.05
    rules: FundRules = field(default_factory=FundRules)
    duplicate_window_ms: int = DEFAULT_DUPLICATE_WINDOW_MS
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    log_level: str = "info"

    def member_id(self, host: str) -> str:
        """The ``group.instance.id``: ``WORKER_ID``, else ``<host>-<WEB_PORT>``, stable across restarts
        of the same worker and unique on a host (two workers cannot share a port)."""
        if self.worker_id:
            return self.worker_id
        if self.web_port == 0:  # any free port: no stable name to derive, so no static membership
            return f"{host}-pid{os.getpid()}"
        return f"{host}-{self.web_port}"

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read settings from an environment mapping (``os.environ`` at the composition root)."""
        env = {name: value for name, value in environ.items() if value != ""}
        defaults = cls()
        store = env.get("STORE", defaults.store)
        if store not in ("memory", "rocksdb"):
            raise ConfigError(f"STORE: expected memory or rocksdb, got {store!r}")
        return cls(
            bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS", defaults.bootstrap_servers),
            app_id=env.get("APP_ID", defaults.app_id),
            input_topic=env.get("INPUT_TOPIC", defaults.input_topic),
            deltas_topic=env.get("DELTAS_TOPIC", defaults.deltas_topic),
            adl_topic=env.get("ADL_TOPIC", defaults.adl_topic),
            dlq_topic=env.get("DLQ_TOPIC", defaults.dlq_topic),
            partitions=_integer("TOPIC_PARTITIONS", env.get("TOPIC_PARTITIONS", str(defaults.partitions)), 1),
            replication_factor=_integer(
                "TOPIC_REPLICATION_FACTOR",
                env.get("TOPIC_REPLICATION_FACTOR", str(defaults.replication_factor)),
                1,
            ),
            worker_id=_worker_id(env.get("WORKER_ID")),
            store=store,
            data_dir=Path(env.get("DATA_DIR", str(defaults.data_dir))),
            web_host=env.get("WEB_HOST", defaults.web_host),
            web_port=_integer("WEB_PORT", env.get("WEB_PORT", str(defaults.web_port)), 0, 65535),
            batch_size=_integer("BATCH_SIZE", env.get("BATCH_SIZE", str(defaults.batch_size)), 1, 100_000),
            batch_seconds=_seconds("BATCH_SECONDS", env.get("BATCH_SECONDS", str(defaults.batch_seconds))),
            rules=fund_rules(
                default_precision=env.get("FUND_DEFAULT_PRECISION"),
                precision=env.get("FUND_PRECISION", ""),
                default_floor=env.get("FUND_DEFAULT_FLOOR"),
                floors=env.get("FUND_FLOORS", ""),
                initial_balances=env.get("FUND_INITIAL_BALANCES", ""),
            ),
            duplicate_window_ms=_integer(
                "DUPLICATE_WINDOW_MS", env.get("DUPLICATE_WINDOW_MS", str(defaults.duplicate_window_ms))
            ),
            security=KafkaSecurity(
                protocol=_choice(
                    "KAFKA_SECURITY_PROTOCOL",
                    env.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
                    SECURITY_PROTOCOLS,
                ),
                sasl_mechanism=(
                    _choice("KAFKA_SASL_MECHANISM", env["KAFKA_SASL_MECHANISM"], SASL_MECHANISMS)
                    if "KAFKA_SASL_MECHANISM" in env
                    else None
                ),
                sasl_username=env.get("KAFKA_SASL_USERNAME"),
                sasl_password=env.get("KAFKA_SASL_PASSWORD"),
                ssl_cafile=env.get("KAFKA_SSL_CAFILE"),
                ssl_certfile=env.get("KAFKA_SSL_CERTFILE"),
                ssl_keyfile=env.get("KAFKA_SSL_KEYFILE"),
                ssl_password=env.get("KAFKA_SSL_PASSWORD"),
            ),
            log_level=_choice("LOG_LEVEL", env.get("LOG_LEVEL", defaults.log_level).lower(), LOG_LEVELS),
        )
