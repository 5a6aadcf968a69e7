"""The real worker with ``LOG_FORMAT=json``: every line it writes is one JSON object, even at debug level."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.generate import lines as generated_lines
from processor import codec
from testkit.broker import produce, read_all
from testkit.reference import keyed_by_currency
from testkit.worker import RunningWorker, WorkerConfig

FIELDS = {"time", "level", "logger", "message"}


def test_worker_logs_one_json_object_per_line(worker_config: WorkerConfig, start_worker: Any) -> None:
    worker_config.partitions = 2
    worker_config.extra_env.update({"LOG_FORMAT": "json", "LOG_LEVEL": "debug"})
    messages = list(generated_lines(40, seed=14))
    worker: RunningWorker = start_worker()
    asyncio.run(produce(worker_config.bootstrap, worker_config.input_topic, keyed_by_currency(messages)))
    deltas = asyncio.run(read_all(worker_config.bootstrap, worker_config.deltas_topic, len(messages)))
    assert deltas, worker.log()
    worker.stop()
    assert worker.process.returncode == 0, worker.log()

    lines = [line for line in worker.log_path.read_text().splitlines() if line.strip()]
    assert len(lines) > 10, worker.log()  # debug level: aiokafka alone says plenty
    loggers = set()
    for number, line in enumerate(lines, 1):
        try:
            document = codec.loads(line)
        except ValueError as error:
            raise AssertionError(f"line {number} is not JSON ({error}): {line!r}") from None
        assert isinstance(document, dict), line
        assert set(document) >= FIELDS, line
        assert all(isinstance(document[name], str) for name in FIELDS), line
        loggers.add(document["logger"])
    assert any(name.startswith("processor.") for name in loggers), loggers
    assert any(name.startswith("aiokafka") for name in loggers), loggers
