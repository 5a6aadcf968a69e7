"""Counters the worker keeps, rendered in the Prometheus text format for ``GET /metrics``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from processor.codec import amount_text
from processor.domain.state import FundState


@dataclass
class Metrics:
    """Process-local counters; they restart at zero with the process, as Prometheus expects."""

    events: int = 0
    deltas: int = 0
    duplicates: int = 0
    adl_triggers: int = 0
    forwarded: int = 0
    skipped_replayed: int = 0
    batches: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


def _escape(label: str) -> str:
    return label.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(metrics: Metrics, funds: Iterable[FundState], lag: Mapping[str, int]) -> str:
    """Prometheus exposition text (version 0.0.4)."""
    lines = [
        "# HELP insurance_fund_events_total Input messages processed (accepted, duplicate or rejected).",
        "# TYPE insurance_fund_events_total counter",
        f"insurance_fund_events_total {metrics.events}",
        "# HELP insurance_fund_deltas_total Fund deltas published.",
        "# TYPE insurance_fund_deltas_total counter",
        f"insurance_fund_deltas_total {metrics.deltas}",
        "# HELP insurance_fund_duplicates_total Re-sent fills ignored as identical duplicates.",
        "# TYPE insurance_fund_duplicates_total counter",
        f"insurance_fund_duplicates_total {metrics.duplicates}",
        "# HELP insurance_fund_adl_triggers_total ADL triggers published.",
        "# TYPE insurance_fund_adl_triggers_total counter",
        f"insurance_fund_adl_triggers_total {metrics.adl_triggers}",
        "# HELP insurance_fund_forwarded_total Fills re-partitioned to their fund's partition.",
        "# TYPE insurance_fund_forwarded_total counter",
        f"insurance_fund_forwarded_total {metrics.forwarded}",
        "# HELP insurance_fund_replayed_skipped_total Input re-read after a restart and already applied.",
        "# TYPE insurance_fund_replayed_skipped_total counter",
        f"insurance_fund_replayed_skipped_total {metrics.skipped_replayed}",
        "# HELP insurance_fund_rejected_total Messages sent to the dead-letter topic, by reason.",
        "# TYPE insurance_fund_rejected_total counter",
    ]
    reasons = ("invalid_json", "invalid_event", "unsupported_version", "conflicting_duplicate")
    for reason in sorted(set(reasons) | set(metrics.rejected)):
        lines.append(
            f'insurance_fund_rejected_total{{reason="{_escape(reason)}"}} {metrics.rejected[reason]}'
        )
    lines += [
        "# HELP insurance_fund_balance Fund balance in its margin currency.",
        "# TYPE insurance_fund_balance gauge",
    ]
    states = sorted(funds, key=lambda state: state.fund)
    lines += [f'insurance_fund_balance{{fund="{_escape(s.fund)}"}} {amount_text(s.balance)}' for s in states]
    lines += [
        "# HELP insurance_fund_sequence Last sequence number of the fund's ledger.",
        "# TYPE insurance_fund_sequence gauge",
    ]
    lines += [f'insurance_fund_sequence{{fund="{_escape(s.fund)}"}} {s.sequence}' for s in states]
    lines += [
        "# HELP insurance_fund_consumer_lag Messages not yet processed, per input partition.",
        "# TYPE insurance_fund_consumer_lag gauge",
    ]
    lines += [
        f'insurance_fund_consumer_lag{{partition="{_escape(tp)}"}} {n}' for tp, n in sorted(lag.items())
    ]
    return "\n".join(lines) + "\n"
