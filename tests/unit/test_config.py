"""Settings read from an environment mapping, and the Kafka client options built from them."""

from __future__ import annotations

import copy
import dataclasses
import logging
import pprint
import shutil
import ssl
import subprocess
from decimal import Decimal
from pathlib import Path

import faust
import pytest
from aiokafka.protocol.admin import (
    SaslAuthenticateRequest,
    SaslAuthenticateRequest_v1,
    SaslAuthenticateResponse_v1,
)
from faust.types.auth import AuthProtocol, SASLMechanism

from processor.config import ConfigError, KafkaSecurity, Secret, Settings
from processor.domain.ledger import DEFAULT_DUPLICATE_WINDOW_MS
from processor.domain.state import FundRules
from processor.stream.kafka import client_options, faust_credentials

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
    "TABLE_STANDBY_REPLICAS": "1",
    "COMMIT_INTERVAL_SECONDS": "2.5",
    "PROCESSING_GUARANTEE": "exactly_once",
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
    assert (settings.partitions, settings.replication_factor, settings.standby_replicas) == (3, 1, 0)
    assert settings.commit_interval_seconds == 1.0
    assert settings.processing_guarantee == "exactly_once"
    assert (settings.store, settings.data_dir) == ("memory", Path("var/data"))
    assert (settings.web_host, settings.web_port) == ("127.0.0.1", 6066)
    assert (settings.batch_size, settings.batch_seconds) == (2000, 0.05)
    assert settings.rules == FundRules()
    assert settings.rules.default_precision == 8
    assert settings.duplicate_window_ms == DEFAULT_DUPLICATE_WINDOW_MS == 7 * 24 * 3600 * 1000
    assert settings.security == KafkaSecurity()
    assert settings.security.protocol == "PLAINTEXT"
    assert settings.log_level == "info"


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
        standby_replicas=1,
        commit_interval_seconds=2.5,
        processing_guarantee="exactly_once",
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
    )


@pytest.mark.parametrize("variable", sorted(FULL_ENVIRONMENT))
def test_each_variable_changes_its_setting_alone(variable: str) -> None:
    """No variable is ignored, and none leaks into another setting."""
    changed = Settings.from_env({variable: FULL_ENVIRONMENT[variable]})
    if variable == "PROCESSING_GUARANTEE":  # its only accepted value is the default
        assert changed == Settings()
        return
    assert changed != Settings()
    differing = [
        name for name in Settings.__dataclass_fields__ if getattr(changed, name) != getattr(Settings(), name)
    ]
    assert len(differing) == 1, differing


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
        ("TABLE_STANDBY_REPLICAS", "-1"),
        ("COMMIT_INTERVAL_SECONDS", "soon"),
        ("COMMIT_INTERVAL_SECONDS", "NaN"),
        ("PROCESSING_GUARANTEE", "at_least_once"),
        ("STORE", "redis"),
        ("WEB_PORT", "http"),
        ("WEB_PORT", "-1"),
        ("BATCH_SIZE", "0"),
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
        ("COMMIT_INTERVAL_SECONDS", "0"),
        ("COMMIT_INTERVAL_SECONDS", "-5"),
        ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
        ("KAFKA_SECURITY_PROTOCOL", "TLS"),
        ("KAFKA_SASL_MECHANISM", "scram-sha-256"),
        ("LOG_LEVEL", "verbose"),
        ("FUND_FLOORS", "usdt=100"),
    ],
)
def test_bad_value_raises_config_error_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{variable}\b") as raised:
        Settings.from_env({variable: value})
    assert value.partition("=")[2] in str(raised.value) or value in str(raised.value)


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
    """A self-signed certificate (its own CA) with an encrypted private key, made by ``openssl``."""
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


