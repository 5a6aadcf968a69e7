"""``GET /metrics``: the Prometheus text exposition format (version 0.0.4), checked line by line."""

from __future__ import annotations

import re
from collections import Counter
from decimal import Decimal

import attrs
from hypothesis import given
from hypothesis import strategies as st

from processor.domain.ledger import Ledger
from processor.domain.state import FundRules, FundState
from processor.stream.metrics import Metrics, render
from tests.strategies import make_fill

D = Decimal
REASONS = ("conflicting_duplicate", "invalid_event", "invalid_json", "unsupported_version")
COUNTERS = {
    "insurance_fund_events_total": "events",
    "insurance_fund_deltas_total": "deltas",
    "insurance_fund_duplicates_total": "duplicates",
    "insurance_fund_adl_triggers_total": "adl_triggers",
    "insurance_fund_forwarded_total": "forwarded",
    "insurance_fund_replayed_skipped_total": "skipped_replayed",
}

# --- a strict reader of the text format -----------------------------------------------------------------

_METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(
    rf"(?P<name>{_METRIC_NAME})(?:\{{(?P<labels>(?:{_LABEL}(?:,{_LABEL})*)?)\}})? (?P<value>\S+)"
)
_ONE_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
_VALUE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|NaN|[+-]Inf")
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


@attrs.define
class Family:
    name: str
    help: str | None = None
    type: str | None = None
    samples: list[tuple[dict[str, str], str]] = attrs.field(factory=list)

    def by_label(self, label: str) -> dict[str, str]:
        return {labels[label]: value for labels, value in self.samples}


def unescape(value: str) -> str:
    return re.sub(r'\\[\\"n]', lambda match: _UNESCAPE[match.group()], value)


def parse_exposition(text: str) -> dict[str, Family]:
    """Read exposition text, asserting every rule of format 0.0.4 the renderer has to follow."""
    assert text.endswith("\n"), "the text must end with a line feed"
    families: dict[str, Family] = {}
    previous_sample_name: str | None = None
    for line in text[:-1].split("\n"):  # only "\n" ends a line; "\r" inside a label value is legal
        assert line, "no blank lines"
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            keyword, rest = line[2:6], line[7:]
            name, _, argument = rest.partition(" ")
            assert re.fullmatch(_METRIC_NAME, name), line
            family = families.setdefault(name, Family(name))
            assert not family.samples, f"{keyword} of {name} after its samples"
            if keyword == "HELP":
                assert family.help is None, f"second HELP for {name}"
                assert "\n" not in argument
                assert re.search(r"\\(?![\\n])", argument) is None, f"unescaped backslash in HELP: {line}"
                family.help = argument
            else:
                assert family.type is None, f"second TYPE for {name}"
                assert argument in ("counter", "gauge", "histogram", "summary", "untyped"), line
                family.type = argument
            continue
        assert not line.startswith("#"), f"unexpected comment: {line!r}"
        match = _SAMPLE.fullmatch(line)
        assert match is not None, f"not a sample line: {line!r}"
        name, value = match["name"], match["value"]
        assert _VALUE.fullmatch(value), f"not a Prometheus float: {line!r}"
        family = families.get(name)
        assert family is not None and family.type is not None, f"sample of {name} before its TYPE"
        assert family.help is not None, f"sample of {name} before its HELP"
        assert name == previous_sample_name or not family.samples, f"samples of {name} are not grouped"
        labels = {label: unescape(raw) for label, raw in _ONE_LABEL.findall(match["labels"] or "")}
        assert labels not in [seen for seen, _ in family.samples], f"repeated series: {line!r}"
        family.samples.append((labels, value))
        previous_sample_name = name
    for family in families.values():
        assert family.help is not None and family.type is not None, f"{family.name} lacks HELP or TYPE"
    return families


# --- helpers --------------------------------------------------------------------------------------------


def state(fund: str, balance: Decimal, sequence: int = 1) -> FundState:
    opened = FundState.opened(fund, FundRules().policy_for(fund))
    return opened._replace(balance=balance, sequence=sequence)


def rendered(
    metrics: Metrics | None = None, funds: list[FundState] | None = None, lag: dict[str, int] | None = None
) -> dict[str, Family]:
    return parse_exposition(render(metrics or Metrics(), funds or [], lag or {}))


# --- tests ----------------------------------------------------------------------------------------------


def test_empty_worker_renders_every_family() -> None:
    families = rendered()
    assert set(families) == {
        *COUNTERS,
        "insurance_fund_rejected_total",
        "insurance_fund_balance",
        "insurance_fund_sequence",
        "insurance_fund_consumer_lag",
    }
    for name in COUNTERS:
        assert families[name].type == "counter"
        assert families[name].samples == [({}, "0")]
    for name in ("insurance_fund_balance", "insurance_fund_sequence", "insurance_fund_consumer_lag"):
        assert families[name].type == "gauge"
        assert families[name].samples == []


def test_counters_carry_the_metrics() -> None:
    metrics = Metrics(
        events=11, deltas=7, duplicates=2, adl_triggers=3, forwarded=5, skipped_replayed=4, batches=9
    )
    families = rendered(metrics)
    for name, attribute in COUNTERS.items():
        assert families[name].samples == [({}, str(getattr(metrics, attribute)))]


