"""Integration fixtures: one real broker per session, one set of topics and one group per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.broker import kafka_broker
from testkit.worker import RunningWorker, WorkerConfig


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with kafka_broker(tmp_path_factory.mktemp("kafka")) as bootstrap:
        yield bootstrap


@pytest.fixture
def worker_config(kafka_bootstrap: str, tmp_path: Path) -> WorkerConfig:
    return WorkerConfig(bootstrap=kafka_bootstrap, scratch=tmp_path)


@pytest.fixture
def start_worker(worker_config: WorkerConfig) -> Iterator[object]:
    started: list[RunningWorker] = []

    def start(name: str = "w1", config: WorkerConfig | None = None) -> RunningWorker:
        worker = RunningWorker(config or worker_config, name)
        started.append(worker)
        worker.wait_healthy()
        return worker

    yield start
    for worker in started:
        worker.kill()
