"""The pools file (SPEC section 7): read once at start-up, every problem named by pool and field."""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from pathlib import Path

import pytest

from processor.cli import main
from processor.config import ConfigError, Settings, fund_rules, load_pools
from processor.domain.pools import FundPools, Pool
from tests.conftest import ROOT

D = Decimal
EXAMPLE = ROOT / "examples" / "pools.toml"
GOOD_POOL = """
[[pools]]
fund = "USDT-MEME"
currency = "USDT"
symbols = ["MEME*USDT", "PEPEUSDT"]
"""


def write(tmp_path: Path, text: str, name: str = "pools.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def pools_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_pools(path)
    message = str(raised.value)
    assert message.startswith(f"FUND_POOLS_FILE: {path}: "), message
    return message.removeprefix(f"FUND_POOLS_FILE: {path}: ")


# --- good files -----------------------------------------------------------------------------------


def test_the_example_pools_file_loads() -> None:
    assert load_pools(str(EXAMPLE)) == FundPools(
        [
            Pool(
                "USDT-MEME", "USDT", ("MEME*USDT", "PEPEUSDT", "WIFUSDT"), D("20000"), D("1000"), None, None
            ),
            Pool("USDT-NEW", "USDT", ("TIAUSDT", "ZETAUSDT"), D("5000"), None, 1700000000000, 1702592000000),
        ]
    )


def test_the_golden_scenarios_pools_file_is_the_example() -> None:
    assert load_pools(str(ROOT / "tests" / "golden" / "pools" / "pools.toml")) == load_pools(str(EXAMPLE))


def test_a_pool_with_every_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[pools]]
fund = "BTC_ALT-2"
currency = "BTC"
symbols = ["*"]
initial_balance = "1.5"
floor = 0
from_timestamp = 0
until_timestamp = 9223372036854775807
""",
    )
    (pool,) = load_pools(path).pools
    assert pool == Pool("BTC_ALT-2", "BTC", ("*",), D("1.5"), D(0), 0, 2**63 - 1)
    assert str(pool.initial_balance) == "1.5"


def test_amounts_keep_their_exact_decimal_text(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_POOL + 'initial_balance = "0.1"\nfloor = "1000000000000000"\n')
    (pool,) = load_pools(path).pools
    assert (pool.initial_balance, pool.floor) == (D("0.1"), D("1E+15"))


def test_an_empty_file_and_an_empty_list_mean_no_pools(tmp_path: Path) -> None:
    assert load_pools(write(tmp_path, "")) == FundPools()
    assert load_pools(write(tmp_path, "pools = []\n", "empty-list.toml")) == FundPools()


def test_pools_keep_their_file_order(tmp_path: Path) -> None:
    text = "".join(
        f'[[pools]]\nfund = "USDT-P{number}"\ncurrency = "USDT"\nsymbols = ["*"]\n' for number in (3, 1, 2)
    )
    assert [pool.fund for pool in load_pools(write(tmp_path, text)).pools] == [
        "USDT-P3",
        "USDT-P1",
        "USDT-P2",
    ]


def test_fund_rules_and_the_environment_read_the_pools_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_POOL)
    assert fund_rules(pools_file=path).pools == load_pools(path)
    assert fund_rules().pools == FundPools()
    assert Settings.from_env({"FUND_POOLS_FILE": path}).rules.pools == load_pools(path)
    assert Settings.from_env({"FUND_POOLS_FILE": ""}).rules.pools == FundPools()  # empty means unset


# --- every problem names the pool (number and id) and the field -------------------------------------


@pytest.mark.parametrize(
    "fund",
    [
        '"USDT"',
        '"usdt-meme"',
        '"USDT-"',
        '"-MEME"',
        '"U-MEME"',
        '"USDT MEME"',
        '"USDT-' + "X" * 33 + '"',
        "5",
        '""',
    ],
)
def test_a_bad_pool_id(tmp_path: Path, fund: str) -> None:
    message = pools_error(
        tmp_path, GOOD_POOL + f'[[pools]]\nfund = {fund}\ncurrency = "USDT"\nsymbols = ["X"]\n'
    )
    assert message.startswith("pool 2: field 'fund' must be a pool id such as USDT-MEME"), message


def test_a_missing_pool_id(tmp_path: Path) -> None:
    message = pools_error(tmp_path, '[[pools]]\ncurrency = "USDT"\nsymbols = ["X"]\n')
    assert message.startswith("pool 1: field 'fund' must be a pool id"), message
    assert message.endswith("got None")


@pytest.mark.parametrize("currency", ['"usdt"', '"U"', '"' + "A" * 17 + '"', '"USDT-X"', "1", "[]"])
def test_a_bad_currency(tmp_path: Path, currency: str) -> None:
    message = pools_error(tmp_path, f'[[pools]]\nfund = "USDT-X"\ncurrency = {currency}\nsymbols = ["X"]\n')
    assert message.startswith("pool 1 (USDT-X): field 'currency' must be a margin currency"), message


def test_a_missing_currency(tmp_path: Path) -> None:
    message = pools_error(tmp_path, '[[pools]]\nfund = "USDT-X"\nsymbols = ["X"]\n')
    assert message.startswith("pool 1 (USDT-X): field 'currency'"), message


def test_two_pools_with_one_id(tmp_path: Path) -> None:
    other = GOOD_POOL.replace("USDT-MEME", "USDT-NEW")
    message = pools_error(tmp_path, GOOD_POOL + other + GOOD_POOL)
    assert message == "pool 3 (USDT-MEME): field 'fund' repeats pool 1"


@pytest.mark.parametrize(
    "symbols", ["[]", '""', '"BTCUSDT"', "[1]", '[""]', '["' + "X" * 65 + '"]', '["A", 2]']
)
def test_an_empty_or_bad_symbols_list(tmp_path: Path, symbols: str) -> None:
    message = pools_error(tmp_path, f'[[pools]]\nfund = "USDT-X"\ncurrency = "USDT"\nsymbols = {symbols}\n')
    assert message.startswith("pool 1 (USDT-X): field 'symbols' must be a non-empty list"), message


def test_a_missing_symbols_list(tmp_path: Path) -> None:
    message = pools_error(tmp_path, '[[pools]]\nfund = "USDT-X"\ncurrency = "USDT"\n')
    assert message.startswith("pool 1 (USDT-X): field 'symbols'"), message


@pytest.mark.parametrize("field", ["initial_balance", "floor"])
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1000.5", 'must be a decimal string such as "1000.5", got 1000.5'),  # a TOML float: binary
        ("1e3", 'must be a decimal string such as "1000.5", got 1000.0'),
        ("true", 'must be a decimal string such as "1000.5", got True'),
        ('["1"]', "must be a decimal string such as \"1000.5\", got ['1']"),
        ('"-1"', "must be a decimal in [0, 10^15], got '-1'"),
        ("-1", "must be a decimal in [0, 10^15], got -1"),
        ('"abc"', "must be a decimal in [0, 10^15], got 'abc'"),
        ('""', "must be a decimal in [0, 10^15], got ''"),
        ('"NaN"', "must be a decimal in [0, 10^15], got 'NaN'"),
        ('"Infinity"', "must be a decimal in [0, 10^15], got 'Infinity'"),
        ('"1000000000000000.1"', "must be a decimal in [0, 10^15], got '1000000000000000.1'"),
    ],
)
def test_a_bad_amount(tmp_path: Path, field: str, value: str, expected: str) -> None:
    message = pools_error(tmp_path, GOOD_POOL + f"{field} = {value}\n")
    assert message == f"pool 1 (USDT-MEME): field {field!r} {expected}"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            "from_timestamp = 2000\nuntil_timestamp = 1000\n",
            "field 'until_timestamp' (1000) must be after 'from_timestamp' (2000)",
        ),
        (
            "from_timestamp = 1000\nuntil_timestamp = 1000\n",
            "field 'until_timestamp' (1000) must be after 'from_timestamp' (1000)",
        ),
        (
            "from_timestamp = -1\n",
            "field 'from_timestamp' must be an event time in milliseconds since the epoch",
        ),
        (
            "until_timestamp = 1.5\n",
            "field 'until_timestamp' must be an event time in milliseconds since the",
        ),
        ('from_timestamp = "1700000000000"\n', "field 'from_timestamp' must be an event time"),
        ("until_timestamp = 2024-01-01T00:00:00Z\n", "field 'until_timestamp' must be an event time"),
        ("from_timestamp = true\n", "field 'from_timestamp' must be an event time"),
    ],
)
def test_a_bad_time_range(tmp_path: Path, lines: str, expected: str) -> None:
    message = pools_error(tmp_path, GOOD_POOL + lines)
    assert message.startswith(f"pool 1 (USDT-MEME): {expected}"), message


def test_the_time_range_may_be_a_single_millisecond(tmp_path: Path) -> None:
    (pool,) = load_pools(write(tmp_path, GOOD_POOL + "from_timestamp = 5\nuntil_timestamp = 6\n")).pools
    assert (pool.from_timestamp, pool.until_timestamp) == (5, 6)


@pytest.mark.parametrize("key", ["floors", "Fund", "symbol", "initial-balance", "until"])
def test_an_unknown_key_of_a_pool(tmp_path: Path, key: str) -> None:
    message = pools_error(tmp_path, GOOD_POOL + f'"{key}" = "1"\n')
    assert message.startswith(f"pool 1 (USDT-MEME): unknown field {key!r}; expected fund, currency"), message


def test_an_unknown_top_level_key(tmp_path: Path) -> None:
    message = pools_error(tmp_path, "version = 2\n" + GOOD_POOL)
    assert message == "unknown top-level key 'version'; expected [[pools]] tables"


@pytest.mark.parametrize(
    "text", ['pools = "USDT-MEME"\n', "pools = [1, 2]\n", '[pools]\nfund = "USDT-MEME"\n']
)
def test_pools_that_are_not_an_array_of_tables(tmp_path: Path, text: str) -> None:
    assert pools_error(tmp_path, text) == "'pools' must be an array of tables ([[pools]])"


@pytest.mark.parametrize(
    "text",
    ['fund = "USDT-MEME\n', "[[pools]\n", "{}", '{"pools": []}', "pools = [\n", "a = 1\na = 2\n"],
    ids=["unclosed-string", "bad-table", "braces", "json", "unclosed-array", "repeated-key"],
)
def test_a_file_that_is_not_toml(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"^FUND_POOLS_FILE: {re.escape(path)} is not valid TOML: \S"):
        load_pools(path)


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(GOOD_POOL.encode() + b"# r\xe9serve\n")
    with pytest.raises(ConfigError, match=rf"^FUND_POOLS_FILE: {re.escape(str(path))} is not valid TOML: "):
        load_pools(str(path))


def test_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError) as raised:
        load_pools(str(path))
    assert str(raised.value) == f"FUND_POOLS_FILE: cannot read {path}: No such file or directory"


def test_a_directory_is_not_a_pools_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^FUND_POOLS_FILE: cannot read "):
        load_pools(str(tmp_path))


def test_the_first_bad_pool_is_named_even_after_good_ones(tmp_path: Path) -> None:
    bad = GOOD_POOL.replace("USDT-MEME", "USDT-NEW").replace('currency = "USDT"', 'currency = "usdt"')
    assert pools_error(tmp_path, GOOD_POOL + bad + bad).startswith("pool 2 (USDT-NEW): field 'currency'")


def test_errors_name_the_flag_when_the_file_comes_from_the_command_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_POOL + "floor = 1.5\n")
    with pytest.raises(
        ConfigError, match=rf"^--pools-file: {re.escape(path)}: pool 1 \(USDT-MEME\): field 'floor'"
    ):
        fund_rules(pools_file=path, pools_variable="--pools-file")
    with pytest.raises(ConfigError, match=r"^FUND_POOLS_FILE: .*: pool 1 \(USDT-MEME\): field 'floor'"):
        Settings.from_env({"FUND_POOLS_FILE": path})


@pytest.mark.parametrize("command", ["replay", "audit"])
def test_a_bad_pools_file_stops_the_command_before_it_starts(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FUND_POOLS_FILE", raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached
    path = write(tmp_path, GOOD_POOL + GOOD_POOL)
    arguments = [command, "--pools-file", path]
    if command == "replay":
        (tmp_path / "fills.jsonl").write_bytes(b"")
        arguments += ["--input", str(tmp_path / "fills.jsonl")]
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        assert main(arguments) == 2
    finally:
        for handler in set(root.handlers) - set(handlers):
            root.removeHandler(handler)
        root.setLevel(level)
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: --pools-file: {path}: pool 2 (USDT-MEME): field 'fund' repeats pool 1"
    )