def test_every_rejection_reason_is_present_even_when_zero() -> None:
    assert rendered()["insurance_fund_rejected_total"].by_label("reason") == dict.fromkeys(REASONS, "0")
    metrics = Metrics(rejected=Counter({"invalid_json": 3, "conflicting_duplicate": 1}))
    assert rendered(metrics)["insurance_fund_rejected_total"].by_label("reason") == {
        "conflicting_duplicate": "1",
        "invalid_event": "0",
        "invalid_json": "3",
        "unsupported_version": "0",
    }


def test_an_unknown_rejection_reason_is_rendered_too() -> None:
    metrics = Metrics(rejected=Counter({"something_new": 2}))
    reasons = rendered(metrics)["insurance_fund_rejected_total"].by_label("reason")
    assert reasons == {**dict.fromkeys(REASONS, "0"), "something_new": "2"}


def test_balances_are_fixed_point_text() -> None:
    funds = [
        state("BTC", D("0E-8")),
        state("ETH", D("0E-10")),
        state("USDT", D("-12.50000000")),
        state("USDC", D("123456789012345.12345678")),
        state("XRP", D("1E-8")),
    ]
    families = rendered(funds=funds)
    assert families["insurance_fund_balance"].by_label("fund") == {
        "BTC": "0.00000000",
        "ETH": "0.0000000000",
        "USDC": "123456789012345.12345678",
        "USDT": "-12.50000000",
        "XRP": "0.00000001",
    }
    assert families["insurance_fund_sequence"].by_label("fund") == dict.fromkeys(
        ["BTC", "ETH", "USDC", "USDT", "XRP"], "1"
    )


def test_balances_of_a_folded_ledger() -> None:
    ledger = Ledger(FundRules(precision={"BTC": 10}))
    ledger.fold(make_fill())
    ledger.fold(make_fill())  # a duplicate: no balance change
    ledger.fold(
        make_fill(fill_id="btc-1", margin_currency="BTC", symbol="BTCUSD", fee="0", fill_price="28000")
    )
    families = rendered(funds=list(ledger.funds.values()))
    assert families["insurance_fund_balance"].by_label("fund") == {
        "BTC": "0.0000000000",
        "USDT": "199.50000000",
    }
    assert families["insurance_fund_sequence"].by_label("fund") == {"BTC": "1", "USDT": "1"}


def test_label_values_are_escaped() -> None:
    awkward = 'A"B\\C\nD'
    text = render(Metrics(rejected=Counter({awkward: 1})), [state(awkward, D("1.00000000"))], {awkward: 3})
    assert 'fund="A\\"B\\\\C\\nD"' in text
    assert 'reason="A\\"B\\\\C\\nD"' in text
    assert 'partition="A\\"B\\\\C\\nD"' in text
    families = parse_exposition(text)
    assert families["insurance_fund_balance"].by_label("fund") == {awkward: "1.00000000"}
    assert families["insurance_fund_rejected_total"].by_label("reason")[awkward] == "1"
    assert families["insurance_fund_consumer_lag"].by_label("partition") == {awkward: "3"}


def test_funds_and_partitions_come_out_sorted() -> None:
    funds = [state("USDT", D("1.00000000")), state("BTC", D("2.00000000"))]
    lag = {"liquidation-fills:2": 0, "liquidation-fills:0": 5, "liquidation-fills:1": 1}
    text = render(Metrics(), funds, lag)
    assert text == render(Metrics(), list(reversed(funds)), dict(reversed(list(lag.items()))))
    families = parse_exposition(text)
    assert [labels["fund"] for labels, _ in families["insurance_fund_balance"].samples] == ["BTC", "USDT"]
    assert [labels["partition"] for labels, _ in families["insurance_fund_consumer_lag"].samples] == [
        "liquidation-fills:0",
        "liquidation-fills:1",
        "liquidation-fills:2",
    ]


_labels = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)


@st.composite
def fund_states(draw: st.DrawFn) -> list[FundState]:
    names = draw(st.lists(_labels, unique=True, max_size=5))
    states = []
    for name in names:
        places = draw(st.sampled_from([0, 2, 8, 10, 18]))
        mantissa = draw(st.integers(-(10**20), 10**20))
        states.append(state(name, D(mantissa).scaleb(-places), draw(st.integers(0, 10**9))))
    return states


@given(
    counts=st.lists(st.integers(0, 10**12), min_size=7, max_size=7),
    rejected=st.dictionaries(_labels, st.integers(0, 10**9), max_size=4),
    funds=fund_states(),
    lag=st.dictionaries(_labels, st.integers(0, 10**12), max_size=4),
)
def test_any_worker_renders_valid_text(
    counts: list[int], rejected: dict[str, int], funds: list[FundState], lag: dict[str, int]
) -> None:
    metrics = Metrics(*counts, rejected=Counter(rejected))
    families = parse_exposition(render(metrics, funds, lag))
    balances = families["insurance_fund_balance"].by_label("fund")
    assert balances.keys() == {fund.fund for fund in funds}
    for fund in funds:
        text = balances[fund.fund]
        assert re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", text), text
        assert D(text) == fund.balance
        assert len(text.partition(".")[2]) == max(-int(fund.balance.as_tuple().exponent), 0)
    assert families["insurance_fund_rejected_total"].by_label("reason") == {
        **dict.fromkeys(REASONS, "0"),
        **{reason: str(count) for reason, count in rejected.items()},
    }
    assert families["insurance_fund_consumer_lag"].by_label("partition") == {
        partition: str(count) for partition, count in lag.items()
    }
