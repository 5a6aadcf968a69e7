"""Settings read from an environment mapping, and the Kafka client options built from them."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import pprint
import shutil
import ssl
import subprocess
from collections.abc import Callable
from decimal import Decimal
from operator import attrgetter
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import (
    SaslAuthenticateRequest,
    SaslAuthenticateRequest_v1,
    SaslAuthenticateResponse_v1,
)

from processor.cli import main
from processor.config import ConfigError, KafkaSecurity, Secret, Settings, duplicate_window, fund_rules
from processor.domain.ledger import DEFAULT_DUPLICATE_WINDOW_MS
from processor.domain.state import FundRules
from processor.stream.kafka import client_options

D = Decimal
SASL_PASSWORD = "sasl-pa55word-do-not-print"
SSL_PASSWORD = "ssl-pa55word-do-not-print"

#: Every variable of the README's configuration table, each set to something other than its default.
FULL_ENVIRONMENT = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9093,kafka-2:9093",
    "APP_ID": "fund-prod",
    "INPUT_TOPIC": "fills-in",
    "DELTAS_TOPIC": "deltas-out",
    "ADL_TOPIC": "adl-out",
    "DLQ_TOPIC": "fills-dlq",
    "TOPIC_PARTITIONS": "12",
    "TOPIC_REPLICATION_FACTOR": "3",
    "WORKER_ID": "fund-worker-eu.1",
    "STORE": "rocksdb",
    "DATA_DIR": "/var/lib/insurance-fund",
    "WEB_HOST": "0.0.0.0",
    "WEB_PORT": "8080",
    "BATCH_SIZE": "500",
    "BATCH_SECONDS": "0.2",
    "FUND_DEFAULT_PRECISION": "6",
    "FUND_PRECISION": "BTC=10, ETH=9",
    "FUND_DEFAULT_FLOOR": "10",
    "FUND_FLOORS": "USDT=1000.5",
    "FUND_INITIAL_BALANCES": "USDT=250000,BTC=12.5",
    "DUPLICATE_WINDOW_MS": "86400000",
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "fund-worker",
    "KAFKA_SASL_PASSWORD": SASL_PASSWORD,
    "KAFKA_SSL_CAFILE": "/etc/kafka/ca.pem",
    "KAFKA_SSL_CERTFILE": "/etc/kafka/client.pem",
    "KAFKA_SSL_KEYFILE": "/etc/kafka/client.key",
    "KAFKA_SSL_PASSWORD": SSL_PASSWORD,
    "LOG_LEVEL": "debug",
    "LOG_FORMAT": "json",
    "KAFKA_CONNECT_TIMEOUT_SECONDS": "15",
}

#: Variables the faust-based worker read and the aiokafka one does not.
DROPPED_VARIABLES = {
    "TABLE_STANDBY_REPLICAS": "1",
    "COMMIT_INTERVAL_SECONDS": "2.5",
    "PROCESSING_GUARANTEE": "exactly_once",
}


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.app_id == "insurance-fund"
    assert (settings.input_topic, settings.deltas_topic, settings.adl_topic, settings.dlq_topic) == (
        "liquidation-fills",
        "insurance-fund-deltas",
        "adl-triggers",
        "liquidation-fills-dlq",
    )
    assert (settings.partitions, settings.replication_factor) == (3, 1)
    assert settings.worker_id == ""
    assert (settings.store, settings.data_dir) == ("memory", Path("var/data"))
    assert (settings.web_host, settings.web_port) == ("127.0.0.1", 6066)
    assert (settings.batch_size, settings.batch_seconds) == (5000, 0.05)
    assert settings.rules == FundRules()
    assert settings.rules.default_precision == 8
    assert settings.duplicate_window_ms == DEFAULT_DUPLICATE_WINDOW_MS == 7 * 24 * 3600 * 1000
    assert settings.security == KafkaSecurity()
    assert settings.security.protocol == "PLAINTEXT"
    assert settings.log_level == "info"
    assert settings.log_format == "text"
    assert settings.connect_timeout_seconds == 60.0


def test_every_variable_is_read() -> None:
    assert Settings.from_env(FULL_ENVIRONMENT) == Settings(
        bootstrap_servers="kafka-1:9093,kafka-2:9093",
        app_id="fund-prod",
        input_topic="fills-in",
        deltas_topic="deltas-out",
        adl_topic="adl-out",
        dlq_topic="fills-dlq",
        partitions=12,
        replication_factor=3,
        worker_id="fund-worker-eu.1",
        store="rocksdb",
        data_dir=Path("/var/lib/insurance-fund"),
        web_host="0.0.0.0",
        web_port=8080,
        batch_size=500,
        batch_seconds=0.2,
        rules=FundRules(
            default_precision=6,
            precision={"BTC": 10, "ETH": 9},
            default_floor=D("10"),
            floor={"USDT": D("1000.5")},
            initial_balance={"USDT": D("250000"), "BTC": D("12.5")},
        ),
        duplicate_window_ms=86_400_000,
        security=KafkaSecurity(
            protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="fund-worker",
            sasl_password=SASL_PASSWORD,
            ssl_cafile="/etc/kafka/ca.pem",
            ssl_certfile="/etc/kafka/client.pem",
            ssl_keyfile="/etc/kafka/client.key",
            ssl_password=SSL_PASSWORD,
        ),
        log_level="debug",
        log_format="json",
        connect_timeout_seconds=15.0,
    )


@pytest.mark.parametrize("variable", sorted(FULL_ENVIRONMENT))
def test_each_variable_changes_its_setting_alone(variable: str) -> None:
    """No variable is ignored, and none leaks into another setting."""
    changed = Settings.from_env({variable: FULL_ENVIRONMENT[variable]})
    assert changed != Settings()
    differing = [
        name for name in Settings.__dataclass_fields__ if getattr(changed, name) != getattr(Settings(), name)
    ]
    assert len(differing) == 1, differing


@pytest.mark.parametrize(
    "environment",
    [
        DROPPED_VARIABLES,
        {"PROCESSING_GUARANTEE": "at_least_once"},
        {"COMMIT_INTERVAL_SECONDS": "soon"},
        {"TABLE_STANDBY_REPLICAS": "-1"},
    ],
)
def test_dropped_variables_are_no_longer_read(environment: dict[str, str]) -> None:
    """An environment written for the faust-based worker still starts the aiokafka one."""
    assert Settings.from_env(environment) == Settings()
    assert Settings.from_env(FULL_ENVIRONMENT | environment) == Settings.from_env(FULL_ENVIRONMENT)
    assert not {"standby_replicas", "commit_interval_seconds", "processing_guarantee"} & set(
        Settings.__dataclass_fields__
    )


def test_fund_rules_apply_per_currency() -> None:
    rules = Settings.from_env(FULL_ENVIRONMENT).rules
    usdt, btc, sol = rules.policy_for("USDT"), rules.policy_for("BTC"), rules.policy_for("SOL")
    assert (usdt.quantum, usdt.floor, usdt.initial_balance) == (D("0.000001"), D("1000.5"), D("250000"))
    assert (btc.quantum, btc.floor, btc.initial_balance) == (D("1E-10"), D("10"), D("12.5"))
    assert (sol.quantum, sol.floor, sol.initial_balance) == (D("0.000001"), D("10"), D("0"))


def test_empty_values_count_as_unset() -> None:
    assert Settings.from_env(dict.fromkeys(FULL_ENVIRONMENT, "")) == Settings()


def test_from_env_reads_only_the_mapping_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("KAFKA_BOOTSTRAP_SERVERS", "APP_ID", "TOPIC_PARTITIONS", "STORE", "KAFKA_SASL_PASSWORD"):
        monkeypatch.setenv(variable, FULL_ENVIRONMENT[variable])
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env({"APP_ID": "mine"}) == Settings(app_id="mine")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TOPIC_PARTITIONS", "0"),
        ("TOPIC_PARTITIONS", "three"),
        ("TOPIC_PARTITIONS", "1.5"),
        ("TOPIC_REPLICATION_FACTOR", "0"),
        ("STORE", "redis"),
        ("WEB_PORT", "http"),
        ("WEB_PORT", "-1"),
        ("BATCH_SIZE", "0"),
        ("BATCH_SIZE", "100001"),
        ("BATCH_SIZE", "-5"),
        ("BATCH_SIZE", "5k"),
        ("WORKER_ID", "worker 1"),
        ("WORKER_ID", "host/1"),
        ("WORKER_ID", "w\u00f6rker"),
        ("WORKER_ID", "a:b"),
        ("WORKER_ID", "x" * 201),
        ("BATCH_SECONDS", "Infinity"),
        ("FUND_DEFAULT_PRECISION", "-1"),
        ("FUND_DEFAULT_PRECISION", "eight"),
        ("FUND_PRECISION", "USDT"),
        ("FUND_PRECISION", "USDT=eight"),
        ("FUND_PRECISION", "=8"),
        ("FUND_PRECISION", "USDT=-2"),
        ("FUND_DEFAULT_FLOOR", "none"),
        ("FUND_FLOORS", "USDT=lots"),
        ("FUND_FLOORS", "USDT=Infinity"),
        ("FUND_INITIAL_BALANCES", "USDT=NaN"),
        ("FUND_INITIAL_BALANCES", "USDT:5"),
        ("DUPLICATE_WINDOW_MS", "-1"),
        ("DUPLICATE_WINDOW_MS", "7d"),
        ("WEB_PORT", "70000"),
        ("BATCH_SECONDS", "-1"),
        ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
        ("KAFKA_SECURITY_PROTOCOL", "TLS"),
        ("KAFKA_SASL_MECHANISM", "scram-sha-256"),
        ("LOG_LEVEL", "verbose"),
        ("FUND_FLOORS", "usdt=100"),
        ("LOG_FORMAT", "xml"),
        ("LOG_FORMAT", "logfmt"),
        ("KAFKA_CONNECT_TIMEOUT_SECONDS", "soon"),
        ("KAFKA_CONNECT_TIMEOUT_SECONDS", "NaN"),
        ("KAFKA_CONNECT_TIMEOUT_SECONDS", "-1"),
        ("FUND_PRECISION", "BTC=19"),
        ("FUND_FLOORS", "USDT=-1"),
        ("FUND_INITIAL_BALANCES", "USDT=2e15"),
    ],
)
def test_bad_value_raises_config_error_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{variable}\b") as raised:
        Settings.from_env({variable: value})
    assert value.partition("=")[2] in str(raised.value) or value in str(raised.value)


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("5000", 5000), ("100000", 100_000)])
def test_batch_size_bounds_are_inclusive(value: str, expected: int) -> None:
    assert Settings.from_env({"BATCH_SIZE": value}).batch_size == expected


def test_batch_size_error_states_the_range() -> None:
    with pytest.raises(ConfigError, match=r"^BATCH_SIZE: must be in \[1, 100000\], got 100001$"):
        Settings.from_env({"BATCH_SIZE": "100001"})


# --- bounds of the numeric settings (the README's configuration table) -------------------------------------

MAX_INT64 = 2**63 - 1

#: Each numeric variable at its bounds and just inside them, with the setting it becomes.
WITHIN_BOUNDS: list[tuple[str, str, Callable[[Settings], object], object]] = [
    ("TOPIC_PARTITIONS", "1", attrgetter("partitions"), 1),
    ("TOPIC_PARTITIONS", "2", attrgetter("partitions"), 2),
    ("TOPIC_PARTITIONS", "9999", attrgetter("partitions"), 9999),
    ("TOPIC_PARTITIONS", "10000", attrgetter("partitions"), 10_000),
    ("TOPIC_REPLICATION_FACTOR", "1", attrgetter("replication_factor"), 1),
    ("TOPIC_REPLICATION_FACTOR", "2", attrgetter("replication_factor"), 2),
    ("TOPIC_REPLICATION_FACTOR", "31", attrgetter("replication_factor"), 31),
    ("TOPIC_REPLICATION_FACTOR", "32", attrgetter("replication_factor"), 32),
    ("WEB_PORT", "0", attrgetter("web_port"), 0),
    ("WEB_PORT", "1", attrgetter("web_port"), 1),
    ("WEB_PORT", "65534", attrgetter("web_port"), 65534),
    ("WEB_PORT", "65535", attrgetter("web_port"), 65535),
    ("BATCH_SIZE", "1", attrgetter("batch_size"), 1),
    ("BATCH_SIZE", "2", attrgetter("batch_size"), 2),
    ("BATCH_SIZE", "99999", attrgetter("batch_size"), 99_999),
    ("BATCH_SIZE", "100000", attrgetter("batch_size"), 100_000),
    ("BATCH_SECONDS", "0.000001", attrgetter("batch_seconds"), 0.000001),
    ("BATCH_SECONDS", "59.999", attrgetter("batch_seconds"), 59.999),
    ("BATCH_SECONDS", "60", attrgetter("batch_seconds"), 60.0),
    ("KAFKA_CONNECT_TIMEOUT_SECONDS", "0.001", attrgetter("connect_timeout_seconds"), 0.001),
    ("KAFKA_CONNECT_TIMEOUT_SECONDS", "1", attrgetter("connect_timeout_seconds"), 1.0),
    ("KAFKA_CONNECT_TIMEOUT_SECONDS", "3599.999", attrgetter("connect_timeout_seconds"), 3599.999),
    ("KAFKA_CONNECT_TIMEOUT_SECONDS", "3600", attrgetter("connect_timeout_seconds"), 3600.0),
    ("DUPLICATE_WINDOW_MS", "1", attrgetter("duplicate_window_ms"), 1),
    ("DUPLICATE_WINDOW_MS", "2", attrgetter("duplicate_window_ms"), 2),
    ("DUPLICATE_WINDOW_MS", str(MAX_INT64 - 1), attrgetter("duplicate_window_ms"), MAX_INT64 - 1),
    ("DUPLICATE_WINDOW_MS", str(MAX_INT64), attrgetter("duplicate_window_ms"), MAX_INT64),
    ("FUND_DEFAULT_PRECISION", "0", attrgetter("rules.default_precision"), 0),
    ("FUND_DEFAULT_PRECISION", "1", attrgetter("rules.default_precision"), 1),
    ("FUND_DEFAULT_PRECISION", "17", attrgetter("rules.default_precision"), 17),
    ("FUND_DEFAULT_PRECISION", "18", attrgetter("rules.default_precision"), 18),
    ("FUND_PRECISION", "BTC=0", attrgetter("rules.precision"), {"BTC": 0}),
    ("FUND_PRECISION", "BTC=1", attrgetter("rules.precision"), {"BTC": 1}),
    ("FUND_PRECISION", "BTC=17,ETH=18", attrgetter("rules.precision"), {"BTC": 17, "ETH": 18}),
    ("FUND_DEFAULT_FLOOR", "0", attrgetter("rules.default_floor"), D(0)),
    ("FUND_DEFAULT_FLOOR", "-0", attrgetter("rules.default_floor"), D(0)),
    ("FUND_DEFAULT_FLOOR", "0.000000000000000001", attrgetter("rules.default_floor"), D("1e-18")),
    ("FUND_DEFAULT_FLOOR", "999999999999999.99", attrgetter("rules.default_floor"), D("999999999999999.99")),
    ("FUND_DEFAULT_FLOOR", "1000000000000000", attrgetter("rules.default_floor"), D(10**15)),
    ("FUND_DEFAULT_FLOOR", "1e15", attrgetter("rules.default_floor"), D(10**15)),
    ("FUND_FLOORS", "USDT=0,BTC=1000000000000000", attrgetter("rules.floor"), {"USDT": 0, "BTC": D(10**15)}),
    (
        "FUND_FLOORS",
        "USDT=0.01,BTC=999999999999999.99",
        attrgetter("rules.floor"),
        {
            "USDT": D("0.01"),
            "BTC": D("999999999999999.99"),
        },
    ),
    (
        "FUND_INITIAL_BALANCES",
        "USDT=0,BTC=1E+15",
        attrgetter("rules.initial_balance"),
        {
            "USDT": 0,
            "BTC": D(10**15),
        },
    ),
    (
        "FUND_INITIAL_BALANCES",
        "USDT=0.00000001,BTC=999999999999999",
        attrgetter("rules.initial_balance"),
        {
            "USDT": D("1e-8"),
            "BTC": D(10**15 - 1),
        },
    ),
]


@pytest.mark.parametrize(("variable", "value", "setting", "expected"), WITHIN_BOUNDS)
def test_values_at_and_just_inside_the_bounds_are_accepted(
    variable: str, value: str, setting: Callable[[Settings], object], expected: object
) -> None:
    assert setting(Settings.from_env({variable: value})) == expected


#: Each numeric variable just outside its bounds, with the whole message: variable, bound and value.
OUTSIDE_BOUNDS = [
    ("TOPIC_PARTITIONS", "0", "TOPIC_PARTITIONS: must be in [1, 10000], got 0"),
    ("TOPIC_PARTITIONS", "10001", "TOPIC_PARTITIONS: must be in [1, 10000], got 10001"),
    ("TOPIC_REPLICATION_FACTOR", "0", "TOPIC_REPLICATION_FACTOR: must be in [1, 32], got 0"),
    ("TOPIC_REPLICATION_FACTOR", "33", "TOPIC_REPLICATION_FACTOR: must be in [1, 32], got 33"),
    ("WEB_PORT", "-1", "WEB_PORT: must be in [0, 65535], got -1"),
    ("WEB_PORT", "65536", "WEB_PORT: must be in [0, 65535], got 65536"),
    ("BATCH_SIZE", "0", "BATCH_SIZE: must be in [1, 100000], got 0"),
    ("BATCH_SIZE", "100001", "BATCH_SIZE: must be in [1, 100000], got 100001"),
    ("BATCH_SECONDS", "0", "BATCH_SECONDS: must be > 0 and <= 60, got 0"),
    ("BATCH_SECONDS", "-0.000001", "BATCH_SECONDS: must be > 0 and <= 60, got -0.000001"),
    ("BATCH_SECONDS", "1e-400", "BATCH_SECONDS: must be > 0 and <= 60, got 1e-400"),  # 0.0 as a float
    ("BATCH_SECONDS", "60.001", "BATCH_SECONDS: must be > 0 and <= 60, got 60.001"),
    ("BATCH_SECONDS", "1e400", "BATCH_SECONDS: must be > 0 and <= 60, got 1e400"),  # inf as a float
    ("KAFKA_CONNECT_TIMEOUT_SECONDS", "0", "KAFKA_CONNECT_TIMEOUT_SECONDS: must be > 0 and <= 3600, got 0"),
    (
        "KAFKA_CONNECT_TIMEOUT_SECONDS",
        "3600.001",
        "KAFKA_CONNECT_TIMEOUT_SECONDS: must be > 0 and <= 3600, got 3600.001",
    ),
    ("DUPLICATE_WINDOW_MS", "0", f"DUPLICATE_WINDOW_MS: must be in [1, {MAX_INT64}], got 0"),
    ("DUPLICATE_WINDOW_MS", "-1", f"DUPLICATE_WINDOW_MS: must be in [1, {MAX_INT64}], got -1"),
    (
        "DUPLICATE_WINDOW_MS",
        str(MAX_INT64 + 1),
        f"DUPLICATE_WINDOW_MS: must be in [1, {MAX_INT64}], got {MAX_INT64 + 1}",
    ),
    ("FUND_DEFAULT_PRECISION", "-1", "FUND_DEFAULT_PRECISION: must be in [0, 18], got -1"),
    ("FUND_DEFAULT_PRECISION", "19", "FUND_DEFAULT_PRECISION: must be in [0, 18], got 19"),
    ("FUND_PRECISION", "BTC=-1", "FUND_PRECISION: BTC must be in [0, 18], got -1"),
    ("FUND_PRECISION", "BTC=10,ETH=19", "FUND_PRECISION: ETH must be in [0, 18], got 19"),
    (
        "FUND_DEFAULT_FLOOR",
        "-0.000000000000000001",
        "FUND_DEFAULT_FLOOR: must be in [0, 10^15], got -0.000000000000000001",
    ),
    ("FUND_DEFAULT_FLOOR", "-1", "FUND_DEFAULT_FLOOR: must be in [0, 10^15], got -1"),
    (
        "FUND_DEFAULT_FLOOR",
        "1000000000000000.000000000000000001",
        "FUND_DEFAULT_FLOOR: must be in [0, 10^15], got 1000000000000000.000000000000000001",
    ),
    ("FUND_DEFAULT_FLOOR", "1e16", "FUND_DEFAULT_FLOOR: must be in [0, 10^15], got 1e16"),
    ("FUND_FLOORS", "USDT=-0.01", "FUND_FLOORS: USDT must be in [0, 10^15], got -0.01"),
    (
        "FUND_FLOORS",
        "USDT=0,BTC=1000000000000001",
        "FUND_FLOORS: BTC must be in [0, 10^15], got 1000000000000001",
    ),
    (
        "FUND_INITIAL_BALANCES",
        "USDT=-0.00000001",
        "FUND_INITIAL_BALANCES: USDT must be in [0, 10^15], got -0.00000001",
    ),
    (
        "FUND_INITIAL_BALANCES",
        "BTC=1.000001E+15",
        "FUND_INITIAL_BALANCES: BTC must be in [0, 10^15], got 1.000001E+15",
    ),
]


@pytest.mark.parametrize(("variable", "value", "message"), OUTSIDE_BOUNDS)
def test_values_just_outside_the_bounds_are_config_errors_naming_variable_bound_and_value(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({variable: value})
    assert str(raised.value) == message


def test_every_numeric_variable_has_its_bounds_tested() -> None:
    numeric = {
        "TOPIC_PARTITIONS",
        "TOPIC_REPLICATION_FACTOR",
        "WEB_PORT",
        "BATCH_SIZE",
        "BATCH_SECONDS",
        "KAFKA_CONNECT_TIMEOUT_SECONDS",
        "DUPLICATE_WINDOW_MS",
        "FUND_DEFAULT_PRECISION",
        "FUND_PRECISION",
        "FUND_DEFAULT_FLOOR",
        "FUND_FLOORS",
        "FUND_INITIAL_BALANCES",
    }
    assert {case[0] for case in WITHIN_BOUNDS} == {case[0] for case in OUTSIDE_BOUNDS} == numeric


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"default_precision": "19"}, "FUND_DEFAULT_PRECISION: must be in [0, 18], got 19"),
        ({"precision": "BTC=-1"}, "FUND_PRECISION: BTC must be in [0, 18], got -1"),
        ({"default_floor": "-5"}, "FUND_DEFAULT_FLOOR: must be in [0, 10^15], got -5"),
        ({"floors": "USDT=2e15"}, "FUND_FLOORS: USDT must be in [0, 10^15], got 2e15"),
        ({"initial_balances": "USDT=-1"}, "FUND_INITIAL_BALANCES: USDT must be in [0, 10^15], got -1"),
        (
            {"initial_balances": "USDT=Infinity"},
            "FUND_INITIAL_BALANCES: USDT 'Infinity' is not a finite decimal",
        ),
    ],
)
def test_fund_rules_checks_the_bounds_for_the_command_line_flags_too(
    arguments: dict[str, str], message: str
) -> None:
    """``--default-precision``, ``--precision``, ``--default-floor``, ``--floor`` and
    ``--initial-balance`` of ``replay``, ``audit`` and ``worker`` go through ``fund_rules``."""
    with pytest.raises(ConfigError) as raised:
        fund_rules(**arguments)
    assert str(raised.value) == message


@pytest.mark.parametrize("command", ["replay", "worker", "audit"])
@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--default-precision", "19", "FUND_DEFAULT_PRECISION: must be in [0, 18], got 19"),
        ("--precision", "BTC=-1", "FUND_PRECISION: BTC must be in [0, 18], got -1"),
        ("--default-floor", "-5", "FUND_DEFAULT_FLOOR: must be in [0, 10^15], got -5"),
        ("--floor", "USDT=2e15", "FUND_FLOORS: USDT must be in [0, 10^15], got 2e15"),
        ("--initial-balance", "USDT=-1", "FUND_INITIAL_BALANCES: USDT must be in [0, 10^15], got -1"),
    ],
)
def test_fund_rule_flags_out_of_bounds_stop_the_command_before_it_starts(
    command: str,
    flag: str,
    value: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for variable in FULL_ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    arguments = [command, f"{flag}={value}"]
    if command == "replay":
        (tmp_path / "fills.jsonl").write_bytes(b"")
        arguments += ["--input", str(tmp_path / "fills.jsonl")]
    try:
        assert main(arguments) == 2
    finally:
        for handler in set(root.handlers) - set(handlers):
            root.removeHandler(handler)
        root.setLevel(level)
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {message}"


def test_duplicate_window_names_the_variable_or_flag_it_is_given() -> None:
    assert duplicate_window("86400000") == 86_400_000
    with pytest.raises(ConfigError, match=rf"^--duplicate-window-ms: must be in \[1, {MAX_INT64}\], got 0$"):
        duplicate_window("0", "--duplicate-window-ms")


@pytest.mark.parametrize(("value", "expected"), [("text", "text"), ("json", "json"), ("JSON", "json")])
def test_log_format(value: str, expected: str) -> None:
    assert Settings.from_env({"LOG_FORMAT": value}).log_format == expected


def test_log_format_error_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"^LOG_FORMAT: expected one of text, json, got 'xml'$"):
        Settings.from_env({"LOG_FORMAT": "xml"})


def test_connect_timeout_default_and_value() -> None:
    assert Settings.from_env({}).connect_timeout_seconds == 60.0
    assert Settings.from_env({"KAFKA_CONNECT_TIMEOUT_SECONDS": "2.5"}).connect_timeout_seconds == 2.5
    with pytest.raises(ConfigError, match=r"^KAFKA_CONNECT_TIMEOUT_SECONDS: 'soon' is not a finite decimal$"):
        Settings.from_env({"KAFKA_CONNECT_TIMEOUT_SECONDS": "soon"})


@pytest.mark.parametrize(
    "value", ["w", "worker-1", "fund_worker.eu-west-1", "0", "...", "A" * 200, "Az09._-"]
)
def test_worker_id_accepts_1_to_200_of_its_alphabet(value: str) -> None:
    settings = Settings.from_env({"WORKER_ID": value})
    assert settings.worker_id == value
    assert settings == Settings(worker_id=value)


@pytest.mark.parametrize(
    "value", ["worker-1\n", "\nworker-1", " worker-1", "worker-1 ", "worker\t1", "x" * 201, "\u0661"]
)
def test_worker_id_is_matched_whole(value: str) -> None:
    """No trailing newline, padding or non-ASCII digit slips through (``fullmatch``, not ``match``)."""
    with pytest.raises(ConfigError, match=r"^WORKER_ID: "):
        Settings.from_env({"WORKER_ID": value})


def test_empty_worker_id_means_derived() -> None:
    assert Settings.from_env({"WORKER_ID": ""}).worker_id == ""
    assert Settings.from_env({"WORKER_ID": "", "WEB_PORT": "7001"}).member_id("node-a") == "node-a-7001"


def test_member_id_is_the_worker_id_when_set() -> None:
    settings = Settings.from_env({"WORKER_ID": "fund-worker-1", "WEB_PORT": "7001"})
    assert settings.member_id("node-a") == settings.member_id("node-b") == "fund-worker-1"


def test_member_id_is_derived_from_the_host_and_web_port() -> None:
    assert Settings().member_id("node-a") == "node-a-6066"
    assert Settings(web_port=8080).member_id("node-a") == "node-a-8080"
    # stable across restarts of one worker, distinct for two workers on one host or one port on two hosts
    assert Settings(web_port=8080).member_id("node-a") == Settings(web_port=8080).member_id("node-a")
    assert Settings(web_port=8081).member_id("node-a") != Settings(web_port=8080).member_id("node-a")
    assert Settings(web_port=8080).member_id("node-b") != Settings(web_port=8080).member_id("node-a")


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_passwords_never_appear_in_repr() -> None:
    settings = Settings.from_env(FULL_ENVIRONMENT)
    for text in (repr(settings), str(settings), repr(settings.security), f"{settings}"):
        assert SASL_PASSWORD not in text
        assert SSL_PASSWORD not in text
    assert "fund-worker" in repr(settings)  # the username is fine to show
    assert settings.security.sasl_password == SASL_PASSWORD
    assert settings.security.ssl_password == SSL_PASSWORD


def test_settings_replace() -> None:
    settings = Settings().replace(app_id="other", partitions=6)
    assert (settings.app_id, settings.partitions, settings.input_topic) == ("other", 6, "liquidation-fills")


# --- Kafka client options ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A self-signed certificate for ``localhost`` (its own CA) with an encrypted private key, made by
    ``openssl``; it serves as the broker's certificate and as the client's."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "client.pem", directory / "client.key"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-passout",
            f"pass:{SSL_PASSWORD}",
        ],
        check=True,
        capture_output=True,
    )
    return {
        "KAFKA_SSL_CAFILE": str(cert),
        "KAFKA_SSL_CERTFILE": str(cert),
        "KAFKA_SSL_KEYFILE": str(key),
        "KAFKA_SSL_PASSWORD": SSL_PASSWORD,
    }


def broker_context(certificate: dict[str, str]) -> ssl.SSLContext:
    """A broker's side of TLS: presents ``certificate`` and requires a client certificate it signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate["KAFKA_SSL_CERTFILE"], certificate["KAFKA_SSL_KEYFILE"], SSL_PASSWORD)
    context.load_verify_locations(certificate["KAFKA_SSL_CAFILE"])
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def handshake(client: ssl.SSLContext, broker: ssl.SSLContext, host: str = "localhost") -> dict[str, Any]:
    """Run a TLS handshake in memory; return the certificate the broker saw from the client."""
    to_broker, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_end = client.wrap_bio(to_client, to_broker, server_hostname=host)
    broker_in, broker_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    broker_end = broker.wrap_bio(broker_in, broker_out, server_side=True)
    client_done = broker_done = False
    for _ in range(10):
        if not client_done:
            try:
                client_end.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        broker_in.write(to_broker.read())
        if not broker_done:
            try:
                broker_end.do_handshake()
                broker_done = True
            except ssl.SSLWantReadError:
                pass
        to_client.write(broker_out.read())
        if client_done and broker_done:
            return broker_end.getpeercert() or {}
    raise AssertionError("the TLS handshake did not finish")


