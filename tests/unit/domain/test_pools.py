"""Fund pools (SPEC section 7): which fund a fill belongs to, and the pools' own policies."""

from __future__ import annotations

import random
from collections.abc import Sequence
from decimal import Decimal
from fnmatch import fnmatchcase
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.domain import pools as pools_module
from processor.domain.ledger import Ledger
from processor.domain.pools import FundPools, Pool, is_pool_id
from processor.domain.state import FundRules, FundState
from tests.conftest import scaled
from tests.strategies import (
    BASE_TIMESTAMP,
    CURRENCIES,
    POOL_SYMBOLS,
    SYMBOLS,
    FillEvent,
    fill_sequences,
    make_fill,
    pool_lists,
)

D = Decimal
T = BASE_TIMESTAMP
MEME = Pool("USDT-MEME", "USDT", ("MEME*USDT", "PEPEUSDT"), D("20000"), D("1000"))
NEW = Pool("USDT-NEW", "USDT", ("TIAUSDT", "MEMEUSDT"), D("5000"), None, T, T + 1000)
BTC_POOL = Pool("BTC_ALT", "BTC", ("*",), None, None, None, T)
POOLS = FundPools([MEME, NEW, BTC_POOL])


def reference_fund_of(pools: Sequence[Pool], currency: str, symbol: str, timestamp: int) -> str:
    """SPEC section 7 written out again: the first pool, in file order, that takes the fill."""
    for pool in pools:
        if (
            pool.currency == currency
            and any(fnmatchcase(symbol, pattern) for pattern in pool.symbols)
            and (pool.from_timestamp is None or pool.from_timestamp <= timestamp)
            and (pool.until_timestamp is None or timestamp < pool.until_timestamp)
        ):
            return pool.fund
    return currency


# --- the mapping ----------------------------------------------------------------------------------


def test_without_pools_every_fill_belongs_to_its_currency() -> None:
    empty = FundPools()
    assert not empty
    assert empty.fund_of("USDT", "MEMEUSDT", T) == "USDT"
    assert empty.fund_of("BTC", "BTCUSD", 0) == "BTC"


@pytest.mark.parametrize(
    ("symbol", "expected"),
    [
        ("MEMEUSDT", "USDT-MEME"),  # "MEME*USDT" with an empty star
        ("MEME2USDT", "USDT-MEME"),
        ("PEPEUSDT", "USDT-MEME"),  # an exact name
        ("TIAUSDT", "USDT-NEW"),
        ("memeusdt", "USDT"),  # case-sensitive
        ("MEMEUSDT2", "USDT"),  # the pattern is matched whole
        ("XMEMEUSDT", "USDT"),
        ("BTCUSDT", "USDT"),
    ],
)
def test_symbols_match_exact_names_and_fnmatch_patterns_case_sensitively(symbol: str, expected: str) -> None:
    assert POOLS.fund_of("USDT", symbol, T) == expected


def test_the_first_matching_pool_in_file_order_wins() -> None:
    # MEMEUSDT matches both USDT-MEME ("MEME*USDT") and USDT-NEW (an exact name)
    assert FundPools([MEME, NEW]).fund_of("USDT", "MEMEUSDT", T) == "USDT-MEME"
    assert FundPools([NEW, MEME]).fund_of("USDT", "MEMEUSDT", T) == "USDT-NEW"


def test_a_pool_whose_time_range_excludes_the_fill_lets_the_next_pool_take_it() -> None:
    assert FundPools([NEW, MEME]).fund_of("USDT", "MEMEUSDT", T + 1000) == "USDT-MEME"


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [(T - 1, "USDT"), (T, "USDT-NEW"), (T + 999, "USDT-NEW"), (T + 1000, "USDT"), (T + 10**9, "USDT")],
)
def test_the_time_range_is_from_inclusive_until_exclusive(timestamp: int, expected: str) -> None:
    assert POOLS.fund_of("USDT", "TIAUSDT", timestamp) == expected


def test_open_ended_time_ranges() -> None:
    times = (0, T - 1, T, 2**63 - 1)
    since = FundPools([Pool("USDT-LATE", "USDT", ("*",), from_timestamp=T)])
    assert [since.fund_of("USDT", "X", t) for t in times] == ["USDT", "USDT", "USDT-LATE", "USDT-LATE"]
    until = FundPools([Pool("USDT-EARLY", "USDT", ("*",), until_timestamp=T)])
    assert [until.fund_of("USDT", "X", t) for t in times] == ["USDT-EARLY", "USDT-EARLY", "USDT", "USDT"]


def test_fills_of_another_currency_never_go_to_a_pool() -> None:
    everything = FundPools([Pool("USDT-ALL", "USDT", ("*",))])
    assert everything.fund_of("USDT", "BTCUSDC", T) == "USDT-ALL"
    assert everything.fund_of("USDC", "BTCUSDC", T) == "USDC"
    assert everything.fund_of("USDC", "BTCUSDT", T) == "USDC"
    assert POOLS.fund_of("ETH", "MEMEUSDT", T) == "ETH"
    assert POOLS.fund_of("BTC", "BTCUSD", T - 1) == "BTC_ALT"
    assert POOLS.fund_of("BTC", "BTCUSD", T) == "BTC"


