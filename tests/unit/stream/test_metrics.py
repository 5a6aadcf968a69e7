"""``GET /metrics``: the worker's metrics through prometheus-client, read back with its own text parser."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from processor.domain.ledger import Ledger
from processor.domain.state import FundRules, FundState
from processor.stream.metrics import CONTENT_TYPE, REJECTION_REASONS, Metrics
from tests.strategies import make_fill

D = Decimal
#: exposed counter name -> the worker's attribute
COUNTERS = {
    "insurance_fund_events_total": "events",
    "insurance_fund_deltas_total": "deltas",
    "insurance_fund_duplicates_total": "duplicates",
    "insurance_fund_adl_triggers_total": "adl_triggers",
    "insurance_fund_forwarded_total": "forwarded",
    "insurance_fund_replayed_skipped_total": "skipped_replayed",
    "insurance_fund_batches_total": "batches",
    "insurance_fund_rebalances_total": "rebalances",
}
HISTOGRAMS = {
    "insurance_fund_batch_seconds": "batch_seconds",
    "insurance_fund_commit_seconds": "commit_seconds",
    "insurance_fund_batch_size": "batch_size",
}
FUND_GAUGES = (
    "insurance_fund_balance",
    "insurance_fund_sequence",
    "insurance_fund_last_event_timestamp_seconds",
    "insurance_fund_consumer_lag",
    "insurance_fund_adl_drawdown_state",
    "insurance_fund_drawdown",
    "insurance_fund_peak_balance",
)


def state(fund: str, balance: Decimal, sequence: int = 1, last_timestamp: int | None = None) -> FundState:
    opened = FundState.opened(fund, FundRules().policy_for(fund))
    return opened._replace(balance=balance, sequence=sequence, last_timestamp=last_timestamp)


def make_metrics(funds: Iterable[FundState] = (), lag: Mapping[str, int] | None = None) -> Metrics:
    fund_list, lag_map = list(funds), dict(lag or {})
    return Metrics(lambda: fund_list, lambda: lag_map)


def scrape(metrics: Metrics) -> dict[str, Metric]:
    """Families keyed by their exposed name (a counter's with ``_total``), each parsed exactly once."""
    families: dict[str, Metric] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        name = family.name + "_total" if family.type == "counter" else family.name
        assert name not in families, f"{name} rendered twice"
        families[name] = family
    return families


def by_label(family: Metric, label: str) -> dict[str, float]:
    return {sample.labels[label]: sample.value for sample in family.samples}


def single(family: Metric) -> float:
    [sample] = family.samples
    assert sample.labels == {}
    return sample.value


# --- tests ----------------------------------------------------------------------------------------------


WORKER_GAUGES = (
    "insurance_fund_owned_partitions",
    "insurance_fund_last_claim_seconds",
    "insurance_fund_last_claim_restored_fills",
)


def test_a_fresh_worker_renders_every_family() -> None:
    families = scrape(make_metrics())
    assert set(families) == {
        *COUNTERS,
        "insurance_fund_rejected_total",
        *HISTOGRAMS,
        *WORKER_GAUGES,
        *FUND_GAUGES,
    }
    for name in COUNTERS:
        assert families[name].type == "counter"
        assert single(families[name]) == 0
    for name in HISTOGRAMS:
        assert families[name].type == "histogram"
    for name in (*FUND_GAUGES, *WORKER_GAUGES):
        assert families[name].type == "gauge"
    for name in FUND_GAUGES:
        assert families[name].samples == []
    assert all(family.documentation for family in families.values())


def test_no_created_series() -> None:
    text = make_metrics().render().decode()
    assert "_created" not in text


def test_counters_carry_the_counts() -> None:
    metrics = make_metrics()
    for count, attribute in enumerate(COUNTERS.values(), start=3):
        getattr(metrics, attribute).inc(count)
    families = scrape(metrics)
    for count, name in enumerate(COUNTERS, start=3):
        assert single(families[name]) == count
    assert "insurance_fund_events_total 3.0" in metrics.render().decode().splitlines()


def test_every_rejection_reason_is_present_even_when_zero() -> None:
    metrics = make_metrics()
    assert by_label(scrape(metrics)["insurance_fund_rejected_total"], "reason") == dict.fromkeys(
        REJECTION_REASONS, 0
    )
    metrics.rejected.labels("invalid_json").inc(3)
    metrics.rejected.labels("conflicting_duplicate").inc()
    metrics.rejected.labels("something_new").inc(2)
    assert by_label(scrape(metrics)["insurance_fund_rejected_total"], "reason") == {
        "invalid_json": 3,
        "invalid_event": 0,
        "unsupported_version": 0,
        "conflicting_duplicate": 1,
        "operation_refused": 0,
        "something_new": 2,
    }


def test_histograms_count_observations() -> None:
    metrics = make_metrics()
    metrics.batch_size.observe(1)
    metrics.batch_size.observe(1500)
    metrics.batch_seconds.observe(0.02)
    metrics.commit_seconds.observe(0.004)
    metrics.commit_seconds.observe(3.0)
    families = scrape(metrics)
    size = {
        sample.name: sample
        for sample in families["insurance_fund_batch_size"].samples
        if "le" not in sample.labels
    }
    assert size["insurance_fund_batch_size_count"].value == 2
    assert size["insurance_fund_batch_size_sum"].value == 1501
    buckets = {
        float(sample.labels["le"]): sample.value
        for sample in families["insurance_fund_batch_size"].samples
        if sample.name.endswith("_bucket")
    }
    assert buckets[1.0] == 1 and buckets[1000.0] == 1 and buckets[2000.0] == 2 and buckets[float("inf")] == 2
    commit = {
        float(sample.labels["le"]): sample.value
        for sample in families["insurance_fund_commit_seconds"].samples
        if sample.name.endswith("_bucket")
    }
    assert commit[0.005] == 1 and commit[2.5] == 1 and commit[5.0] == 2
    assert any(
        sample.name == "insurance_fund_batch_seconds_count" and sample.value == 1
        for sample in families["insurance_fund_batch_seconds"].samples
    )


def test_owned_partitions_is_a_gauge_the_worker_sets() -> None:
    metrics = make_metrics()
    metrics.owned_partitions.set(3)
    assert single(scrape(metrics)["insurance_fund_owned_partitions"]) == 3
    metrics.owned_partitions.set(1)
    assert single(scrape(metrics)["insurance_fund_owned_partitions"]) == 1


def test_fund_gauges_are_read_at_each_scrape() -> None:
    funds: list[FundState] = []
    lag: dict[str, int] = {}
    calls = {"funds": 0, "lag": 0}

    def current_funds() -> list[FundState]:
        calls["funds"] += 1
        return funds

    def current_lag() -> dict[str, int]:
        calls["lag"] += 1
        return lag

    metrics = Metrics(current_funds, current_lag)
    assert calls == {"funds": 0, "lag": 0}, "nothing is read before a scrape"
    assert scrape(metrics)["insurance_fund_balance"].samples == []
    funds.append(state("USDT", D("199.50000000"), sequence=4, last_timestamp=1_700_000_000_123))
    lag["liquidation-fills:0"] = 7
    families = scrape(metrics)
    assert calls == {"funds": 2, "lag": 2}, "one call per scrape"
    assert by_label(families["insurance_fund_balance"], "fund") == {"USDT": 199.5}
    assert by_label(families["insurance_fund_sequence"], "fund") == {"USDT": 4}
    assert by_label(families["insurance_fund_last_event_timestamp_seconds"], "fund") == {
        "USDT": 1_700_000_000.123
    }
    assert by_label(families["insurance_fund_consumer_lag"], "partition") == {"liquidation-fills:0": 7}


def test_a_fund_without_events_has_no_timestamp() -> None:
    families = scrape(make_metrics([state("BTC", D("0E-8"), sequence=0)]))
    assert by_label(families["insurance_fund_balance"], "fund") == {"BTC": 0}
    assert families["insurance_fund_last_event_timestamp_seconds"].samples == []


def test_balances_are_float64_approximations() -> None:
    exact = D("123456789012345.12345678")
    families = scrape(
        make_metrics([state("USDC", exact), state("XRP", D("1E-8")), state("USDT", D("-12.5"))])
    )
    balances = by_label(families["insurance_fund_balance"], "fund")
    assert balances == {"USDC": float(exact), "XRP": 1e-8, "USDT": -12.5}
    assert D(balances["USDC"]) != exact  # money in Prometheus is float64: the exact value is in GET /funds


def test_balances_of_a_folded_ledger() -> None:
    ledger = Ledger(FundRules(precision={"BTC": 10}))
    ledger.fold(make_fill())
    ledger.fold(make_fill())  # a duplicate: no balance change
    ledger.fold(
        make_fill(fill_id="btc-1", margin_currency="BTC", symbol="BTCUSD", fee="0", fill_price="28000")
    )
    families = scrape(make_metrics(ledger.funds.values()))
    assert by_label(families["insurance_fund_balance"], "fund") == {"BTC": 0, "USDT": 199.5}
    assert by_label(families["insurance_fund_sequence"], "fund") == {"BTC": 1, "USDT": 1}
    text = make_metrics(ledger.funds.values()).render().decode()
    assert 'insurance_fund_balance{fund="USDT"} 199.5\n' in text


def test_label_values_are_escaped() -> None:
    awkward = 'A"B\\C\nD'
    metrics = make_metrics([state(awkward, D("1.00000000"))], {awkward: 3})
    metrics.rejected.labels(awkward).inc()
    text = metrics.render().decode()
    assert 'fund="A\\"B\\\\C\\nD"' in text
    assert 'reason="A\\"B\\\\C\\nD"' in text
    assert 'partition="A\\"B\\\\C\\nD"' in text
    families = scrape(metrics)
    assert by_label(families["insurance_fund_balance"], "fund") == {awkward: 1}
    assert by_label(families["insurance_fund_rejected_total"], "reason")[awkward] == 1
    assert by_label(families["insurance_fund_consumer_lag"], "partition") == {awkward: 3}


def test_funds_and_partitions_come_out_sorted() -> None:
    funds = [state("USDT", D("1.00000000")), state("BTC", D("2.00000000"))]
    lag = {"liquidation-fills:2": 0, "liquidation-fills:0": 5, "liquidation-fills:1": 1}
    text = make_metrics(funds, lag).render()
    assert text == make_metrics(reversed(funds), dict(reversed(list(lag.items())))).render()
    families = scrape(make_metrics(funds, lag))
    assert [sample.labels["fund"] for sample in families["insurance_fund_balance"].samples] == ["BTC", "USDT"]
    assert [sample.labels["partition"] for sample in families["insurance_fund_consumer_lag"].samples] == [
        "liquidation-fills:0",
        "liquidation-fills:1",
        "liquidation-fills:2",
    ]


def test_each_instance_has_its_own_registry() -> None:
    first, second = make_metrics(), make_metrics()  # a shared registry would refuse the second
    first.events.inc(5)
    assert single(scrape(first)["insurance_fund_events_total"]) == 5
    assert single(scrape(second)["insurance_fund_events_total"]) == 0
    assert REGISTRY.get_sample_value("insurance_fund_events_total") is None


def test_content_type_is_text_format_0_0_4() -> None:
    assert CONTENT_TYPE == Metrics.CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


_labels = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)


