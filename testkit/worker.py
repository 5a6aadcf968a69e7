"""Run the real worker (``python -m processor worker``) as a subprocess against a test broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from processor import codec
from testkit.broker import ROOT, free_port, unique


@dataclass
class WorkerConfig:
    """One test's topics, group and settings; every worker started from it shares them."""

    bootstrap: str
    scratch: Path
    app_id: str = field(default_factory=lambda: unique("fund-test"))
    suffix: str = field(default_factory=lambda: unique("t"))
    partitions: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    #: how many times each worker name has been started, so that every incarnation logs to its own file
    starts: Counter[str] = field(default_factory=Counter, repr=False, compare=False)

    @property
    def input_topic(self) -> str:
        return f"fills-{self.suffix}"

    @property
    def deltas_topic(self) -> str:
        return f"deltas-{self.suffix}"

    @property
    def adl_topic(self) -> str:
        return f"adl-{self.suffix}"

    @property
    def dlq_topic(self) -> str:
        return f"dlq-{self.suffix}"

    @property
    def adl_states_topic(self) -> str:
        return f"adl-states-{self.suffix}"

    def worker_id(self, name: str) -> str:
        """The static group member id of the worker called ``name``: the same across its restarts."""
        return f"{self.app_id}-{name}"

    def env(self, web_port: int, name: str) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "APP_ID": self.app_id,
            "WORKER_ID": self.worker_id(name),
            "INPUT_TOPIC": self.input_topic,
            "DELTAS_TOPIC": self.deltas_topic,
            "ADL_TOPIC": self.adl_topic,
            "DLQ_TOPIC": self.dlq_topic,
            "ADL_STATES_TOPIC": self.adl_states_topic,
            "TOPIC_PARTITIONS": str(self.partitions),
            "WEB_PORT": str(web_port),
            "DATA_DIR": str(self.scratch / f"data-{name}"),
            "LOG_LEVEL": "warning",
            **self.extra_env,
        }


class RunningWorker:
    """One incarnation of the worker called ``name``. Starting the same name again (after a stop or a
    kill) is a restart: same ``WORKER_ID`` (static membership) and data directory, a new log file."""

    def __init__(self, config: WorkerConfig, name: str = "w1") -> None:
        self.name = name
        self.worker_id = config.worker_id(name)
        config.starts[name] += 1
        self.incarnation = config.starts[name]
        self.port = free_port()
        self.log_path = config.scratch / f"worker-{name}-{self.incarnation}.log"
        self._log = self.log_path.open("wb")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "processor", "worker"],
            cwd=ROOT,
            env=config.env(self.port, name),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def healthy(self) -> bool:
        try:
            return self.get("/health", timeout=2.0)[0] == 200
        except OSError:
            return False

    def wait_healthy(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log()}")
            if self.healthy():
                return
            time.sleep(0.1)
        raise AssertionError(f"worker not healthy after {timeout}s:\n{self.log()}")

    def funds(self) -> dict[str, dict[str, object]]:
        status, body = self.get("/funds")
        assert status == 200, body
        return codec.loads(body)

    def metric(self, name: str) -> float:
        status, body = self.get("/metrics")
        assert status == 200
        for line in body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"metric {name} not exposed")

    def events(self) -> float | None:
        """``insurance_fund_events_total`` of this incarnation, ``None`` while its HTTP server is not up."""
        try:
            return self.metric("insurance_fund_events_total")
        except (OSError, AssertionError):
            return None

    def owned_partitions(self) -> int | None:
        """``insurance_fund_owned_partitions``: how many input partitions this incarnation owns now."""
        try:
            return int(self.metric("insurance_fund_owned_partitions"))
        except (OSError, AssertionError):
            return None

    def stop(self, timeout: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]