def test_plaintext() -> None:
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"})
    assert client_options(settings) == {"bootstrap_servers": "kafka:9092", "security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings.security) is None


@pytest.mark.parametrize("mechanism", ["PLAIN", None])
def test_sasl_plaintext_plain(mechanism: str | None) -> None:
    settings = Settings.from_env(sasl_environment("SASL_PLAINTEXT", mechanism))
    assert client_options(settings) == {
        "bootstrap_servers": "kafka:9093",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "fund-worker",
        "sasl_plain_password": SASL_PASSWORD,
    }
    credentials = faust_credentials(settings.security)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol is AuthProtocol.SASL_PLAINTEXT
    assert credentials.mechanism is SASLMechanism.PLAIN
    assert (credentials.username, credentials.password) == ("fund-worker", SASL_PASSWORD)
    assert credentials.ssl_context is None
    assert SASL_PASSWORD not in repr(credentials)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_scram(protocol: str, mechanism: str) -> None:
    settings = Settings.from_env(sasl_environment(protocol, mechanism))
    options = client_options(settings)
    context = options.pop("ssl_context", None)
    assert options == {
        "bootstrap_servers": "kafka:9093",
        "security_protocol": protocol,
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "fund-worker",
        "sasl_plain_password": SASL_PASSWORD,
    }
    credentials = faust_credentials(settings.security)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.mechanism is SASLMechanism(mechanism)
    assert (credentials.username, credentials.password) == ("fund-worker", SASL_PASSWORD)
    assert credentials.protocol is AuthProtocol(protocol)
    if protocol == "SASL_SSL":
        assert isinstance(context, ssl.SSLContext)
        assert isinstance(credentials.ssl_context, ssl.SSLContext)
        assert context.verify_mode is ssl.CERT_REQUIRED
        assert context.check_hostname
    else:
        assert context is None
        assert credentials.ssl_context is None


def test_sasl_ssl_with_a_private_ca(certificate: dict[str, str]) -> None:
    environment = sasl_environment("SASL_SSL", "SCRAM-SHA-256") | {
        "KAFKA_SSL_CAFILE": certificate["KAFKA_SSL_CAFILE"]
    }
    settings = Settings.from_env(environment)
    context = client_options(settings)["ssl_context"]
    assert [ca["subject"] for ca in context.get_ca_certs()] == [((("commonName", "localhost"),),)]
    credentials = faust_credentials(settings.security)
    assert credentials.ssl_context.get_ca_certs() == context.get_ca_certs()


def test_ssl_with_client_certificate(certificate: dict[str, str]) -> None:
    settings = Settings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9094", "KAFKA_SECURITY_PROTOCOL": "SSL"} | certificate
    )
    options = client_options(settings)
    context = options.pop("ssl_context")
    assert options == {"bootstrap_servers": "kafka:9094", "security_protocol": "SSL"}
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert [ca["subject"] for ca in context.get_ca_certs()] == [((("commonName", "localhost"),),)]
    credentials = faust_credentials(settings.security)
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.protocol is AuthProtocol.SSL
    assert credentials.context.get_ca_certs() == context.get_ca_certs()
    assert SSL_PASSWORD not in repr(credentials)


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
    with pytest.raises(ConfigError, match="KAFKA_SSL_PASSWORD"):
        faust_credentials(settings.security)


@pytest.mark.parametrize(
    ("environment", "variable"),
    [
        ({"KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "KAFKA_SSL_CAFILE"),
        ({"KAFKA_SSL_KEYFILE": "/etc/kafka/client.key"}, "KAFKA_SSL_KEYFILE"),
        ({"KAFKA_SSL_CERTFILE": "/nonexistent/client.pem"}, "KAFKA_SSL_CERTFILE"),
    ],
)
def test_unusable_tls_files_are_config_errors_naming_the_variable(
    environment: dict[str, str], variable: str
) -> None:
    settings = Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL"} | environment)
    with pytest.raises(ConfigError, match=rf"^{variable}\b"):
        client_options(settings)


def test_a_ca_file_that_is_not_a_certificate_is_a_config_error(certificate: dict[str, str]) -> None:
    settings = Settings.from_env(
        {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": certificate["KAFKA_SSL_KEYFILE"]}
    )
    with pytest.raises(ConfigError, match=r"^KAFKA_SSL_CAFILE\b"):
        client_options(settings)


def test_ssl_without_files_uses_the_system_trust_store() -> None:
    settings = Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL"})
    context = client_options(settings)["ssl_context"]
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert isinstance(faust_credentials(settings.security), faust.SSLCredentials)


@pytest.mark.parametrize("mechanism", ["GSSAPI", "OAUTHBEARER"])
def test_faust_and_aiokafka_never_disagree_on_the_sasl_mechanism(mechanism: str) -> None:
    try:
        settings = Settings.from_env(sasl_environment("SASL_SSL", mechanism))
    except ConfigError as error:
        assert str(error).startswith("KAFKA_SASL_MECHANISM")
        return
    credentials = faust_credentials(settings.security)
    assert credentials.mechanism.value == client_options(settings)["sasl_mechanism"]


@pytest.mark.parametrize("missing", ["KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"])
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_without_credentials_is_a_config_error(protocol: str, missing: str) -> None:
    """Not aiokafka's bare AssertionError, raised in faust's consumer thread for the worker."""
    environment = sasl_environment(protocol, "SCRAM-SHA-256")
    del environment[missing]
    settings = Settings.from_env(environment)
    with pytest.raises(ConfigError, match=r"^KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are required"):
        client_options(settings)
    with pytest.raises(ConfigError, match=r"^KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are required"):
        faust_credentials(settings.security)


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
