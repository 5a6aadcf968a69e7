"""``replay --topic`` and ``audit`` with ``--jobs``: several processes give the same bytes as one,
whether each fund lives on one partition or its fills are spread over several."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from testkit.broker import create_topics, produce, read_all, unique
from testkit.reference import FileReplay, by_fund, keyed_by_currency
from testkit.worker import WorkerConfig
from tests.golden.regenerate import GOLDEN, rules_of, settings_of
from tests.integration.test_replay_audit import cli, run
from tests.integration.test_worker import golden_messages
from tests.strategies import BASE_TIMESTAMP, seed_bytes

OUTPUTS = ("state.json", "deltas.jsonl", "adl.jsonl", "dlq.jsonl", "adl_states.jsonl")
REPLAY_STARTED_MS = 1_700_000_999_000


def keyed_by_symbol(messages: list[bytes]) -> list[tuple[bytes | None, bytes | None]]:
    """Each fund's fills spread over the partitions (the key a producer keyed by symbol gives)."""
    keyed = []
    for message in messages:
        try:
            symbol = orjson.loads(message).get("symbol")
        except (orjson.JSONDecodeError, AttributeError):
            symbol = None
        keyed.append((symbol.encode() if isinstance(symbol, str) else None, message))
    return keyed


def replay(config: WorkerConfig, out: Path, *extra: str, monkeypatch: pytest.MonkeyPatch) -> int:
    flags = ("--state-out", "--deltas-out", "--adl-out", "--dlq-out", "--adl-states-out")
    files = [
        argument for flag, name in zip(flags, OUTPUTS, strict=True) for argument in (flag, str(out / name))
    ]
    topic = config.input_topic
    return cli(config, "replay", "--topic", topic, "--quiet", *files, *extra, monkeypatch=monkeypatch)