def sasl_environment(protocol: str, mechanism: str | None) -> dict[str, str]:
    environment = {
        "KAFKA_BOOTSTRAP_SERVERS": "kafka:9093",
        "KAFKA_SECURITY_PROTOCOL": protocol,
        "KAFKA_SASL_USERNAME": "fund-worker",
        "KAFKA_SASL_PASSWORD": SASL_PASSWORD,
    }
    if mechanism is not None:
        environment["KAFKA_SASL_MECHANISM"] = mechanism
    return environment


def assert_verifies_the_broker(context: object) -> None:
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_plaintext() -> None:
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"})
    assert client_options(settings) == {"bootstrap_servers": "kafka:9092", "security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["PLAIN", None])
def test_sasl_plaintext_plain(mechanism: str | None) -> None:
    """PLAIN is the mechanism when none is named."""
    options = client_options(Settings.from_env(sasl_environment("SASL_PLAINTEXT", mechanism)))
    assert options == {
        "bootstrap_servers": "kafka:9093",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "fund-worker",
        "sasl_plain_password": SASL_PASSWORD,
    }
    assert isinstance(options["sasl_plain_password"], Secret)
    assert SASL_PASSWORD not in repr(options)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_scram(protocol: str, mechanism: str) -> None:
    options = client_options(Settings.from_env(sasl_environment(protocol, mechanism)))
    context = options.pop("ssl_context", None)
    assert options == {
        "bootstrap_servers": "kafka:9093",
        "security_protocol": protocol,
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "fund-worker",
        "sasl_plain_password": SASL_PASSWORD,
    }
    if protocol == "SASL_SSL":
        assert_verifies_the_broker(context)
    else:
        assert context is None


def test_sasl_ssl_with_a_private_ca(certificate: dict[str, str]) -> None:
    environment = sasl_environment("SASL_SSL", "SCRAM-SHA-256") | {
        "KAFKA_SSL_CAFILE": certificate["KAFKA_SSL_CAFILE"]
    }
    context = client_options(Settings.from_env(environment))["ssl_context"]
    assert_verifies_the_broker(context)
    assert [ca["subject"] for ca in context.get_ca_certs()] == [((("commonName", "localhost"),),)]


def test_ssl_with_client_certificate(certificate: dict[str, str]) -> None:
    settings = Settings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9094", "KAFKA_SECURITY_PROTOCOL": "SSL"} | certificate
    )
    options = client_options(settings)
    context = options.pop("ssl_context")
    assert options == {"bootstrap_servers": "kafka:9094", "security_protocol": "SSL"}
    assert_verifies_the_broker(context)
    assert [ca["subject"] for ca in context.get_ca_certs()] == [((("commonName", "localhost"),),)]
    assert SSL_PASSWORD not in repr(options) + repr(context)


