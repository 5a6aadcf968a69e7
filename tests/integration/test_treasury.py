"""The operator command against a running worker (SPEC section 8): top-up, refused withdrawal, transfer,
and the audit listing a transfer that has only one leg."""

from __future__ import annotations

from typing import Any

from testkit.cli import run_cli
from testkit.worker import RunningWorker, WorkerConfig
from tests.golden.regenerate import GOLDEN


def test_fund_command_applies_refuses_and_transfers_and_audit_lists_a_lone_leg(
    worker_config: WorkerConfig, start_worker: Any
) -> None:
    pools = str(GOLDEN / "pools" / "pools.toml")
    worker_config.extra_env.update({"FUND_POOLS_FILE": pools, "FUND_INITIAL_BALANCES": "USDT=1000"})
    worker: RunningWorker = start_worker()
    env = {**worker_config.env(0, "operator"), "LOG_LEVEL": ""}

    def fund(*args: str) -> Any:
        return run_cli("fund", *args, "--timeout", "60", env=env)

    top_up = fund(
        "top-up", "--fund", "USDT-MEME", "--amount", "1500.5", "--reason", "seed", "--requested-by", "ops:a"
    )
    assert top_up.returncode == 0, top_up.stderr
    assert (
        "1500.50000000 added to USDT-MEME, balance 20000.00000000 -> 21500.50000000 (sequence 1)"
        in top_up.stdout
    )

    refused = fund("withdraw", "--fund", "USDT-MEME", "--amount", "100000", "--reason", "too much")
    assert refused.returncode == 4
    assert refused.stderr.startswith("error: withdrawal ") and "operation_refused" in refused.stderr
    assert "floor 1000.00000000" in refused.stderr

    transfer = fund(
        "transfer",
        "--fund",
        "USDT-MEME",
        "--to",
        "USDT",
        "--amount",
        "500",
        "--reason",
        "x",
        "--transfer-id",
        "tr-9",
    )
    assert transfer.returncode == 0, transfer.stderr
    assert "tr-9-withdrawal: 500.00000000 taken from USDT-MEME" in transfer.stdout
    assert (
        "tr-9-top-up: 500.00000000 added to USDT, balance 1000.00000000 -> 1500.00000000" in transfer.stdout
    )

    lone = fund(
        "withdraw", "--fund", "USDT", "--amount", "5", "--reason", "half a transfer", "--transfer-id", "tr-10"
    )
    assert lone.returncode == 0, lone.stderr

    audit = run_cli(
        "audit", "--worker-url", worker.url, "--initial-balance", "USDT=1000", "--pools-file", pools, env=env
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "open transfer tr-10: withdrawal -5.00000000 USDT (sequence 2)" in audit.stdout
    assert "tr-9" not in audit.stdout
    assert audit.stdout.strip().splitlines()[-1].startswith("PASS")
