"""The worker's Prometheus metrics, rendered by prometheus-client for ``GET /metrics``.

Money in Prometheus is float64 by nature: a balance sample keeps about 15 significant digits, so
``123456789012345.12345678`` shows as ``1.2345678901234512e+14``. Use it for graphs and alerts; the exact
balance is the decimal string of ``GET /funds``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from operator import attrgetter
from typing import ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from processor import codec
from processor.domain.state import FundState

#: The ``Content-Type`` of :meth:`Metrics.render`: Prometheus text format 0.0.4.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: Reasons shown (at 0) before any message is rejected, so that alerts on them have a series to watch.
REJECTION_REASONS = (
    codec.INVALID_JSON,
    codec.INVALID_EVENT,
    codec.UNSUPPORTED_VERSION,
    codec.CONFLICTING_DUPLICATE,
    codec.OPERATION_REFUSED,
)

#: Events per batch: up to a few times the default ``BATCH_SIZE`` of 2000.
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, float("inf"))


class _FundCollector:
    """Fund gauges and consumer lag, read from the worker at scrape time: nothing to do per fill."""

    def __init__(
        self, funds: Callable[[], Iterable[FundState]], lag: Callable[[], Mapping[str, int]]
    ) -> None:
        self._funds = funds
        self._lag = lag

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                "insurance_fund_balance",
                "Fund balance in its margin currency (a float64 approximation; exact in GET /funds).",
                labels=["fund"],
            ),
            GaugeMetricFamily(
                "insurance_fund_sequence", "Last sequence number of the fund's ledger.", labels=["fund"]
            ),
            GaugeMetricFamily(
                "insurance_fund_last_event_timestamp_seconds",
                "Event time of the fund's last applied event, in seconds since the epoch.",
                labels=["fund"],
            ),
            GaugeMetricFamily(
                "insurance_fund_consumer_lag",
                "Messages not yet processed, per input partition.",
                labels=["partition"],
            ),
            GaugeMetricFamily(
                "insurance_fund_adl_drawdown_state",
                "ADL policy: 1 while the fund is in drawdown (pays no losses), 0 when normal.",
                labels=["fund"],
            ),
            GaugeMetricFamily(
                "insurance_fund_drawdown",
                "ADL policy: (peak - balance) / peak after the fund's last delta.",
                labels=["fund"],
            ),
            GaugeMetricFamily(
                "insurance_fund_peak_balance",
                "ADL policy: the highest balance of the trailing window (a float64 approximation).",
                labels=["fund"],
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        balance, sequence, last_event, lag, adl_state, drawdown, peak = families
        for state in sorted(self._funds(), key=attrgetter("fund")):
            balance.add_metric([state.fund], float(state.balance))
            sequence.add_metric([state.fund], state.sequence)
            if state.last_timestamp is not None:
                last_event.add_metric([state.fund], state.last_timestamp / 1000)
            if state.peak is not None:  # under an ADL policy
                adl_state.add_metric([state.fund], 1 if state.adl_state == "drawdown" else 0)
                drawdown.add_metric([state.fund], float(state.drawdown or 0))
                peak.add_metric([state.fund], float(state.peak))
        for partition, messages in sorted(self._lag().items()):
            lag.add_metric([partition], messages)
        return families


class _WithoutCreated:
    """The registry without its ``*_created`` samples.

    Format 0.0.4 has no place for a counter's creation time: Prometheus would store it as one more gauge per
    series, which nobody reads.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():  # fresh Metric objects on every collect
            created = metric.name + "_created"
            metric.samples = [sample for sample in metric.samples if sample.name != created]
            yield metric


class Metrics:
    """The worker's metrics, in a registry of their own (never prometheus-client's global one).

    The worker counts once per batch (``metrics.events.inc(n)``); fund gauges and consumer lag come from the
    ``funds`` and ``lag`` callbacks, called at each scrape. Counters restart at zero with the process, as
    Prometheus expects.
    """

    CONTENT_TYPE: ClassVar[str] = CONTENT_TYPE

    def __init__(
        self, funds: Callable[[], Iterable[FundState]], lag: Callable[[], Mapping[str, int]]
    ) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.events = Counter(
            "insurance_fund_events",
            "Input messages processed (accepted, duplicate or rejected).",
            registry=registry,
        )
        self.deltas = Counter("insurance_fund_deltas", "Fund deltas published.", registry=registry)
        self.duplicates = Counter(
            "insurance_fund_duplicates", "Re-sent fills ignored as identical duplicates.", registry=registry
        )
        self.adl_triggers = Counter(
            "insurance_fund_adl_triggers", "ADL triggers published.", registry=registry
        )
        self.forwarded = Counter(
            "insurance_fund_forwarded", "Fills re-partitioned to their fund's partition.", registry=registry
        )
        self.skipped_replayed = Counter(
            "insurance_fund_replayed_skipped",
            "Input skipped at a claim: applied to the funds but not committed by the group (never expected).",
            registry=registry,
        )
        self.rejected = Counter(
            "insurance_fund_rejected",
            "Messages sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in REJECTION_REASONS:
            self.rejected.labels(reason)
        self.batches = Counter("insurance_fund_batches", "Processing batches committed.", registry=registry)
        self.rebalances = Counter(
            "insurance_fund_rebalances", "Partition assignments this worker received.", registry=registry
        )
        self.batch_seconds = Histogram(
            "insurance_fund_batch_seconds",
            "Time to process and commit one batch, in seconds.",
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "insurance_fund_commit_seconds", "Time to commit one transaction, in seconds.", registry=registry
        )
        self.batch_size = Histogram(
            "insurance_fund_batch_size",
            "Input messages per processing batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.owned_partitions = Gauge(
            "insurance_fund_owned_partitions", "Input partitions this worker owns now.", registry=registry
        )
        self.claim_seconds = Gauge(
            "insurance_fund_last_claim_seconds",
            "How long the last claim of new partitions took (fencing plus restoring their tables).",
            registry=registry,
        )
        self.restored_fills = Gauge(
            "insurance_fund_last_claim_restored_fills",
            "Fills the duplicate windows remembered after the last claim of new partitions.",
            registry=registry,
        )
        fund_collector: Collector = _FundCollector(funds, lag)
        registry.register(fund_collector)

    def render(self) -> bytes:
        """The exposition text of every metric (format 0.0.4, :data:`CONTENT_TYPE`)."""
        return generate_latest(_WithoutCreated(self.registry))