def test_the_client_certificate_is_presented_to_the_broker(certificate: dict[str, str]) -> None:
    context = client_options(Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL"} | certificate))[
        "ssl_context"
    ]
    seen = handshake(context, broker_context(certificate))
    assert seen["subject"] == ((("commonName", "localhost"),),)


def test_without_a_client_certificate_a_broker_requiring_one_refuses(certificate: dict[str, str]) -> None:
    """The control for the test above: the handshake does check for a client certificate."""
    environment = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": certificate["KAFKA_SSL_CAFILE"]}
    context = client_options(Settings.from_env(environment))["ssl_context"]
    with pytest.raises(ssl.SSLError, match=r"(?i)peer did not return a certificate"):
        handshake(context, broker_context(certificate))


def test_a_broker_not_named_by_its_certificate_is_refused(certificate: dict[str, str]) -> None:
    context = client_options(Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL"} | certificate))[
        "ssl_context"
    ]
    with pytest.raises(ssl.SSLCertVerificationError, match=r"[Hh]ostname mismatch"):
        handshake(context, broker_context(certificate), host="kafka.example.com")


def test_a_broker_signed_by_another_ca_is_refused(certificate: dict[str, str]) -> None:
    """Without KAFKA_SSL_CAFILE only the system's CAs are trusted, and they did not sign the broker."""
    context = client_options(Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL"}))["ssl_context"]
    with pytest.raises(ssl.SSLCertVerificationError, match=r"self[- ]signed"):
        handshake(context, broker_context(certificate))


def test_ssl_key_password_is_used(certificate: dict[str, str]) -> None:
    wrong = Settings.from_env(
        {"KAFKA_SECURITY_PROTOCOL": "SSL"} | certificate | {"KAFKA_SSL_PASSWORD": "not-the-password"}
    )
    with pytest.raises(ConfigError, match="KAFKA_SSL_PASSWORD") as raised:
        client_options(wrong)
    assert "not-the-password" not in str(raised.value)


def test_an_encrypted_key_without_its_password_is_a_config_error_not_a_prompt(
    certificate: dict[str, str],
) -> None:
    """OpenSSL would ask for the pass phrase on the terminal: a hang with one, EINVAL without."""
    settings = Settings.from_env(
        {"KAFKA_SECURITY_PROTOCOL": "SSL"} | certificate | {"KAFKA_SSL_PASSWORD": ""}
    )
    with pytest.raises(ConfigError, match=r"^KAFKA_SSL_KEYFILE: .*encrypted.*KAFKA_SSL_PASSWORD"):
        client_options(settings)


@pytest.mark.parametrize(
    ("environment", "variable"),
    [
        ({"KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "KAFKA_SSL_CAFILE"),
        ({"KAFKA_SSL_KEYFILE": "/etc/kafka/client.key"}, "KAFKA_SSL_KEYFILE"),
        ({"KAFKA_SSL_CERTFILE": "/nonexistent/client.pem"}, "KAFKA_SSL_CERTFILE"),
    ],
)
@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_unusable_tls_files_are_config_errors_naming_the_variable(
    environment: dict[str, str], variable: str, protocol: str
) -> None:
    settings = Settings.from_env(sasl_environment(protocol, None) | environment)
    with pytest.raises(ConfigError, match=rf"^{variable}\b"):
        client_options(settings)


def test_tls_files_are_ignored_without_tls(certificate: dict[str, str]) -> None:
    """Only SSL and SASL_SSL load them: a plaintext client neither needs nor checks them."""
    environment = {"KAFKA_SSL_CAFILE": "/nonexistent/ca.pem", "KAFKA_SSL_KEYFILE": "/nonexistent/key"}
    assert "ssl_context" not in client_options(Settings.from_env(environment))
    assert "ssl_context" not in client_options(
        Settings.from_env(sasl_environment("SASL_PLAINTEXT", None) | certificate)
    )


def test_a_ca_file_that_is_not_a_certificate_is_a_config_error(certificate: dict[str, str]) -> None:
    settings = Settings.from_env(
        {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": certificate["KAFKA_SSL_KEYFILE"]}
    )
    with pytest.raises(ConfigError, match=r"^KAFKA_SSL_CAFILE\b"):
        client_options(settings)


def test_ssl_without_files_uses_the_system_trust_store() -> None:
    context = client_options(Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL"}))["ssl_context"]
    assert_verifies_the_broker(context)
    assert context.get_ca_certs() == ssl.create_default_context().get_ca_certs()


@pytest.mark.parametrize("mechanism", ["GSSAPI", "OAUTHBEARER", "scram-sha-256", "SCRAM-SHA-1"])
def test_unsupported_sasl_mechanisms_are_config_errors(mechanism: str) -> None:
    """aiokafka would take GSSAPI and OAUTHBEARER, which need settings (Kerberos, a token provider) the
    worker does not have; names are matched exactly."""
    with pytest.raises(ConfigError, match=r"^KAFKA_SASL_MECHANISM\b"):
        Settings.from_env(sasl_environment("SASL_SSL", mechanism))


@pytest.mark.parametrize("missing", ["KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"])
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_sasl_without_credentials_is_a_config_error(protocol: str, missing: str, mechanism: str) -> None:
    """Not aiokafka's ValueError for PLAIN, nor a failed authentication at the broker for SCRAM."""
    environment = sasl_environment(protocol, mechanism)
    del environment[missing]
    settings = Settings.from_env(environment)
    with pytest.raises(ConfigError, match=r"^KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are required"):
        client_options(settings)


@pytest.mark.parametrize(
    "environment",
    [
        {},
        sasl_environment("SASL_PLAINTEXT", None),
        sasl_environment("SASL_PLAINTEXT", "SCRAM-SHA-512"),
        sasl_environment("SASL_SSL", "PLAIN"),
        sasl_environment("SASL_SSL", "SCRAM-SHA-256"),
        {"KAFKA_SECURITY_PROTOCOL": "SSL"},
    ],
)
def test_aiokafka_accepts_the_options(environment: dict[str, str]) -> None:
    """Every client is built from ``client_options``: aiokafka checks them when one is constructed."""
    options = client_options(Settings.from_env(environment))

    async def construct() -> None:
        admin = AIOKafkaAdminClient(**options)
        await admin.close()

    asyncio.run(construct())


# --- secrets stay out of dumps and logs ------------------------------------------------------------------


def test_passwords_are_secrets_equal_to_their_text_but_redacted_in_any_repr() -> None:
    settings = Settings.from_env(FULL_ENVIRONMENT)
    security = settings.security
    assert isinstance(security.sasl_password, Secret)
    assert isinstance(security.ssl_password, Secret)
    assert security.sasl_password == SASL_PASSWORD
    assert f"{security.sasl_password}" == str(security.sasl_password) == SASL_PASSWORD  # usable as text
    assert repr(security.sasl_password) == "'<redacted>'"
    sasl_options = client_options(Settings.from_env(sasl_environment("SASL_PLAINTEXT", "PLAIN")))
    dumps = [
        repr(dataclasses.asdict(settings)),
        str(dataclasses.asdict(settings)),
        pprint.pformat(settings),
        repr(vars(security)),
        repr(copy.deepcopy(settings)),
        repr(settings.replace(app_id="other")),
        repr(sasl_options),
        str(sasl_options),
    ]
    for text in dumps:
        assert SASL_PASSWORD not in text
        assert SSL_PASSWORD not in text


def test_passwords_given_to_the_constructor_become_secrets() -> None:
    security = KafkaSecurity(sasl_password="typed-in", ssl_password="also-typed-in")
    assert isinstance(security.sasl_password, Secret)
    assert isinstance(security.ssl_password, Secret)
    assert security == KafkaSecurity(sasl_password=Secret("typed-in"), ssl_password="also-typed-in")
    assert "typed-in" not in repr(dataclasses.asdict(security))
    assert KafkaSecurity().sasl_password is None


def test_aiokafka_debug_log_of_the_sasl_exchange_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    """aiokafka logs every request at debug level; for PLAIN the SASL bytes hold the password."""
    client_options(Settings.from_env(sasl_environment("SASL_PLAINTEXT", "PLAIN")))  # installs the filter
    payload = b"\x00fund-worker\x00" + SASL_PASSWORD.encode()
    request = SaslAuthenticateRequest(payload).build(SaslAuthenticateRequest_v1)
    response = SaslAuthenticateResponse_v1(0, "", payload, 0)
    conn_log = logging.getLogger("aiokafka.conn")
    with caplog.at_level(logging.DEBUG, logger="aiokafka.conn"):
        conn_log.debug("Request to %s:%d %d: %s", "kafka", 9093, 3, request)
        conn_log.debug("Response from %s:%d %d: %s", "kafka", 9093, 3, response)
        conn_log.debug("Request to %s:%d %d: %s", "kafka", 9093, 4, "MetadataRequest_v1(topics=[])")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "Request to kafka:9093 3: SaslAuthenticateRequest_v1(<redacted>)",
        "Response from kafka:9093 3: SaslAuthenticateResponse_v1(<redacted>)",
        "Request to kafka:9093 4: MetadataRequest_v1(topics=[])",
    ]
    assert SASL_PASSWORD not in caplog.text
