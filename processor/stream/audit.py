"""Audit the live ledger: ``insurance-fund-deltas`` must chain, and must equal a replay of the input."""

from __future__ import annotations

import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from processor import codec
from processor.codec import FillDecoder
from processor.config import Settings
from processor.domain.fold import exact_arithmetic
from processor.domain.ledger import Ledger
from processor.pipeline import Pipeline
from processor.stream.replay import Start, read_topic


@dataclass
class Finding:
    fund: str
    sequence: int | None
    problem: str

    def __str__(self) -> str:
        where = f"fund {self.fund}" + (f" sequence {self.sequence}" if self.sequence is not None else "")
        return f"{where}: {self.problem}"


@dataclass
class AuditReport:
    funds: dict[str, int] = field(default_factory=dict)  # fund -> deltas checked
    findings: list[Finding] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.findings

    def verdict(self) -> str:
        checked = (
            ", ".join(f"{fund} ({count} deltas)" for fund, count in sorted(self.funds.items())) or "no funds"
        )
        if self.passed:
            return f"PASS: {checked}: ledgers chain and equal the replay of the input"
        return f"FAIL: {self.findings[0]}" + (
            f" (+{len(self.findings) - 1} more)" if len(self.findings) > 1 else ""
        )


def check_chain(fund: str, deltas: list[dict[str, Any]], initial: Decimal) -> list[Finding]:
    """Sequences 1..N without gap or repeat, each balance_before the previous balance_after."""
    findings: list[Finding] = []
    expected_sequence = 1
    balance = initial
    total = Decimal(0)
    for delta in deltas:
        sequence = delta["sequence"]
        if sequence < expected_sequence:
            findings.append(
                Finding(fund, sequence, f"duplicate or out of order (expected {expected_sequence})")
            )
            continue
        if sequence > expected_sequence:
            findings.append(Finding(fund, expected_sequence, f"missing (next delta has sequence {sequence})"))
        before, after, amount = (
            Decimal(delta[name]) for name in ("balance_before", "balance_after", "amount")
        )
        if before != balance:
            findings.append(
                Finding(fund, sequence, f"balance_before {before} != previous balance_after {balance}")
            )
        if after != before + amount:
            findings.append(Finding(fund, sequence, f"balance_after {after} != balance_before + amount"))
        balance = after
        total += amount
        expected_sequence = sequence + 1
    if deltas and balance != initial + total:
        findings.append(
            Finding(fund, None, f"amounts sum to {total}, but the balance moved by {balance - initial}")
        )
    return findings


async def audit(settings: Settings, worker_url: str | None = None) -> AuditReport:
    report = AuditReport()
    ledger_lines: dict[str, list[bytes]] = defaultdict(list)
    async for value, *_ in read_topic(settings, settings.deltas_topic, Start()):
        if value is not None:
            ledger_lines[codec.loads(value)["fund"]].append(value)

    pipeline = Pipeline(FillDecoder.from_schema_dir(), Ledger(settings.rules, settings.duplicate_window_ms))
    replayed: dict[str, list[bytes]] = defaultdict(list)
    with exact_arithmetic():
        async for value, key, topic, partition, offset, _ in read_topic(
            settings, settings.input_topic, Start()
        ):
            emitted = pipeline.process(value, key, topic, partition, offset)
            if emitted.delta is not None and emitted.fund is not None:
                replayed[emitted.fund].append(emitted.delta)

    for fund in sorted(set(ledger_lines) | set(replayed)):
        lines = ledger_lines.get(fund, [])
        report.funds[fund] = len(lines)
        deltas = [codec.loads(line) for line in lines]
        report.findings += check_chain(fund, deltas, pipeline.ledger.policy(fund).initial_balance)
        expected = replayed.get(fund, [])
        by_sequence = {delta["sequence"]: line for delta, line in zip(deltas, lines, strict=True)}
        for sequence, line in enumerate(expected, start=1):  # a replay's ledger is 1..N by construction
            got = by_sequence.get(sequence)
            if got is None:
                report.findings.append(
                    Finding(fund, sequence, "in the replay of the input but not in the ledger")
                )
                break
            if got != line:
                report.findings.append(Finding(fund, sequence, "differs from the replay of the input"))
                break
        extra = sorted(sequence for sequence in by_sequence if sequence > len(expected))
        if extra:
            report.findings.append(
                Finding(fund, extra[0], "in the ledger but not in the replay of the input")
            )

    if worker_url is not None:
        with urllib.request.urlopen(worker_url.rstrip("/") + "/funds", timeout=10) as response:
            live = codec.loads(response.read())
        states = {fund: codec.state_document(state) for fund, state in pipeline.ledger.states().items()}
        for fund in sorted(set(live) | set(states)):
            if live.get(fund) != states.get(fund):
                differing = sorted(
                    name
                    for name in set(live.get(fund, {})) | set(states.get(fund, {}))
                    if live.get(fund, {}).get(name) != states.get(fund, {}).get(name)
                )
                report.findings.append(
                    Finding(fund, None, f"GET /funds differs from the replay in {', '.join(differing)}")
                )
    report.findings.sort(key=lambda f: (f.fund, f.sequence is None, f.sequence or 0))  # specific first
    return report
