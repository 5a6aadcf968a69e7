"""Topic replay and audit against a real broker: replay equals the live ledger, audit catches tampering."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from processor.cli import main
from processor.stream.produce import key_of
from testkit.broker import create_topics, produce, read_all, unique
from testkit.reference import FileReplay, by_fund
from testkit.worker import RunningWorker, WorkerConfig
from tests.integration.test_worker import GOLDEN_RULES, GOLDEN_RULES_ENV, golden_messages

INITIAL = "USDT=250000,BTC=1.5"


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def cli(config: WorkerConfig, *args: str, monkeypatch: pytest.MonkeyPatch) -> int:
    for name, value in config.env(0, "cli").items():
        monkeypatch.setenv(name, value)
    return main(list(args))


@pytest.fixture
def live_run(
    worker_config: WorkerConfig, start_worker: Any
) -> tuple[WorkerConfig, RunningWorker, list[bytes]]:
    """The golden scenario processed by a live worker, input keyed by currency on 3 partitions."""
    worker_config.partitions = 3
    worker_config.extra_env.update(GOLDEN_RULES_ENV)
    messages = golden_messages()
    worker: RunningWorker = start_worker()
    run(produce(worker_config.bootstrap, worker_config.input_topic, [(key_of(m), m) for m in messages]))
    expected = FileReplay(messages, GOLDEN_RULES)
    run(read_all(worker_config.bootstrap, worker_config.deltas_topic, len(expected.deltas)))
    return worker_config, worker, messages


def test_topic_replay_equals_live_deltas_byte_for_byte(
    live_run: tuple[WorkerConfig, RunningWorker, list[bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, worker, _ = live_run
    out = tmp_path / "replay"
    code = cli(
        config, "replay", "--topic", config.input_topic, "--from-beginning", "--initial-balance", INITIAL,
        "--state-out", str(out / "state.json"), "--deltas-out", str(out / "deltas.jsonl"),
        "--adl-out", str(out / "adl.jsonl"), "--dlq-out", str(out / "dlq.jsonl"), "--emit-prefix", "replay.",
        monkeypatch=monkeypatch,
    )  # fmt: skip
    assert code == 0
    live = [v for _, v, _ in run(read_all(config.bootstrap, config.deltas_topic))]
    replayed = (out / "deltas.jsonl").read_bytes().splitlines()
    assert by_fund(replayed) == by_fund(live)
    assert orjson.loads((out / "state.json").read_bytes()) == worker.funds()
    emitted = [v for _, v, _ in run(read_all(config.bootstrap, "replay." + config.deltas_topic, len(live)))]
    assert by_fund(emitted) == by_fund(live)


def test_point_in_time_states_match_prefixes(
    worker_config: WorkerConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = golden_messages()
    run(create_topics(worker_config.bootstrap, [worker_config.input_topic], partitions=2))
    producer_records = [(key_of(m), m) for m in messages]
    run(produce(worker_config.bootstrap, worker_config.input_topic, producer_records))
    valid = [orjson.loads(m) for m in messages if m.startswith(b"{") and b'"timestamp":17' in m]
    moment = sorted(v["timestamp"] for v in valid)[len(valid) // 2]

    state = tmp_path / "until.json"
    assert cli(
        worker_config, "replay", "--topic", worker_config.input_topic, "--until-timestamp", str(moment),
        "--initial-balance", INITIAL, "--state-out", str(state), monkeypatch=monkeypatch,
    ) == 0  # fmt: skip

    def at_or_before(message: bytes) -> bool:
        try:
            timestamp = orjson.loads(message).get("timestamp")
        except (orjson.JSONDecodeError, AttributeError):
            return True
        return not isinstance(timestamp, int) or timestamp <= moment

    expected = FileReplay([m for m in messages if at_or_before(m)], GOLDEN_RULES)
    assert orjson.loads(state.read_bytes()) == expected.states
    assert all(fund["last_timestamp"] <= moment for fund in expected.states.values())

    offsets = tmp_path / "offsets.json"
    assert cli(
        worker_config, "replay", "--topic", worker_config.input_topic, "--from-offsets", "0:99999,1:99999",
        "--state-out", str(offsets), monkeypatch=monkeypatch,
    ) == 0  # fmt: skip
    assert orjson.loads(offsets.read_bytes()) == {}  # past the end: nothing to replay


def _copy_ledger(config: WorkerConfig, tamper: Any) -> str:
    records = run(read_all(config.bootstrap, config.deltas_topic))
    copy = unique(config.deltas_topic + "-copy")
    run(create_topics(config.bootstrap, [copy], partitions=3))
    tampered = tamper([(key, value) for key, value, _ in records])
    run(produce(config.bootstrap, copy, tampered))
    return copy


def _usdt_index(records: list[tuple[bytes | None, bytes | None]], sequence: int) -> int:
    return next(
        i for i, (_, value) in enumerate(records) if b'"fund":"USDT"' in (value or b"") and
        orjson.loads(value or b"{}")["sequence"] == sequence
    )  # fmt: skip


def test_audit_passes_on_a_healthy_run_and_names_the_tampered_sequence(
    live_run: tuple[WorkerConfig, RunningWorker, list[bytes]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, worker, _ = live_run
    assert (
        cli(
            config, "audit", "--worker-url", worker.url, "--initial-balance", INITIAL, monkeypatch=monkeypatch
        )
        == 0
    )
    assert "PASS" in capsys.readouterr().out

    def altered(records: list[tuple[bytes | None, bytes | None]]) -> list[tuple[bytes | None, bytes | None]]:
        i = _usdt_index(records, 42)
        delta = orjson.loads(records[i][1] or b"")
        delta["amount"] = "1.00000000"
        return [*records[:i], (records[i][0], orjson.dumps(delta)), *records[i + 1 :]]

    def dropped(records: list[tuple[bytes | None, bytes | None]]) -> list[tuple[bytes | None, bytes | None]]:
        i = _usdt_index(records, 57)
        return [*records[:i], *records[i + 1 :]]

    def duplicated(
        records: list[tuple[bytes | None, bytes | None]],
    ) -> list[tuple[bytes | None, bytes | None]]:
        i = _usdt_index(records, 99)
        return [*records[: i + 1], records[i], *records[i + 1 :]]

    for tamper, sequence in ((altered, 42), (dropped, 57), (duplicated, 99)):
        copy = _copy_ledger(config, tamper)
        code = cli(
            config, "audit", "--deltas-topic", copy, "--initial-balance", INITIAL, monkeypatch=monkeypatch
        )  # fmt: skip
        verdict = capsys.readouterr().out.strip().splitlines()[-1]
        assert code == 3, verdict
        assert verdict.startswith(f"FAIL: fund USDT sequence {sequence}:"), verdict


def test_rebuild_under_a_new_application_version_equals_the_old_state(
    live_run: tuple[WorkerConfig, RunningWorker, list[bytes]], start_worker: Any
) -> None:
    """The README's rebuild procedure: a new APP_ID with prefixed outputs replays history into new tables."""
    config, old, _ = live_run
    rebuilt_config = WorkerConfig(
        bootstrap=config.bootstrap,
        scratch=config.scratch,
        suffix=config.suffix,
        partitions=config.partitions,
        extra_env={
            **config.extra_env,
            "DELTAS_TOPIC": "v2." + config.deltas_topic,
            "ADL_TOPIC": "v2." + config.adl_topic,
            "DLQ_TOPIC": "v2." + config.dlq_topic,
        },
    )
    rebuilt: RunningWorker = start_worker("v2", rebuilt_config)
    live = [v for _, v, _ in run(read_all(config.bootstrap, config.deltas_topic))]
    again = [v for _, v, _ in run(read_all(config.bootstrap, "v2." + config.deltas_topic, len(live)))]
    assert by_fund(again) == by_fund(live)
    assert rebuilt.funds() == old.funds()
