"""Pools and treasury operations woven into a simulated feed, for the crash scenarios (SPEC sections 7
and 8): top-ups, withdrawals (some refused by the floor), transfers (both legs, in order, on one
partition) and re-sent operations, among fills some of which belong to pools."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path

import orjson

from processor.config import load_pools
from processor.domain.state import FundRules

#: Pools over the simulated markets: SOL and XRP USDT contracts in one pool with a floor, and the BTC
#: inverse contract in a pool that opens a few seconds into the feed (fills before go to BTC).
POOLS_TOML = """\
[[pools]]
fund = "USDT-ALTS"
currency = "USDT"
symbols = ["SOLUSDT", "XRP*"]
initial_balance = "200000"
floor = "50000"

[[pools]]
fund = "BTC_LATE"
currency = "BTC"
symbols = ["BTCUSD"]
initial_balance = "5"
floor = "1"
from_timestamp = 1700000005000
"""
#: The funds operations name, with their currency and a typical amount.
FUNDS = (
    ("USDT", "USDT", 40_000),
    ("USDT-ALTS", "USDT", 60_000),
    ("USDC", "USDC", 20_000),
    ("BTC", "BTC", 2),
    ("BTC_LATE", "BTC", 3),
    ("ETH", "ETH", 30),
)


def write_pools(directory: Path) -> Path:
    path = directory / "pools.toml"
    path.write_text(POOLS_TOML)
    return path


def with_treasury(
    messages: list[bytes], rules: FundRules, scratch: Path, seed: int, every: int = 40
) -> tuple[list[bytes], FundRules, dict[str, str]]:
    """``messages`` with an operation (or a transfer's two legs) after every ``every``-th one; the
    rules with the pools, and the worker's environment for them."""
    pools_file = write_pools(scratch)
    rng = random.Random(seed)
    woven: list[bytes] = []
    sent: list[bytes] = []
    timestamp = 1_700_000_000_000
    serial = 0
    for index, message in enumerate(messages):
        woven.append(message)
        document = orjson.loads(message)
        if isinstance(document, dict) and isinstance(document.get("timestamp"), int):
            timestamp = document["timestamp"]
        if index % every != every - 1:
            continue
        serial += 1
        draw = rng.random()
        if draw < 0.1 and sent:
            woven.append(rng.choice(sent))  # a re-sent operation: a duplicate, or a retried refusal
            continue
        if draw < 0.35:
            transfer = f"tr-{serial}"
            amount = str(Decimal(rng.randint(4, 160_000)) / 4)
            legs = [
                _operation(f"{transfer}-withdrawal", "withdrawal", "USDT-ALTS", amount, timestamp, transfer),
                _operation(f"{transfer}-top-up", "top_up", "USDT", amount, timestamp, transfer),
            ]
            woven += legs
            sent += legs
            continue
        fund, _, typical = FUNDS[rng.randrange(len(FUNDS))]
        kind = "top_up" if draw < 0.65 else "withdrawal"
        amount = str((Decimal(typical) * Decimal(rng.randint(1, 300)) / 100).quantize(Decimal("0.0001")))
        operation = _operation(f"op-{serial}", kind, fund, amount, timestamp, None)
        woven.append(operation)
        sent.append(operation)
    return woven, rules._replace(pools=load_pools(str(pools_file))), {"FUND_POOLS_FILE": str(pools_file)}


def _operation(
    operation_id: str, kind: str, fund: str, amount: str, timestamp: int, transfer_id: str | None
) -> bytes:
    document: dict[str, object] = {
        "type": kind,
        "operation_id": operation_id,
        "fund": fund,
        "amount": amount,
        "requested_by": "soak:treasury",
        "reason": f"soak {kind}",
        "timestamp": timestamp,
    }
    if transfer_id is not None:
        document["transfer_id"] = transfer_id
    return orjson.dumps(document)
