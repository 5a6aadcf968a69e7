"""Quick versions of the soak's crash scenarios (``make soak`` runs the long ones, the same code in
``testkit.scenarios``): nothing the committed topics hold may be lost, repeated or different from the
file replay of the same input, and every worker's ``GET /funds`` must equal the replay's state."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from processor.domain.state import DrawdownPolicy
from testkit.harness import Tally
from testkit.scenarios import (
    backlog_scenario,
    broker_restart_scenario,
    kill_scenario,
    rebalance_scenario,
    rolling_scenario,
)


def assert_clean(tally: Tally, events: int) -> None:
    assert tally.problems == []
    assert (tally.duplicates, tally.losses, tally.mismatches) == (0, 0, 0)
    assert tally.events_checked >= events


def test_sigkilled_worker_loses_and_repeats_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    tally = kill_scenario(kafka_bootstrap, tmp_path, fills=3000, kills=5, pause=(0.5, 6.0), seed=11)
    assert tally.kills == 5
    assert tally.busy_kills >= 1  # at least one kill landed mid-stream, not only in start-up
    assert_clean(tally, 3000)
    assert tally.dlq == 3000 // 97


def test_a_backlog_waiting_at_start_up_is_read_whole(kafka_bootstrap: str, tmp_path: Path) -> None:
    tally = backlog_scenario(kafka_bootstrap, tmp_path, fills=12_000, starts=2, seed=14)
    assert_clean(tally, 12_000)
    assert tally.dlq == 12_000 // 97


def test_a_worker_leaving_and_rejoining_mid_stream_loses_and_repeats_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    tally = rebalance_scenario(kafka_bootstrap, tmp_path, fills=3000, rounds=2, seed=12)
    assert_clean(tally, 3000)


def test_a_rolling_restart_of_three_workers_loses_and_repeats_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    tally = rolling_scenario(kafka_bootstrap, tmp_path, fills=3000, rounds=1, seed=15)
    assert tally.restarts == 3
    assert_clean(tally, 3000)
    assert tally.dlq == 3000 // 97


def test_worker_rides_out_a_broker_restart(tmp_path: Path) -> None:
    tally = broker_restart_scenario(tmp_path, fills=3000, restarts=1, seed=13)
    assert_clean(tally, 3000)


def test_sigkills_amid_fills_and_treasury_operations_apply_each_operation_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Pools and operations (top-ups, withdrawals some of which the floor refuses, transfers, re-sent
    ids) interleaved with fills, the worker SIGKILLed meanwhile: every operation applied exactly once,
    no transfer leg lost or doubled, every refusal dead-lettered once."""
    tally = kill_scenario(
        kafka_bootstrap, tmp_path, fills=3000, kills=4, pause=(0.5, 5.0), seed=21, treasury=True
    )
    assert tally.kills == 4
    assert tally.busy_kills >= 1
    assert_clean(tally, 3000)


def test_sigkills_with_the_adl_policy_on_lose_and_repeat_no_state_change(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The ADL policy's state changes (and the fund_drawdown triggers and unpaid losses it causes)
    come out exactly once through SIGKILLs, in order per fund, as the file replay has them."""
    policy = DrawdownPolicy(Decimal("0.3"), Decimal("0.25"), 600_000)
    tally = kill_scenario(
        kafka_bootstrap,
        tmp_path,
        fills=3000,
        kills=4,
        pause=(0.5, 5.0),
        seed=21,
        treasury=True,
        adl_policy=policy,
    )
    assert tally.kills == 4
    assert_clean(tally, 3000)