def audits(
    config: WorkerConfig, topic: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> list[tuple[int, str]]:
    """``audit --deltas-topic topic`` with ``--jobs 1`` and ``--jobs 2``: exit code and output of each."""
    verdicts = []
    for jobs in ("1", "2"):
        code = cli(config, "audit", "--deltas-topic", topic, "--jobs", jobs, monkeypatch=monkeypatch)
        verdicts.append((code, capsys.readouterr().out))
    return verdicts


@pytest.mark.parametrize(
    ("scenario", "keys"),
    [("crash", "currency"), ("crash", "symbol"), ("pools", "currency"), ("drawdown", "currency")],
)
def test_two_processes_write_the_bytes_one_writes(
    worker_config: WorkerConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    scenario: str,
    keys: str,
) -> None:
    """Byte for byte, every output file, dead letters included (a replay stamps them with the time
    it began); by currency each fund is folded in one process, by symbol the funds span the
    partitions and the replay folds them again in one."""
    monkeypatch.setattr("processor.stream.replay.wall_clock_ms", lambda: REPLAY_STARTED_MS)
    caplog.set_level(logging.INFO, logger="processor.stream.parallel")
    worker_config.extra_env.update(settings_of(GOLDEN / scenario))
    messages = golden_messages(scenario)
    rules = rules_of(GOLDEN / scenario)
    records = keyed_by_currency(messages, rules.pools) if keys == "currency" else keyed_by_symbol(messages)
    run(create_topics(worker_config.bootstrap, [worker_config.input_topic], partitions=4))
    run(produce(worker_config.bootstrap, worker_config.input_topic, records))

    for jobs in ("1", "2"):
        assert replay(worker_config, tmp_path / jobs, "--jobs", jobs, monkeypatch=monkeypatch) == 0
    for name in OUTPUTS:
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes(), name

    deltas = (tmp_path / "2" / "deltas.jsonl").read_bytes().splitlines()
    expected = FileReplay(messages, rules)
    assert len(deltas) == len(expected.deltas)
    assert orjson.loads((tmp_path / "2" / "state.json").read_bytes()).keys() == expected.states.keys()
    folded_again = "folding" in caplog.text
    if keys == "currency":  # each fund's input order is the file's: the same deltas
        assert by_fund(deltas) == by_fund(expected.deltas)
        assert orjson.loads((tmp_path / "2" / "state.json").read_bytes()) == expected.states
        assert not folded_again
    else:
        assert folded_again


def test_a_refused_withdrawal_in_another_group_is_folded_again_with_its_fund(
    worker_config: WorkerConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A withdrawal read apart from its fund's fills is refused there (an unseen fund has nothing),
    leaving the ledger as it was: the group still counts as touching the fund, and is folded again
    with it, so the withdrawal applies as in one process."""
    monkeypatch.setattr("processor.stream.replay.wall_clock_ms", lambda: REPLAY_STARTED_MS)
    caplog.set_level(logging.INFO, logger="processor.stream.parallel")
    withdrawal = orjson.dumps(
        {"type": "withdrawal", "operation_id": "op-1", "fund": "USDT", "amount": "300",
         "requested_by": "treasury:test", "timestamp": BASE_TIMESTAMP + 10}
    )  # fmt: skip
    placed = {
        0: [seed_bytes(fill_id=f"usdt-{n}", timestamp=BASE_TIMESTAMP + n) for n in range(3)],  # +598.5
        1: [
            seed_bytes(fill_id=f"btc-{n}", margin_currency="BTC", symbol="BTCUSD", fee="0") for n in range(2)
        ],
        2: [withdrawal],
    }
    run(create_topics(worker_config.bootstrap, [worker_config.input_topic], partitions=3))
    for partition, messages in placed.items():  # groups: 0 / 1, 2
        records = [(b"USDT", message) for message in messages]
        run(produce(worker_config.bootstrap, worker_config.input_topic, records, partition=partition))

    for jobs in ("1", "2"):
        assert replay(worker_config, tmp_path / jobs, "--jobs", jobs, monkeypatch=monkeypatch) == 0
    for name in OUTPUTS:
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes(), name
    assert "folding" in caplog.text
    assert (tmp_path / "2" / "dlq.jsonl").read_bytes() == b""
    assert orjson.loads((tmp_path / "2" / "state.json").read_bytes())["USDT"]["balance"] == "298.50000000"


def test_parallel_replay_publishes_and_audits_like_one_process(
    worker_config: WorkerConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--emit-prefix`` with two processes publishes each output topic in one process's order;
    ``audit --jobs 2`` passes on that ledger and names the same tampered delta as ``--jobs 1``."""
    worker_config.extra_env.update(settings_of(GOLDEN / "crash"))
    messages = golden_messages("crash")
    run(create_topics(worker_config.bootstrap, [worker_config.input_topic], partitions=4))
    run(produce(worker_config.bootstrap, worker_config.input_topic, keyed_by_currency(messages)))
    prefix = unique("ledger") + "."
    assert replay(worker_config, tmp_path / "1", "--jobs", "1", monkeypatch=monkeypatch) == 0
    assert (
        replay(worker_config, tmp_path / "2", "--jobs", "2", "--emit-prefix", prefix, monkeypatch=monkeypatch)
        == 0
    )
    ledger_topic = prefix + worker_config.deltas_topic
    written = (tmp_path / "1" / "deltas.jsonl").read_bytes().splitlines()
    published = run(read_all(worker_config.bootstrap, ledger_topic, len(written)))
    assert by_fund([value for _, value, _ in published]) == by_fund(written)
    assert all(key == orjson.loads(value)["fund"].encode() for key, value, _ in published)

    verdicts = audits(worker_config, ledger_topic, capsys, monkeypatch)
    assert verdicts[0] == verdicts[1]
    assert verdicts[0][0] == 0 and "PASS" in verdicts[0][1]

    tampered = unique(ledger_topic + "-tampered")
    altered = []
    for key, value, _ in published:
        delta = orjson.loads(value or b"")
        if delta["fund"] == "USDT" and delta["sequence"] == 42:
            delta["amount"] = "1.00000000"
        altered.append((key, orjson.dumps(delta)))
    run(create_topics(worker_config.bootstrap, [tampered], partitions=3))
    run(produce(worker_config.bootstrap, tampered, altered))
    verdicts = audits(worker_config, tampered, capsys, monkeypatch)
    assert verdicts[0] == verdicts[1]
    assert verdicts[0][0] == 3
    assert verdicts[0][1].splitlines()[-1].startswith("FAIL: fund USDT sequence 42:")
