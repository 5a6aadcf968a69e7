"""A deterministic simulated liquidation feed: a calm market, then a crash (demo and benchmarks)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import NamedTuple


class Market(NamedTuple):
    symbol: str
    margin_currency: str
    contract_type: str
    contract_size: str
    base_price: float


MARKETS = (
    Market("BTCUSDT", "USDT", "linear", "0.001", 28000),
    Market("ETHUSDT", "USDT", "linear", "0.01", 1600),
    Market("SOLUSDT", "USDT", "linear", "1", 21),
    Market("XRPUSDT", "USDT", "linear", "10", 0.5),
    Market("BTCUSD", "BTC", "inverse", "100", 28000),
    Market("ETHUSD", "ETH", "inverse", "10", 1600),
    Market("BTCUSDC", "USDC", "linear", "0.001", 28000),
)
FEE_RATE = Decimal("0.0002")
EIGHT = Decimal("0.00000001")
PRICE_STEP = Decimal("0.0001")


def notional(contract_type: str, contract_size: str, price: Decimal, quantity: Decimal) -> Decimal:
    """Value of a fill in its margin currency: quote for linear contracts, coin for inverse ones."""
    size = Decimal(contract_size)
    return quantity * size * price if contract_type == "linear" else quantity * size / price


def fills(
    count: int, seed: int = 7, crash_at: int | None = None, markets: Sequence[Market] = MARKETS
) -> Iterator[dict[str, object]]:
    """Yield ``count`` fills; from fill ``crash_at`` on (default: 80%) prices gap through bankruptcy."""
    rng = random.Random(seed)
    crash_from = int(count * 0.8) if crash_at is None else crash_at
    timestamp = 1_700_000_000_000
    fill_number = liquidation_number = 0
    while fill_number < count:
        liquidation_number += 1
        market = markets[rng.randrange(len(markets))]
        crashing = fill_number >= crash_from
        side = "long" if crashing or rng.random() < 0.5 else "short"
        bankruptcy = Decimal(str(round(market.base_price * rng.uniform(0.9, 1.1), 4)))
        parts = rng.randint(1, 4)
        for part in range(parts):
            if fill_number >= count:
                break
            fill_number += 1
            timestamp += rng.randint(1, 50)
            slip = rng.uniform(-0.02, -0.002) if crashing else rng.uniform(-0.001, 0.004)
            direction = 1 if side == "long" else -1
            price = (bankruptcy * (1 + Decimal(str(round(direction * slip, 6))))).quantize(PRICE_STEP)
            quantity = Decimal(rng.randint(1, 500))
            last_part = part == parts - 1
            unfilled = Decimal(rng.randint(1, 50)) if crashing and last_part and rng.random() < 0.3 else 0
            fee = (notional(market.contract_type, market.contract_size, price, quantity) * FEE_RATE).quantize(
                EIGHT
            )
            yield {
                "fill_id": f"F{fill_number:09d}",
                "liquidation_id": f"L{liquidation_number:08d}",
                "symbol": market.symbol,
                "margin_currency": market.margin_currency,
                "side": side,
                "contract_type": market.contract_type,
                "contract_size": market.contract_size,
                "bankruptcy_price": str(bankruptcy),
                "fill_price": str(price),
                "quantity": str(quantity),
                "unfilled_quantity": str(unfilled),
                "fee": str(fee),
                "timestamp": timestamp,
                "version": 1,
            }
