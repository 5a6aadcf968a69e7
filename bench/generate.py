"""Generate a deterministic stream of liquidation fills: a calm market, then a crash."""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Iterator
from decimal import Decimal

import orjson

MARKETS = [
    # symbol, margin currency, contract type, contract size, base price
    ("BTCUSDT", "USDT", "linear", "0.001", 28000),
    ("ETHUSDT", "USDT", "linear", "0.01", 1600),
    ("SOLUSDT", "USDT", "linear", "1", 21),
    ("XRPUSDT", "USDT", "linear", "10", 0.5),
    ("BTCUSD", "BTC", "inverse", "100", 28000),
    ("ETHUSD", "ETH", "inverse", "10", 1600),
    ("BTCUSDC", "USDC", "linear", "0.001", 28000),
]


FEE_RATE = Decimal("0.0002")
EIGHT = Decimal("0.00000001")


def notional(contract_type: str, contract_size: str, price: Decimal, quantity: Decimal) -> Decimal:
    """Value of the fill in its margin currency: quote for linear, base (coin) for inverse."""
    size = Decimal(contract_size)
    return quantity * size * price if contract_type == "linear" else quantity * size / price


def fills(count: int, seed: int = 7, crash_at: float = 0.8) -> Iterator[dict[str, object]]:
    """Yield ``count`` fills; after ``crash_at`` of them prices gap through bankruptcy."""
    rng = random.Random(seed)
    timestamp = 1_700_000_000_000
    fill_number = 0
    liquidation_number = 0
    while fill_number < count:
        liquidation_number += 1
        symbol, currency, contract_type, contract_size, base = MARKETS[rng.randrange(len(MARKETS))]
        crashing = fill_number >= count * crash_at
        side = "long" if crashing or rng.random() < 0.5 else "short"
        bankruptcy = Decimal(str(round(base * rng.uniform(0.9, 1.1), 4)))
        parts = rng.randint(1, 4)
        for part in range(parts):
            if fill_number >= count:
                break
            fill_number += 1
            timestamp += rng.randint(1, 50)
            slip = rng.uniform(-0.02, -0.002) if crashing else rng.uniform(-0.001, 0.004)
            direction = 1 if side == "long" else -1
            price = bankruptcy * (1 + Decimal(str(round(direction * slip, 6))))
            price = price.quantize(Decimal("0.0001"))
            quantity = Decimal(rng.randint(1, 500))
            unfilled = (
                Decimal(rng.randint(1, 50)) if crashing and part == parts - 1 and rng.random() < 0.3 else 0
            )
            yield {
                "fill_id": f"F{fill_number:09d}",
                "liquidation_id": f"L{liquidation_number:08d}",
                "symbol": symbol,
                "margin_currency": currency,
                "side": side,
                "contract_type": contract_type,
                "contract_size": contract_size,
                "bankruptcy_price": str(bankruptcy),
                "fill_price": str(price),
                "quantity": str(quantity),
                "unfilled_quantity": str(unfilled),
                "fee": str(
                    (notional(contract_type, contract_size, price, quantity) * FEE_RATE).quantize(EIGHT)
                ),
                "timestamp": timestamp,
                "version": 1,
            }


def lines(count: int, seed: int = 7) -> Iterator[bytes]:
    for fill in fills(count, seed):
        yield orjson.dumps(fill)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    out = sys.stdout.buffer
    for line in lines(args.count, args.seed):
        out.write(line + b"\n")


if __name__ == "__main__":
    main()
