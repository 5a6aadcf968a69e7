"""Settings, read once from the environment by the composition root (never on import)."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from processor.codec import decimal_or_none
from processor.domain.ledger import DEFAULT_DUPLICATE_WINDOW_MS
from processor.domain.pools import FundPools, Pool, is_pool_id
from processor.domain.state import DEFAULT_DRAWDOWN_WINDOW_MS, DEFAULT_PRECISION, DrawdownPolicy, FundRules


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the variable."""


class InputError(ValueError):
    """A command-line argument that cannot be used (a file, a topic); the message names it."""


CURRENCY = re.compile(r"[A-Z0-9]{2,16}")
POOL_ID = re.compile(r"[A-Z0-9]{2,16}[-_][A-Z0-9_-]{1,32}")  # SPEC section 7
POOL_FIELDS = ("fund", "currency", "symbols", "initial_balance", "floor", "from_timestamp", "until_timestamp")
MAX_SYMBOL_LENGTH = 64  # the input schema's longest symbol
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")

#: Bounds of the numeric settings (the README's configuration table states each).
MAX_PRECISION = 18  # SPEC section 2: inputs have at most 18 digits after the point
MAX_AMOUNT = Decimal(10) ** 15  # SPEC section 2: no amount beyond 10^15
MAX_TIMESTAMP_MS = 2**63 - 1  # the input schema's largest event time
MAX_PARTITIONS = 10_000
MAX_REPLICATION_FACTOR = 32
MAX_BATCH_SIZE = 100_000
MAX_BATCH_SECONDS = 60.0
MAX_CONNECT_TIMEOUT_SECONDS = 3600.0
MAX_PORT = 65535


def _currency_map(variable: str, text: str) -> dict[str, str]:
    """Parse ``USDT=8,BTC=10`` into a dict; currencies must match the input schema's pattern."""
    return _keyed_map(variable, text, "CURRENCY", CURRENCY.fullmatch, "a margin currency (2-16 of A-Z, 0-9)")


def _fund_map(variable: str, text: str) -> dict[str, str]:
    """Parse ``USDT=0.3,USDT-MEME=0.2`` (fund ids: currencies or pools) into a dict."""
    return _keyed_map(
        variable,
        text,
        "FUND",
        lambda fund: CURRENCY.fullmatch(fund) or POOL_ID.fullmatch(fund),
        "a fund id (a currency or a pool id)",
    )


def _keyed_map(
    variable: str, text: str, key_name: str, accepts: Callable[[str], object], described: str
) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key or not value:
            raise ConfigError(f"{variable}: expected {key_name}=VALUE[,{key_name}=VALUE...], got {item!r}")
        if not accepts(key):
            raise ConfigError(f"{variable}: {key!r} in {item!r} is not {described}")
        result[key] = value
    return result


def _choice(variable: str, text: str, choices: tuple[str, ...]) -> str:
    if text not in choices:
        raise ConfigError(f"{variable}: expected one of {', '.join(choices)}, got {text!r}")
    return text


def _seconds(variable: str, text: str, maximum: float) -> float:
    """A duration in seconds, in (0, maximum]; checked as the float the settings hold."""
    seconds = float(_decimal(variable, text))
    if not 0 < seconds <= maximum:
        raise ConfigError(f"{variable}: must be > 0 and <= {maximum:g}, got {text}")
    return seconds


def _decimal(variable: str, text: str, subject: str = "") -> Decimal:
    number = decimal_or_none(text)
    if number is None:
        raise ConfigError(f"{variable}: {subject}{text!r} is not a finite decimal")
    return number


def _money(variable: str, text: str, subject: str = "") -> Decimal:
    """An amount of a fund's currency: finite, not negative, and within SPEC section 2's bound."""
    amount = _decimal(variable, text, subject)
    if not 0 <= amount <= MAX_AMOUNT:
        raise ConfigError(f"{variable}: {subject}must be in [0, 10^15], got {text}")
    return amount


def _integer(variable: str, text: str, minimum: int, maximum: int, subject: str = "") -> int:
    """An integer in [minimum, maximum]; ``subject`` names the entry of a per-currency list."""
    try:
        number = int(text)
    except ValueError:
        raise ConfigError(f"{variable}: {subject}{text!r} is not an integer") from None
    if not minimum <= number <= maximum:
        raise ConfigError(f"{variable}: {subject}must be in [{minimum}, {maximum}], got {number}")
    return number


