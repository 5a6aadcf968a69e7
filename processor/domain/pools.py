"""Fund pools (SPEC section 7): which fund a fill belongs to, as a pure function of the fill and the
pools file. Reading and checking the file is the configuration's job (``processor.config``)."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import NamedTuple

_MATCH_CACHE_LIMIT = 1 << 14


class Pool(NamedTuple):
    """One isolated fund: the fills of ``currency`` whose symbol matches ``symbols`` and whose event
    time is in ``[from_timestamp, until_timestamp)``; unset fields take the fund defaults."""

    fund: str
    currency: str
    symbols: tuple[str, ...]
    initial_balance: Decimal | None = None
    floor: Decimal | None = None
    from_timestamp: int | None = None
    until_timestamp: int | None = None

    def holds(self, timestamp: int) -> bool:
        return (self.from_timestamp is None or self.from_timestamp <= timestamp) and (
            self.until_timestamp is None or timestamp < self.until_timestamp
        )


class FundPools:
    """The pools in file order. Without pools every fill belongs to its currency's fund (v1)."""

    __slots__ = ("_candidates", "by_fund", "pools")

    def __init__(self, pools: Iterable[Pool] = ()) -> None:
        self.pools = tuple(pools)
        self.by_fund = {pool.fund: pool for pool in self.pools}
        # (currency, symbol) -> the pools, in file order, whose currency and symbols match: the
        # symbol patterns are matched once per symbol, the time range per fill.
        self._candidates: dict[tuple[str, str], tuple[Pool, ...]] = {}

    def __bool__(self) -> bool:
        return bool(self.pools)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FundPools) and self.pools == other.pools

    def __hash__(self) -> int:
        return hash(self.pools)

    def __repr__(self) -> str:
        return f"FundPools({list(self.pools)!r})"

    def fund_of(self, currency: str, symbol: str, timestamp: int) -> str:
        """The fund of a fill: the first pool that takes it, else its currency's fund."""
        candidates = self._candidates.get((currency, symbol))
        if candidates is None:
            candidates = tuple(
                pool
                for pool in self.pools
                if pool.currency == currency and any(fnmatchcase(symbol, pattern) for pattern in pool.symbols)
            )
            if len(self._candidates) >= _MATCH_CACHE_LIMIT:
                self._candidates.clear()
            self._candidates[currency, symbol] = candidates
        for pool in candidates:
            if pool.holds(timestamp):
                return pool.fund
        return currency

    def currency_of(self, fund: str) -> str | None:
        """The currency of a fund id: a pool's currency, the id itself for a currency fund, ``None``
        for a pool id (it holds a ``-`` or ``_``) the file does not define."""
        pool = self.by_fund.get(fund)
        if pool is not None:
            return pool.currency
        return None if is_pool_id(fund) else fund


def is_pool_id(fund: str) -> bool:
    """Pool ids always hold a ``-`` or ``_``; currency codes never do."""
    return "-" in fund or "_" in fund
