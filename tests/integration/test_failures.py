"""Expected failures end in one ``error:`` line naming the setting, with the documented exit code:
2 for a bad setting or argument, 1 for an unreachable or refusing broker. And a worker started
before its broker waits for it."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.generate import lines as generated_lines
from testkit.broker import JarBroker, free_port, produce, read_all, unique
from testkit.cli import assert_one_error_line, run_cli
from testkit.reference import keyed_by_currency
from testkit.worker import RunningWorker, WorkerConfig

CLOSED = "127.0.0.1:1"  # nothing listens on port 1


def command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={"LOG_LEVEL": "error", **(env or {})}, timeout=60)


@pytest.fixture
def fills_file(tmp_path: Path) -> Path:
    path = tmp_path / "fills.jsonl"
    path.write_bytes(b"\n".join(generated_lines(5)) + b"\n")
    return path


UNREACHABLE = {"KAFKA_BOOTSTRAP_SERVERS": CLOSED, "KAFKA_CONNECT_TIMEOUT_SECONDS": "1"}


@pytest.mark.parametrize(
    "args",
    [
        ("produce", "--input", "FILLS"),
        ("replay", "--topic", "liquidation-fills"),
        ("audit",),
        ("demo",),
    ],
    ids=["produce", "replay", "audit", "demo"],
)
def test_an_unreachable_broker_is_one_error_line_naming_the_setting(
    args: tuple[str, ...], fills_file: Path
) -> None:
    started = time.monotonic()
    result = command(*(str(fills_file) if arg == "FILLS" else arg for arg in args), env=UNREACHABLE)
    assert_one_error_line(result, 1, "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:1", "KAFKA_CONNECT_TIMEOUT_SECONDS")
    assert time.monotonic() - started < 30


def test_a_worker_gives_up_on_an_unreachable_broker_after_the_timeout(tmp_path: Path) -> None:
    env = UNREACHABLE | {"WEB_PORT": str(free_port()), "DATA_DIR": str(tmp_path)}
    assert_one_error_line(
        command("worker", env=env), 1, "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_CONNECT_TIMEOUT_SECONDS"
    )


def test_web_port_in_use_is_a_setting_error(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = UNREACHABLE | {"WEB_PORT": str(port), "DATA_DIR": str(tmp_path)}
        assert_one_error_line(command("worker", env=env), 2, "WEB_PORT", str(port))


@pytest.mark.parametrize("command_name", ["replay", "produce"])
def test_an_unreadable_input_file_is_an_argument_error(command_name: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    result = command(command_name, "--input", str(missing), env=UNREACHABLE)
    assert_one_error_line(result, 2, "--input", str(missing))
    result = command(command_name, "--input", str(tmp_path), env=UNREACHABLE)  # a directory
    assert_one_error_line(result, 2, "--input", str(tmp_path))


def test_a_bad_setting_is_a_setting_error() -> None:
    assert_one_error_line(
        command("replay", "--input", "-", env={"FUND_PRECISION": "USDT=x"}), 2, "FUND_PRECISION"
    )


def test_replaying_a_topic_that_does_not_exist_is_an_argument_error(kafka_bootstrap: str) -> None:
    topic = unique("no-such-topic")
    result = command("replay", "--topic", topic, env={"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap})
    assert_one_error_line(result, 2, topic)


@pytest.fixture
def late_broker(tmp_path: Path) -> Iterator[JarBroker]:
    broker = JarBroker(tmp_path / "late-broker")
    try:
        yield broker
    finally:
        broker.down(purge=True)


def test_a_worker_started_before_its_broker_waits_and_then_processes_input(
    late_broker: JarBroker, tmp_path: Path
) -> None:
    config = WorkerConfig(
        bootstrap=late_broker.bootstrap,
        scratch=tmp_path,
        extra_env={"KAFKA_CONNECT_TIMEOUT_SECONDS": "120", "LOG_LEVEL": "info"},
    )
    worker = RunningWorker(config, "early")
    try:
        time.sleep(3)
        status, body = worker.get("/health")
        assert status == 503 and b'"starting"' in body and b"waiting for the broker" in body, body
        time.sleep(7)  # the broker comes 10 s after the worker
        late_broker.up()
        worker.wait_healthy(120)
        fills = list(generated_lines(30, seed=4))
        asyncio.run(produce(late_broker.bootstrap, config.input_topic, keyed_by_currency(fills)))
        deltas = asyncio.run(read_all(late_broker.bootstrap, config.deltas_topic, 30))
        assert len(deltas) == 30
        log = worker.log_path.read_text(errors="replace")
        assert "waiting for the broker at" in log and "(attempt 1:" in log
    finally:
        worker.stop()