@st.composite
def fund_states(draw: st.DrawFn) -> list[FundState]:
    names = draw(st.lists(_labels, unique=True, max_size=5))
    states = []
    for name in names:
        places = draw(st.sampled_from([0, 2, 8, 10, 18]))
        mantissa = draw(st.integers(-(10**20), 10**20))
        timestamp = draw(st.none() | st.integers(0, 2**53))
        states.append(state(name, D(mantissa).scaleb(-places), draw(st.integers(0, 10**9)), timestamp))
    return states


@given(
    counts=st.lists(st.integers(0, 10**12), min_size=len(COUNTERS), max_size=len(COUNTERS)),
    rejected=st.dictionaries(_labels, st.integers(0, 10**9), max_size=4),
    funds=fund_states(),
    lag=st.dictionaries(_labels, st.integers(0, 10**12), max_size=4),
)
def test_any_worker_renders_parseable_text(
    counts: list[int], rejected: dict[str, int], funds: list[FundState], lag: dict[str, int]
) -> None:
    metrics = make_metrics(funds, lag)
    for attribute, count in zip(COUNTERS.values(), counts, strict=True):
        getattr(metrics, attribute).inc(count)
    for reason, count in rejected.items():
        metrics.rejected.labels(reason).inc(count)
    families = scrape(metrics)
    for name, count in zip(COUNTERS, counts, strict=True):
        assert single(families[name]) == count
    assert by_label(families["insurance_fund_balance"], "fund") == {
        fund.fund: float(fund.balance) for fund in funds
    }
    assert by_label(families["insurance_fund_sequence"], "fund") == {
        fund.fund: fund.sequence for fund in funds
    }
    assert by_label(families["insurance_fund_last_event_timestamp_seconds"], "fund") == {
        fund.fund: fund.last_timestamp / 1000 for fund in funds if fund.last_timestamp is not None
    }
    assert by_label(families["insurance_fund_rejected_total"], "reason") == {
        **dict.fromkeys(REJECTION_REASONS, 0),
        **rejected,
    }
    assert by_label(families["insurance_fund_consumer_lag"], "partition") == lag


def test_adl_policy_gauges_appear_for_funds_under_the_policy_only() -> None:
    under = state("USDT-MEME", Decimal("700"))._replace(
        adl_state="drawdown", peak=Decimal("1000.00000000"), drawdown=Decimal("0.30000000")
    )
    families = scrape(make_metrics([under, state("BTC", Decimal("2"))]))
    assert by_label(families["insurance_fund_adl_drawdown_state"], "fund") == {"USDT-MEME": 1}
    assert by_label(families["insurance_fund_drawdown"], "fund") == {"USDT-MEME": 0.3}
    assert by_label(families["insurance_fund_peak_balance"], "fund") == {"USDT-MEME": 1000}