def duplicate_window(text: str, variable: str = "DUPLICATE_WINDOW_MS") -> int:
    """The event-time window of duplicate detection: at least 1 ms, at most the largest event time."""
    return _integer(variable, text, 1, MAX_TIMESTAMP_MS)


WORKER_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")


def _worker_id(text: str | None) -> str:
    """The worker's static group membership id; empty means "derive one" (see ``Settings.member_id``)."""
    if text is None:
        return ""
    if WORKER_ID.fullmatch(text) is None:
        raise ConfigError(f"WORKER_ID: expected 1-200 of A-Z, a-z, 0-9, '.', '_', '-', got {text!r}")
    return text


def load_pools(path: str, variable: str = "FUND_POOLS_FILE") -> FundPools:
    """Read and check a pools file (SPEC section 7): TOML, one ``[[pools]]`` table per pool, in the
    order fills are matched; every problem names the pool and the field."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as error:
        raise ConfigError(f"{variable}: cannot read {path}: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{variable}: {path} is not valid TOML: {error}") from None
    unknown = sorted(set(document) - {"pools"})
    if unknown:
        raise ConfigError(
            f"{variable}: {path}: unknown top-level key {unknown[0]!r}; expected [[pools]] tables"
        )
    tables = document.get("pools", [])
    if not isinstance(tables, list) or not all(isinstance(table, dict) for table in tables):
        raise ConfigError(f"{variable}: {path}: 'pools' must be an array of tables ([[pools]])")
    pools: list[Pool] = []
    seen: dict[str, int] = {}
    for number, table in enumerate(tables, start=1):
        pool = _pool(f"{variable}: {path}: pool {number}", table)
        if pool.fund in seen:
            raise ConfigError(
                f"{variable}: {path}: pool {number} ({pool.fund}): field 'fund' repeats pool "
                f"{seen[pool.fund]}"
            )
        seen[pool.fund] = number
        pools.append(pool)
    return FundPools(pools)


def _pool(where: str, table: Mapping[str, object]) -> Pool:
    fund = table.get("fund")
    if not isinstance(fund, str) or POOL_ID.fullmatch(fund) is None:
        raise ConfigError(
            f"{where}: field 'fund' must be a pool id such as USDT-MEME (2-16 of A-Z, 0-9, then '-' or "
            f"'_', then 1-32 of A-Z, 0-9, '_', '-'), got {fund!r}"
        )
    where = f"{where} ({fund})"
    unknown = sorted(set(table) - set(POOL_FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}; expected {', '.join(POOL_FIELDS)}")
    currency = table.get("currency")
    if not isinstance(currency, str) or CURRENCY.fullmatch(currency) is None:
        raise ConfigError(
            f"{where}: field 'currency' must be a margin currency (2-16 of A-Z, 0-9), got {currency!r}"
        )
    symbols = table.get("symbols")
    if (
        not isinstance(symbols, list)
        or not symbols
        or not all(isinstance(symbol, str) and 0 < len(symbol) <= MAX_SYMBOL_LENGTH for symbol in symbols)
    ):
        raise ConfigError(
            f"{where}: field 'symbols' must be a non-empty list of symbols or fnmatch patterns "
            f"(1-{MAX_SYMBOL_LENGTH} characters each), got {symbols!r}"
        )
    initial, floor = (_pool_money(where, name, table.get(name)) for name in ("initial_balance", "floor"))
    since, until = (
        _pool_time(where, name, table.get(name)) for name in ("from_timestamp", "until_timestamp")
    )
    if since is not None and until is not None and since >= until:
        raise ConfigError(
            f"{where}: field 'until_timestamp' ({until}) must be after 'from_timestamp' ({since})"
        )
    return Pool(fund, currency, tuple(symbols), initial, floor, since, until)


def _pool_money(where: str, name: str, value: object) -> Decimal | None:
    """A pool's amount: a decimal string (or a TOML integer); a TOML float is refused, being binary."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(f'{where}: field {name!r} must be a decimal string such as "1000.5", got {value!r}')
    amount = decimal_or_none(str(value))
    if amount is None or not 0 <= amount <= MAX_AMOUNT:
        raise ConfigError(f"{where}: field {name!r} must be a decimal in [0, 10^15], got {value!r}")
    return amount


