"""The ADL policy's settings (SPEC section 9): ``ADL_DRAWDOWN_*``, checked at start-up, and the policy
each fund (currency or pool) ends up with."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from processor.config import ADL_VARIABLES, ConfigError, Settings, drawdown_rules
from processor.domain.events import FundOperation
from processor.domain.ledger import Ledger
from processor.domain.state import DEFAULT_DRAWDOWN_WINDOW_MS, DrawdownPolicy, FundRules
from tests.strategies import BASE_TIMESTAMP, make_fill

D = Decimal
T = BASE_TIMESTAMP
MAX_INT64 = 2**63 - 1
BOTH = "ADL_DRAWDOWN_START / ADL_DRAWDOWN_STOP"


def rules(**environment: str) -> FundRules:
    return Settings.from_env(environment).rules


def test_unset_or_empty_the_policy_is_off() -> None:
    assert rules() == FundRules()
    assert rules(**dict.fromkeys(ADL_VARIABLES, "")) == FundRules()
    assert drawdown_rules({}) == {"default_drawdown": None, "drawdown": {}}
    assert DEFAULT_DRAWDOWN_WINDOW_MS == 8 * 3600 * 1000


def test_start_and_stop_set_every_fund_s_policy_with_an_eight_hour_window_by_default() -> None:
    policy = DrawdownPolicy(D("0.3"), D("0.25"), DEFAULT_DRAWDOWN_WINDOW_MS)
    assert rules(ADL_DRAWDOWN_START="0.3", ADL_DRAWDOWN_STOP="0.25").default_drawdown == policy
    windowed = rules(ADL_DRAWDOWN_START="0.3", ADL_DRAWDOWN_STOP="0.25", ADL_DRAWDOWN_WINDOW_MS="1")
    assert windowed.default_drawdown == policy._replace(window_ms=1)
    assert (
        windowed.policy_for("USDT").drawdown
        == windowed.policy_for("XRP").drawdown
        == (D("0.3"), D("0.25"), 1)
    )


def test_per_fund_overrides_take_the_defaults_for_what_they_leave_out() -> None:
    configured = rules(
        ADL_DRAWDOWN_START="0.3",
        ADL_DRAWDOWN_STOP="0.25",
        ADL_DRAWDOWN_STARTS="USDT=0.5, ETH=0.2",
        ADL_DRAWDOWN_STOPS="ETH=0.1",
        ADL_DRAWDOWN_WINDOWS_MS="BTC=60000",
    )
    eight_hours = DEFAULT_DRAWDOWN_WINDOW_MS
    assert dict(configured.drawdown) == {
        "USDT": DrawdownPolicy(D("0.5"), D("0.25"), eight_hours),
        "ETH": DrawdownPolicy(D("0.2"), D("0.1"), eight_hours),
        "BTC": DrawdownPolicy(D("0.3"), D("0.25"), 60_000),
    }
    assert configured.policy_for("SOL").drawdown == DrawdownPolicy(D("0.3"), D("0.25"), eight_hours)


def test_a_fund_listed_in_the_overrides_runs_the_policy_when_the_defaults_are_unset() -> None:
    configured = rules(ADL_DRAWDOWN_STARTS="BTC=0.4", ADL_DRAWDOWN_STOPS="BTC=0.3")
    assert configured.default_drawdown is None
    assert configured.policy_for("BTC").drawdown == DrawdownPolicy(
        D("0.4"), D("0.3"), DEFAULT_DRAWDOWN_WINDOW_MS
    )
    assert configured.policy_for("USDT").drawdown is None


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        # both thresholds or neither
        ({"ADL_DRAWDOWN_START": "0.3"}, f"{BOTH}: set both"),
        ({"ADL_DRAWDOWN_STOP": "0.25"}, f"{BOTH}: set both"),
        ({"ADL_DRAWDOWN_STARTS": "USDT=0.3"}, "ADL_DRAWDOWN_STARTS / ADL_DRAWDOWN_STOPS for USDT: set both"),
        ({"ADL_DRAWDOWN_STOPS": "USDT=0.3"}, "ADL_DRAWDOWN_STARTS / ADL_DRAWDOWN_STOPS for USDT: set both"),
        # 0 < STOP < START < 1
        (
            {"ADL_DRAWDOWN_START": "0.3", "ADL_DRAWDOWN_STOP": "0.3"},
            f"{BOTH}: must satisfy 0 < STOP < START < 1",
        ),
        ({"ADL_DRAWDOWN_START": "0.3", "ADL_DRAWDOWN_STOP": "0.30000001"}, f"{BOTH}: must satisfy"),
        ({"ADL_DRAWDOWN_START": "0.25", "ADL_DRAWDOWN_STOP": "0.3"}, f"{BOTH}: must satisfy"),
        (
            {"ADL_DRAWDOWN_START": "1", "ADL_DRAWDOWN_STOP": "0.25"},
            "ADL_DRAWDOWN_START: must be a fraction in (0, 1)",
        ),
        (
            {"ADL_DRAWDOWN_START": "1.5", "ADL_DRAWDOWN_STOP": "0.25"},
            "ADL_DRAWDOWN_START: must be a fraction",
        ),
        ({"ADL_DRAWDOWN_START": "0", "ADL_DRAWDOWN_STOP": "0.25"}, "ADL_DRAWDOWN_START: must be a fraction"),
        (
            {"ADL_DRAWDOWN_START": "-0.3", "ADL_DRAWDOWN_STOP": "0.25"},
            "ADL_DRAWDOWN_START: must be a fraction",
        ),
        ({"ADL_DRAWDOWN_START": "0.3", "ADL_DRAWDOWN_STOP": "0"}, "ADL_DRAWDOWN_STOP: must be a fraction"),
        ({"ADL_DRAWDOWN_START": "0.3", "ADL_DRAWDOWN_STOP": "-0.1"}, "ADL_DRAWDOWN_STOP: must be a fraction"),
        ({"ADL_DRAWDOWN_START": "0.3", "ADL_DRAWDOWN_STOP": "1"}, "ADL_DRAWDOWN_STOP: must be a fraction"),
        # not numbers
        (
            {"ADL_DRAWDOWN_START": "30%", "ADL_DRAWDOWN_STOP": "0.25"},
            "ADL_DRAWDOWN_START: '30%' is not a finite",
        ),
        (
            {"ADL_DRAWDOWN_START": "NaN", "ADL_DRAWDOWN_STOP": "0.25"},
            "ADL_DRAWDOWN_START: 'NaN' is not a finite",
        ),
        (
            {"ADL_DRAWDOWN_START": "0.3", "ADL_DRAWDOWN_STOP": "Infinity"},
            "ADL_DRAWDOWN_STOP: 'Infinity' is not",
        ),
        # the window: an integer number of milliseconds, at least 1
        ({"ADL_DRAWDOWN_WINDOW_MS": "0"}, f"ADL_DRAWDOWN_WINDOW_MS: must be in [1, {MAX_INT64}], got 0"),
        ({"ADL_DRAWDOWN_WINDOW_MS": "-1"}, "ADL_DRAWDOWN_WINDOW_MS: must be in [1, "),
        ({"ADL_DRAWDOWN_WINDOW_MS": str(MAX_INT64 + 1)}, "ADL_DRAWDOWN_WINDOW_MS: must be in [1, "),
        ({"ADL_DRAWDOWN_WINDOW_MS": "8h"}, "ADL_DRAWDOWN_WINDOW_MS: '8h' is not an integer"),
        ({"ADL_DRAWDOWN_WINDOW_MS": "1.5"}, "ADL_DRAWDOWN_WINDOW_MS: '1.5' is not an integer"),
        # per fund: fund ids, entries, values
        ({"ADL_DRAWDOWN_STARTS": "usdt=0.3"}, "ADL_DRAWDOWN_STARTS: 'usdt' in 'usdt=0.3' is not a fund id"),
        ({"ADL_DRAWDOWN_STOPS": "USDT-=0.3"}, "ADL_DRAWDOWN_STOPS: 'USDT-' in 'USDT-=0.3' is not a fund id"),
        ({"ADL_DRAWDOWN_WINDOWS_MS": "U=1"}, "ADL_DRAWDOWN_WINDOWS_MS: 'U' in 'U=1' is not a fund id"),
        (
            {"ADL_DRAWDOWN_STARTS": "USDT"},
            "ADL_DRAWDOWN_STARTS: expected FUND=VALUE[,FUND=VALUE...], got 'USDT'",
        ),
        ({"ADL_DRAWDOWN_STARTS": "USDT="}, "ADL_DRAWDOWN_STARTS: expected FUND=VALUE"),
        ({"ADL_DRAWDOWN_STOPS": "=0.2"}, "ADL_DRAWDOWN_STOPS: expected FUND=VALUE"),
        ({"ADL_DRAWDOWN_STARTS": "USDT=1"}, "ADL_DRAWDOWN_STARTS: USDT must be a fraction in (0, 1)"),
        ({"ADL_DRAWDOWN_STOPS": "BTC=0"}, "ADL_DRAWDOWN_STOPS: BTC must be a fraction in (0, 1)"),
        ({"ADL_DRAWDOWN_STOPS": "BTC=half"}, "ADL_DRAWDOWN_STOPS: BTC 'half' is not a finite decimal"),
        ({"ADL_DRAWDOWN_WINDOWS_MS": "USDT=0"}, "ADL_DRAWDOWN_WINDOWS_MS: USDT must be in [1, "),
        ({"ADL_DRAWDOWN_WINDOWS_MS": "USDT=soon"}, "ADL_DRAWDOWN_WINDOWS_MS: USDT 'soon' is not an integer"),
        # an override that breaks 0 < STOP < START for its fund
        (
            {"ADL_DRAWDOWN_START": "0.3", "ADL_DRAWDOWN_STOP": "0.25", "ADL_DRAWDOWN_STARTS": "USDT=0.2"},
            "ADL_DRAWDOWN_STARTS / ADL_DRAWDOWN_STOPS for USDT: must satisfy 0 < STOP < START < 1, "
            "got START 0.2, STOP 0.25",
        ),
        (
            {"ADL_DRAWDOWN_START": "0.3", "ADL_DRAWDOWN_STOP": "0.25", "ADL_DRAWDOWN_STOPS": "ETH=0.3"},
            "ADL_DRAWDOWN_STARTS / ADL_DRAWDOWN_STOPS for ETH: must satisfy",
        ),
    ],
)
def test_every_invalid_setting_stops_start_up_naming_the_variable(
    environment: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        Settings.from_env(environment)
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        drawdown_rules(environment)


@pytest.mark.parametrize(
    ("environment", "variable"),
    [
        ({"ADL_DRAWDOWN_WINDOW_MS": "3600000"}, "ADL_DRAWDOWN_WINDOW_MS"),
        ({"ADL_DRAWDOWN_WINDOWS_MS": "USDT=3600000"}, "ADL_DRAWDOWN_WINDOWS_MS"),
        (
            {
                "ADL_DRAWDOWN_STARTS": "BTC=0.3",
                "ADL_DRAWDOWN_STOPS": "BTC=0.2",
                "ADL_DRAWDOWN_WINDOWS_MS": "USDT=1",
            },
            "ADL_DRAWDOWN_WINDOWS_MS",
        ),
    ],
)
def test_a_window_without_thresholds_stops_start_up(environment: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(environment)


POOLS = """
[[pools]]
fund = "USDT-MEME"
currency = "USDT"
symbols = ["MEME*USDT"]
initial_balance = "1000"
"""


def test_a_per_fund_override_on_a_pool_id_gives_the_pool_the_policy(tmp_path: Path) -> None:
    pools = tmp_path / "pools.toml"
    pools.write_text(POOLS)
    configured = rules(
        FUND_POOLS_FILE=str(pools),
        FUND_INITIAL_BALANCES="USDT=1000",
        ADL_DRAWDOWN_STARTS="USDT-MEME=0.3",
        ADL_DRAWDOWN_STOPS="USDT-MEME=0.25",
        ADL_DRAWDOWN_WINDOWS_MS="USDT-MEME=60000",
    )
    assert configured.policy_for("USDT-MEME").drawdown == DrawdownPolicy(D("0.3"), D("0.25"), 60_000)
    ledger = Ledger(configured)
    meme = ledger.fold(make_fill(fill_id="m1", symbol="MEMEUSDT", fill_price="27700", fee="0", timestamp=T))
    usdt = ledger.fold(make_fill(fill_id="u1", fill_price="27700", fee="0", timestamp=T))
    assert meme.delta is not None and meme.delta.fund == "USDT-MEME"
    assert meme.state_change is not None
    assert (meme.state_change.fund, meme.state_change.state, meme.state_change.peak) == (
        "USDT-MEME",
        "drawdown",
        D("1000"),
    )
    assert usdt.delta is not None and usdt.delta.fund == "USDT"  # the currency fund: v1
    assert usdt.state_change is None and usdt.state.peak is None
    # the pool's losses go to ADL now; a top-up of the pool brings it back (200 / 1000 <= 0.25)
    unpaid = ledger.fold(make_fill(fill_id="m2", symbol="MEMEUSDT", fill_price="27990", fee="0", timestamp=T))
    assert unpaid.trigger is not None and unpaid.trigger.reason == "fund_drawdown"
    top_up = FundOperation("op-1", "top_up", "USDT-MEME", D("100"), "treasury", "", None, T + 1)
    refilled = ledger.operate(top_up, "USDT")
    assert refilled.state_change is not None and refilled.state_change.state == "normal"


@pytest.mark.parametrize("variable", ["ADL_DRAWDOWN_STARTS", "ADL_DRAWDOWN_STOPS", "ADL_DRAWDOWN_WINDOWS_MS"])
def test_an_override_for_a_pool_the_pools_file_does_not_define_stops_start_up(variable: str) -> None:
    """A typo in a pool id would otherwise leave the pool without the protection asked for."""
    value = "60000" if variable.endswith("_MS") else "0.2"
    environment = {"ADL_DRAWDOWN_START": "0.3", "ADL_DRAWDOWN_STOP": "0.1", variable: f"USDT-MEMEE={value}"}
    with pytest.raises(ConfigError, match=f"^{variable}: 'USDT-MEMEE' is a pool id"):
        Settings.from_env(environment)


@pytest.mark.parametrize("text", ["0.123456789", "1E-9"])
def test_thresholds_have_at_most_the_eight_places_of_the_published_drawdown(text: str) -> None:
    with pytest.raises(
        ConfigError, match=r"^ADL_DRAWDOWN_START: must be a fraction in \(0, 1\) with at most 8"
    ):
        Settings.from_env({"ADL_DRAWDOWN_START": text, "ADL_DRAWDOWN_STOP": "0.00000001"})