def test_the_same_symbol_at_other_times_is_answered_per_fill_not_from_the_cache() -> None:
    pools = FundPools([NEW])
    answers = [pools.fund_of("USDT", "TIAUSDT", t) for t in (T + 2000, T, T - 1, T + 500, T + 1000)]
    assert answers == ["USDT", "USDT-NEW", "USDT", "USDT-NEW", "USDT"]


def test_the_match_cache_is_bounded_and_answers_stay_right_after_it_is_cleared() -> None:
    pools = FundPools([MEME, NEW])
    symbols = [f"MEME{n}USDT" for n in range(10)] + ["TIAUSDT", "BTCUSDT", "MEMEUSDT"]
    with mock.patch.object(pools_module, "_MATCH_CACHE_LIMIT", 3):
        for _ in range(3):
            for symbol in symbols:
                assert pools.fund_of("USDT", symbol, T) == reference_fund_of(pools.pools, "USDT", symbol, T)
                assert len(pools._candidates) <= 3


def test_currency_of_a_fund_id() -> None:
    assert POOLS.currency_of("USDT-MEME") == "USDT"
    assert POOLS.currency_of("BTC_ALT") == "BTC"
    assert POOLS.currency_of("USDT") == "USDT"  # a currency fund, pools or not
    assert POOLS.currency_of("ETH") == "ETH"
    assert POOLS.currency_of("USDT-GHOST") is None  # a pool id the file does not define
    assert POOLS.currency_of("BTC_") is None
    assert FundPools().currency_of("USDT-MEME") is None


@pytest.mark.parametrize(
    ("fund", "expected"),
    [
        ("USDT", False),
        ("BTC", False),
        ("1000SHIB", False),
        ("USDT-MEME", True),
        ("BTC_ALT", True),
        ("A-B_C", True),
    ],
)
def test_pool_ids_hold_a_dash_or_an_underscore_and_currency_codes_never_do(fund: str, expected: bool) -> None:
    assert is_pool_id(fund) is expected


def test_pools_compare_by_their_list_in_order() -> None:
    assert FundPools([MEME, NEW]) == FundPools([MEME, NEW])
    assert FundPools([MEME, NEW]) != FundPools([NEW, MEME])
    assert hash(FundPools([MEME])) == hash(FundPools([MEME]))
    assert FundPools() == FundPools([])
    assert FundPools([MEME]).by_fund == {"USDT-MEME": MEME}


# --- properties of the mapping --------------------------------------------------------------------

ALL_SYMBOLS = sorted({symbol for symbols in SYMBOLS.values() for symbol in symbols} | {"MEMEUSDT", "btcusdt"})
queries = st.tuples(
    st.sampled_from(CURRENCIES),
    st.sampled_from(ALL_SYMBOLS),
    st.integers(T - 2_000_000, T + 17_000_000) | st.sampled_from([0, T, 2**63 - 1]),
)