def _pool_time(where: str, name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TIMESTAMP_MS:
        raise ConfigError(
            f"{where}: field {name!r} must be an event time in milliseconds since the epoch, got {value!r}"
        )
    return value


def fund_rules(
    default_precision: str | None = None,
    precision: str = "",
    default_floor: str | None = None,
    floors: str = "",
    initial_balances: str = "",
    pools_file: str | None = None,
    pools_variable: str = "FUND_POOLS_FILE",
    drawdown: Mapping[str, str] | None = None,
) -> FundRules:
    """Build the fund rules from their textual settings (the ``FUND_*`` variables, or the same flags
    of ``replay``, ``audit``, ``fund`` and ``worker``), each checked against its bounds."""
    pools = load_pools(pools_file, pools_variable) if pools_file else FundPools()
    return FundRules(
        default_precision=(
            _integer("FUND_DEFAULT_PRECISION", default_precision, 0, MAX_PRECISION)
            if default_precision
            else DEFAULT_PRECISION
        ),
        precision={
            currency: _integer("FUND_PRECISION", value, 0, MAX_PRECISION, f"{currency} ")
            for currency, value in _currency_map("FUND_PRECISION", precision).items()
        },
        default_floor=_money("FUND_DEFAULT_FLOOR", default_floor) if default_floor else Decimal(0),
        floor={
            currency: _money("FUND_FLOORS", value, f"{currency} ")
            for currency, value in _currency_map("FUND_FLOORS", floors).items()
        },
        initial_balance={
            currency: _money("FUND_INITIAL_BALANCES", value, f"{currency} ")
            for currency, value in _currency_map("FUND_INITIAL_BALANCES", initial_balances).items()
        },
        pools=pools,
        **drawdown_rules(drawdown or {}, pools),
    )


#: The ADL policy's settings (SPEC section 9): the defaults, and per fund overrides (``FUND=VALUE``).
ADL_VARIABLES = (
    "ADL_DRAWDOWN_START",
    "ADL_DRAWDOWN_STOP",
    "ADL_DRAWDOWN_WINDOW_MS",
    "ADL_DRAWDOWN_STARTS",
    "ADL_DRAWDOWN_STOPS",
    "ADL_DRAWDOWN_WINDOWS_MS",
)


def drawdown_rules(settings: Mapping[str, str], pools: FundPools | None = None) -> dict[str, Any]:
    """The ADL policy of every fund from the ``ADL_DRAWDOWN_*`` settings: off unless a START is set,
    for a fund or for all; each policy checked: 0 < STOP < START < 1 (at most 8 places, the places
    of the published drawdown), a window of at least 1 ms, and no window or override that would be
    ignored (a window without thresholds, a pool the pools file does not define)."""
    start = _ratio("ADL_DRAWDOWN_START", settings.get("ADL_DRAWDOWN_START"))
    stop = _ratio("ADL_DRAWDOWN_STOP", settings.get("ADL_DRAWDOWN_STOP"))
    window_text = settings.get("ADL_DRAWDOWN_WINDOW_MS")
    window = (
        _integer("ADL_DRAWDOWN_WINDOW_MS", window_text, 1, MAX_TIMESTAMP_MS)
        if window_text
        else DEFAULT_DRAWDOWN_WINDOW_MS
    )
    starts = {
        fund: _ratio("ADL_DRAWDOWN_STARTS", value, f"{fund} ")
        for fund, value in _fund_map("ADL_DRAWDOWN_STARTS", settings.get("ADL_DRAWDOWN_STARTS", "")).items()
    }
    stops = {
        fund: _ratio("ADL_DRAWDOWN_STOPS", value, f"{fund} ")
        for fund, value in _fund_map("ADL_DRAWDOWN_STOPS", settings.get("ADL_DRAWDOWN_STOPS", "")).items()
    }
    windows = {
        fund: _integer("ADL_DRAWDOWN_WINDOWS_MS", value, 1, MAX_TIMESTAMP_MS, f"{fund} ")
        for fund, value in _fund_map(
            "ADL_DRAWDOWN_WINDOWS_MS", settings.get("ADL_DRAWDOWN_WINDOWS_MS", "")
        ).items()
    }
    default = _drawdown_policy(
        "ADL_DRAWDOWN_START / ADL_DRAWDOWN_STOP",
        start,
        stop,
        window,
        "ADL_DRAWDOWN_WINDOW_MS" if window_text else None,
    )
    overrides: dict[str, Mapping[str, object]] = {
        "ADL_DRAWDOWN_STARTS": starts,
        "ADL_DRAWDOWN_STOPS": stops,
        "ADL_DRAWDOWN_WINDOWS_MS": windows,
    }
    per_fund = {}
    for fund in sorted(starts.keys() | stops.keys() | windows.keys()):
        if is_pool_id(fund) and (pools is None or fund not in pools.by_fund):
            variable = next(name for name, funds in overrides.items() if fund in funds)
            raise ConfigError(
                f"{variable}: {fund!r} is a pool id the pools file (FUND_POOLS_FILE) does not define"
            )
        policy = _drawdown_policy(
            f"ADL_DRAWDOWN_STARTS / ADL_DRAWDOWN_STOPS for {fund}",
            starts.get(fund, start),
            stops.get(fund, stop),
            windows.get(fund, window),
            f"ADL_DRAWDOWN_WINDOWS_MS ({fund})" if fund in windows else None,
        )
        if policy is not None:
            per_fund[fund] = policy
    return {"default_drawdown": default, "drawdown": per_fund}


def _drawdown_policy(
    names: str, start: Decimal | None, stop: Decimal | None, window: int, window_variable: str | None
) -> DrawdownPolicy | None:
    if start is None and stop is None:
        if window_variable is not None:
            raise ConfigError(
                f"{window_variable}: a window without START and STOP would be ignored; set "
                f"ADL_DRAWDOWN_START and ADL_DRAWDOWN_STOP (or the fund's STARTS / STOPS)"
            )
        return None
    if start is None or stop is None:
        raise ConfigError(f"{names}: set both (START stops paying, STOP resumes), got only one")
    if not 0 < stop < start < 1:
        raise ConfigError(f"{names}: must satisfy 0 < STOP < START < 1, got START {start}, STOP {stop}")
    return DrawdownPolicy(start, stop, window)


def _ratio(variable: str, text: str | None, subject: str = "") -> Decimal | None:
    """A drawdown threshold: a decimal fraction of the peak, such as 0.3 for 30%."""
    if not text:
        return None
    value = _decimal(variable, text, subject)
    exponent = value.as_tuple().exponent
    if not 0 < value < 1 or not isinstance(exponent, int) or exponent < -8:
        raise ConfigError(
            f"{variable}: {subject}must be a fraction in (0, 1) with at most 8 places, such as 0.3, "
            f"got {text}"
        )
    return value


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
    adl_states_topic: str = "insurance-fund-adl-states"
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
    log_format: str = "text"
    connect_timeout_seconds: float = 60.0

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
            adl_states_topic=env.get("ADL_STATES_TOPIC", defaults.adl_states_topic),
            partitions=_integer(
                "TOPIC_PARTITIONS", env.get("TOPIC_PARTITIONS", str(defaults.partitions)), 1, MAX_PARTITIONS
            ),
            replication_factor=_integer(
                "TOPIC_REPLICATION_FACTOR",
                env.get("TOPIC_REPLICATION_FACTOR", str(defaults.replication_factor)),
                1,
                MAX_REPLICATION_FACTOR,
            ),
            worker_id=_worker_id(env.get("WORKER_ID")),
            store=store,
            data_dir=Path(env.get("DATA_DIR", str(defaults.data_dir))),
            web_host=env.get("WEB_HOST", defaults.web_host),
            web_port=_integer("WEB_PORT", env.get("WEB_PORT", str(defaults.web_port)), 0, MAX_PORT),
            batch_size=_integer(
                "BATCH_SIZE", env.get("BATCH_SIZE", str(defaults.batch_size)), 1, MAX_BATCH_SIZE
            ),
            batch_seconds=_seconds(
                "BATCH_SECONDS", env.get("BATCH_SECONDS", str(defaults.batch_seconds)), MAX_BATCH_SECONDS
            ),
            rules=fund_rules(
                default_precision=env.get("FUND_DEFAULT_PRECISION"),
                precision=env.get("FUND_PRECISION", ""),
                default_floor=env.get("FUND_DEFAULT_FLOOR"),
                floors=env.get("FUND_FLOORS", ""),
                initial_balances=env.get("FUND_INITIAL_BALANCES", ""),
                pools_file=env.get("FUND_POOLS_FILE"),
                drawdown={name: env[name] for name in ADL_VARIABLES if name in env},
            ),
            duplicate_window_ms=duplicate_window(
                env.get("DUPLICATE_WINDOW_MS", str(defaults.duplicate_window_ms))
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
            log_format=_choice("LOG_FORMAT", env.get("LOG_FORMAT", defaults.log_format).lower(), LOG_FORMATS),
            connect_timeout_seconds=_seconds(
                "KAFKA_CONNECT_TIMEOUT_SECONDS",
                env.get("KAFKA_CONNECT_TIMEOUT_SECONDS", f"{defaults.connect_timeout_seconds:g}"),
                MAX_CONNECT_TIMEOUT_SECONDS,
            ),
        )
