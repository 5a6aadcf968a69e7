"""The worker against a real broker: outputs equal the file replay, state survives restarts."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.generate import lines as generated_lines
from processor import codec
from processor.domain.state import FundRules
from testkit.broker import create_topics, produce, read_all
from testkit.reference import FileReplay, by_fund, keyed_by_currency
from testkit.worker import RunningWorker, WorkerConfig
from tests.golden.regenerate import GOLDEN, rules_of, settings_of

GOLDEN_RULES_ENV = {"FUND_INITIAL_BALANCES": "USDT=250000,BTC=1.5"}
GOLDEN_RULES = FundRules(initial_balance={"USDT": Decimal("250000"), "BTC": Decimal("1.5")})


def dead_letter_essence(letter: dict[str, Any]) -> tuple[str, str, str | None]:
    return letter["error"], letter["detail"], letter.get("value")


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def golden_messages(scenario: str = "crash") -> list[bytes]:
    return (GOLDEN / scenario / "input.jsonl").read_bytes().splitlines()


@pytest.mark.parametrize("scenario", ["crash", "pools", "drawdown"])
def test_recorded_scenario_matches_file_replay_byte_for_byte(
    worker_config: WorkerConfig, start_worker: Any, scenario: str
) -> None:
    """The golden scenarios (pools: two pools, top-ups, withdrawals, one refused, a transfer;
    drawdown: the ADL policy into drawdown and back) through a worker equal their file replay, and so
    their recorded outputs."""
    worker_config.partitions = 3
    worker_config.extra_env.update(settings_of(GOLDEN / scenario))
    rules = rules_of(GOLDEN / scenario)
    messages = golden_messages(scenario)
    expected = FileReplay(messages, rules)
    recorded = (GOLDEN / scenario / "expected" / "deltas.jsonl").read_bytes().splitlines()
    assert expected.deltas == recorded
    worker: RunningWorker = start_worker()
    run(produce(worker_config.bootstrap, worker_config.input_topic, keyed_by_currency(messages, rules.pools)))

    deltas = [
        value
        for _, value, _ in run(
            read_all(worker_config.bootstrap, worker_config.deltas_topic, len(expected.deltas))
        )
    ]
    triggers = [
        value
        for _, value, _ in run(
            read_all(worker_config.bootstrap, worker_config.adl_topic, len(expected.triggers))
        )
    ]
    letters = run(read_all(worker_config.bootstrap, worker_config.dlq_topic, len(expected.dead_letters)))

    assert by_fund(deltas) == by_fund(expected.deltas)  # same bytes, same order within each fund
    assert sorted(triggers) == sorted(expected.triggers)  # keyed by symbol: a fund's triggers span partitions
    got_letters = [orjson.loads(value) for _, value, _ in letters]
    assert sorted(map(dead_letter_essence, got_letters)) == sorted(
        map(dead_letter_essence, expected.dead_letters)
    )
    assert all(letter["source_topic"] == worker_config.input_topic for letter in got_letters)
    assert worker.funds() == expected.states
    if expected.adl_states:
        states = run(
            read_all(worker_config.bootstrap, worker_config.adl_states_topic, len(expected.adl_states))
        )
        assert by_fund([value for _, value, _ in states]) == by_fund(expected.adl_states)


def test_input_keyed_by_symbol_is_repartitioned_and_ledgers_chain(
    worker_config: WorkerConfig, start_worker: Any
) -> None:
    worker_config.partitions = 4
    initial = "USDT=100000000,BTC=100000,ETH=100000,USDC=100000000"
    worker_config.extra_env["FUND_INITIAL_BALANCES"] = initial
    rules = FundRules(initial_balance={c: Decimal(v) for c, v in (p.split("=") for p in initial.split(","))})
    messages = list(generated_lines(3000, seed=5))
    expected = FileReplay(messages, rules)
    run(create_topics(worker_config.bootstrap, [worker_config.input_topic], partitions=4))
    worker: RunningWorker = start_worker()
    keyed = [(orjson.loads(message)["symbol"].encode(), message) for message in messages]
    run(produce(worker_config.bootstrap, worker_config.input_topic, keyed))

    deltas = [
        orjson.loads(v)
        for _, v, _ in run(
            read_all(worker_config.bootstrap, worker_config.deltas_topic, len(expected.deltas))
        )
    ]
    assert len(deltas) == len(expected.deltas)
    ledgers: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for delta in deltas:
        ledgers[delta["fund"]].append(delta)
    for fund, ledger in ledgers.items():
        assert [d["sequence"] for d in ledger] == list(range(1, len(ledger) + 1)), fund
        for previous, current in pairwise(ledger):
            assert current["balance_before"] == previous["balance_after"], (fund, current["sequence"])
        assert all(d["shortfall"] == "0.00000000" for d in ledger)  # nothing clipped: order cannot matter
    funds = worker.funds()
    for fund, state in expected.states.items():
        assert funds[fund]["balance"] == state["balance"]
        assert funds[fund]["fills"] == state["fills"]
    assert worker.metric("insurance_fund_forwarded_total") > 0


def test_duplicates_once_and_bad_messages_dead_lettered_while_good_ones_flow(
    worker_config: WorkerConfig, start_worker: Any
) -> None:
    good = list(generated_lines(50, seed=9))
    bad: list[tuple[bytes | None, bytes | None]] = [
        (None, b""),
        (None, b"\xff\xfe not utf-8"),
        (b"USDT", b'{"fill_id": 1}'),
        (None, b'{"version": 7, "fill_id": "v7"}'),
        (b"USDT", None),
    ]
    sequence = keyed_by_currency(good[:25]) + bad + keyed_by_currency(good[25:] + good[:10])
    worker: RunningWorker = start_worker()
    run(produce(worker_config.bootstrap, worker_config.input_topic, sequence))

    deltas = run(read_all(worker_config.bootstrap, worker_config.deltas_topic, 50))
    letters = [
        orjson.loads(v)
        for _, v, _ in run(read_all(worker_config.bootstrap, worker_config.dlq_topic, len(bad)))
    ]
    assert len(deltas) == 50
    assert sorted(letter["error"] for letter in letters) == sorted(
        ["invalid_json", "invalid_json", "invalid_event", "unsupported_version", "invalid_json"]
    )
    assert any("'fill_id'" in letter["detail"] for letter in letters)
    assert any("value_base64" in letter for letter in letters)
    assert sum(state["duplicates"] for state in worker.funds().values()) == 10  # type: ignore[misc]


def test_restart_recovers_state_from_changelog_and_sequences_continue(
    worker_config: WorkerConfig, start_worker: Any
) -> None:
    worker_config.partitions = 2
    messages = list(generated_lines(400, seed=3))
    first, second = messages[:250], messages[250:]
    expected = FileReplay(messages, FundRules())
    worker: RunningWorker = start_worker("first")
    run(produce(worker_config.bootstrap, worker_config.input_topic, keyed_by_currency(first)))
    run(read_all(worker_config.bootstrap, worker_config.deltas_topic, 250))
    before = worker.funds()
    worker.stop()

    restarted: RunningWorker = start_worker("second")
    assert restarted.funds() == before  # restored from the changelog before any new input
    run(produce(worker_config.bootstrap, worker_config.input_topic, keyed_by_currency(second + first[:20])))
    deltas = run(read_all(worker_config.bootstrap, worker_config.deltas_topic, 400))
    assert by_fund([v for _, v, _ in deltas]) == by_fund(expected.deltas)
    assert (
        restarted.metric("insurance_fund_events_total") == len(second) + 20
    )  # the old input was not re-read
    funds = restarted.funds()
    for fund, state in expected.states.items():
        assert {**funds[fund], "duplicates": 0} == {**state, "duplicates": 0}
    assert sum(state["duplicates"] for state in funds.values()) == 20  # type: ignore[misc]


def test_http_views_answer(worker_config: WorkerConfig, start_worker: Any) -> None:
    worker: RunningWorker = start_worker()
    run(
        produce(
            worker_config.bootstrap, worker_config.input_topic, keyed_by_currency(list(generated_lines(20)))
        )
    )
    run(read_all(worker_config.bootstrap, worker_config.deltas_topic, 20))
    assert worker.get("/health")[0] == 200
    funds = worker.funds()
    assert set(funds) <= {"USDT", "BTC", "ETH", "USDC"} and funds
    fund = next(iter(funds))
    status, body = worker.get(f"/funds/{fund}")
    assert status == 200 and codec.loads(body) == funds[fund]
    assert worker.get("/funds/NOPE")[0] == 404
    status, metrics = worker.get("/metrics")
    text = metrics.decode()
    assert status == 200
    assert "insurance_fund_events_total 20" in text
    balance = next(
        line for line in text.splitlines() if line.startswith(f'insurance_fund_balance{{fund="{fund}"}}')
    )
    assert float(balance.split()[-1]) == float(funds[fund]["balance"])  # type: ignore[arg-type]  # Prometheus: float64
    assert 'insurance_fund_rejected_total{reason="invalid_json"} 0' in text
    assert "insurance_fund_consumer_lag{" in text


def test_scenario_file_exists() -> None:
    assert Path(GOLDEN / "crash" / "input.jsonl").is_file()