@settings(max_examples=scaled(100))
@given(pool_lists(), st.lists(queries, min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_fund_of_is_a_pure_function_of_the_fill_and_the_file(
    pools: list[Pool], asked: list[tuple[str, str, int]], shuffle: random.Random
) -> None:
    expected = [reference_fund_of(pools, *query) for query in asked]
    warmed = FundPools(pools)
    assert [warmed.fund_of(*query) for query in asked] == expected
    assert [warmed.fund_of(*query) for query in asked] == expected  # again, from the cache
    order = list(range(len(asked)))
    shuffle.shuffle(order)
    shuffled = FundPools(pools)
    answers = {index: shuffled.fund_of(*asked[index]) for index in order}
    assert [answers[index] for index in range(len(asked))] == expected
    for query, fund in zip(asked, expected, strict=True):
        assert FundPools(pools).fund_of(*query) == fund  # a fresh instance: no cache at all
        currency = query[0]
        assert fund == currency or FundPools(pools).by_fund[fund].currency == currency


@settings(max_examples=scaled(40))
@given(pool_lists(), fill_sequences(max_size=20, resends=False))
def test_the_ledger_folds_each_fill_into_the_fund_the_mapping_names(
    pools: list[Pool], events: list[FillEvent]
) -> None:
    ledger = Ledger(FundRules(pools=FundPools(pools)))
    alone: dict[str, list[str]] = {}
    for event in events:
        fill = event.expected()
        fund = reference_fund_of(pools, fill.margin_currency, fill.symbol, fill.timestamp)
        outcome = ledger.fold(fill)
        assert outcome.delta is not None
        assert outcome.delta.fund == outcome.state.fund == fund
        assert outcome.delta.margin_currency == fill.margin_currency
        if outcome.trigger is not None:
            assert (outcome.trigger.fund, outcome.trigger.margin_currency) == (fund, fill.margin_currency)
        alone.setdefault(fund, []).append(fill.fill_id)
    for fund, fill_ids in alone.items():
        state = ledger.funds[fund]
        assert (state.fills, state.sequence) == (len(fill_ids), len(fill_ids))
        assert all(ledger.windows[fund].get(fill_id) is not None for fill_id in fill_ids)


def test_every_generated_pool_symbol_is_for_a_known_currency() -> None:
    assert set(POOL_SYMBOLS) == set(CURRENCIES)


# --- pools in the ledger --------------------------------------------------------------------------

RULES = FundRules(
    precision={"USDT": 2},
    floor={"USDT": D("50")},
    default_floor=D("7"),
    initial_balance={"USDT": D("100")},
    pools=POOLS,
)


def test_a_pool_has_its_own_initial_balance_and_floor_at_its_currencys_precision() -> None:
    policy = RULES.policy_for("USDT-MEME")
    assert (policy.initial_balance, policy.floor, policy.quantum) == (D("20000.00"), D("1000.00"), D("0.01"))
    assert str(policy.initial_balance) == "20000.00"


def test_a_pool_without_amounts_opens_at_0_with_the_default_floor_not_its_currencys() -> None:
    policy = RULES.policy_for("USDT-NEW")
    assert policy.initial_balance == D("5000")
    assert policy.floor == D("7")  # FUND_DEFAULT_FLOOR; the USDT floor of 50 is the currency fund's
    bare = RULES.policy_for("BTC_ALT")
    assert (bare.initial_balance, bare.floor, bare.precision) == (D(0), D("7"), 8)
    assert RULES.policy_for("USDT").floor == D("50")


def test_pool_fills_go_to_the_pool_and_keep_their_margin_currency() -> None:
    ledger = Ledger(RULES)
    outcome = ledger.fold(make_fill(fill_id="m-1", symbol="MEMEUSDT", fill_price="27000", quantity="2"))
    delta = outcome.delta
    assert delta is not None
    assert (delta.fund, delta.margin_currency, delta.symbol) == ("USDT-MEME", "USDT", "MEMEUSDT")
    assert str(delta.balance_before) == "20000.00"
    assert str(delta.amount) == "-2000.50"  # (27000 - 28000) x 2 - 0.5, at USDT's 2 places
    assert set(ledger.funds) == {"USDT-MEME"}
    assert ledger.funds["USDT-MEME"] == outcome.state
    assert outcome.state.fund == "USDT-MEME"


def test_a_pool_pays_down_to_its_own_floor_and_triggers_adl_for_the_rest() -> None:
    ledger = Ledger(RULES)
    # loss 20000 x 1 + 0.5 = 20000.5; the pool holds 20000 over a floor of 1000: pays 19000
    outcome = ledger.fold(make_fill(symbol="PEPEUSDT", bankruptcy_price="30000", fill_price="10000"))
    assert outcome.delta is not None and outcome.trigger is not None
    assert (outcome.delta.amount, outcome.delta.shortfall) == (D("-19000"), D("1000.5"))
    assert (outcome.trigger.fund, outcome.trigger.fund_balance) == ("USDT-MEME", D("1000"))


def test_duplicate_checks_are_per_fund_so_a_pool_and_its_currency_fund_each_take_one_fill_id() -> None:
    ledger = Ledger(RULES)
    assert ledger.fold(make_fill(fill_id="same", symbol="BTCUSDT")).delta is not None
    assert ledger.fold(make_fill(fill_id="same", symbol="MEMEUSDT")).delta is not None
    assert ledger.fold(make_fill(fill_id="same", symbol="MEMEUSDT")).delta is None
    assert ledger.fold(make_fill(fill_id="same", symbol="BTCUSDT")).delta is None
    assert {fund: state.duplicates for fund, state in ledger.funds.items()} == {"USDT": 1, "USDT-MEME": 1}


def test_a_resent_fill_whose_time_moved_it_out_of_a_pool_is_not_a_duplicate_of_the_pool_fill() -> None:
    ledger = Ledger(RULES)
    assert ledger.fold(make_fill(fill_id="t-1", symbol="TIAUSDT", timestamp=T)).state.fund == "USDT-NEW"
    # the same id at another time belongs to another fund: applied there, not a conflict
    outcome = ledger.fold(make_fill(fill_id="t-1", symbol="TIAUSDT", timestamp=T + 1000))
    assert outcome.conflict is None and outcome.delta is not None
    assert outcome.delta.fund == "USDT"


def test_pool_and_currency_fund_sequences_are_independent() -> None:
    ledger = Ledger(RULES)
    funds = [
        ledger.fold(make_fill(fill_id=f"f-{n}", symbol=symbol)).delta
        for n, symbol in enumerate(["BTCUSDT", "MEMEUSDT", "BTCUSDT", "PEPEUSDT", "TIAUSDT"])
    ]
    assert [(delta.fund, delta.sequence) for delta in funds if delta is not None] == [
        ("USDT", 1),
        ("USDT-MEME", 1),
        ("USDT", 2),
        ("USDT-MEME", 2),
        ("USDT-NEW", 1),
    ]


def test_an_opened_pool_state_starts_at_the_pools_initial_balance() -> None:
    state = FundState.opened("USDT-MEME", RULES.policy_for("USDT-MEME"))
    assert (state.fund, state.balance, state.sequence, state.operations) == ("USDT-MEME", D("20000"), 0, 0)
