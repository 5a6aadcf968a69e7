"""Audit the live ledger: ``insurance-fund-deltas`` must chain, and must equal a replay of the input."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import urllib.request
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

from processor import codec
from processor.codec import FillDecoder
from processor.config import Settings
from processor.domain.fold import exact_arithmetic
from processor.domain.ledger import Ledger
from processor.domain.state import FundState
from processor.pipeline import Pipeline
from processor.stream.parallel import Control, PartitionRange, balance, fold_in_parallel
from processor.stream.replay import Start, fund_currencies, read_ranges, topic_ranges

#: Bytes of the digest that stands for each replayed delta: the replay's deltas travel between
#: processes and are kept as these, not as whole lines.
DIGEST_SIZE = 16


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
    #: transfers with one leg (or legs that do not match): not a ledger error, but money in flight
    #: for treasury to finish (SPEC section 8)
    open_transfers: list[str] = field(default_factory=list)

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


#: The sign each delta type's amount must have (SPEC sections 3 and 8): (may be > 0, may be < 0).
_SIGNS = {
    "liquidation_surplus": (True, False),
    "bankruptcy_loss": (False, True),
    "top_up": (True, False),
    "withdrawal": (False, True),
}


def check_chain(fund: str, deltas: list[dict[str, Any]], initial: Decimal) -> list[Finding]:
    """Sequences 1..N without gap or repeat, each balance_before the previous balance_after, each
    amount of its type's sign, and the fund's invariant: balance = initial + surplus - paid +
    top-ups - withdrawals (SPEC section 8)."""
    findings: list[Finding] = []
    expected_sequence = 1
    balance = initial
    total = Decimal(0)
    by_type: dict[str, Decimal] = defaultdict(Decimal)
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
        kind = str(delta.get("type"))
        positive, negative = _SIGNS.get(kind, (False, False))
        if (amount > 0 and not positive) or (amount < 0 and not negative) or kind not in _SIGNS:
            findings.append(Finding(fund, sequence, f"a {kind} delta with amount {amount}"))
        by_type[kind] += amount
        balance = after
        total += amount
        expected_sequence = sequence + 1
    if deltas and balance != initial + total:
        findings.append(
            Finding(fund, None, f"amounts sum to {total}, but the balance moved by {balance - initial}")
        )
    surplus, paid = by_type["liquidation_surplus"], -by_type["bankruptcy_loss"]
    top_ups, withdrawals = by_type["top_up"], -by_type["withdrawal"]
    if deltas and balance != initial + surplus - paid + top_ups - withdrawals:
        findings.append(
            Finding(
                fund,
                None,
                f"balance {balance} != initial {initial} + surplus {surplus} - paid {paid} "
                f"+ top-ups {top_ups} - withdrawals {withdrawals}",
            )
        )
    return findings


def open_transfers(deltas: Sequence[dict[str, Any]]) -> list[str]:
    """Transfers whose legs do not pair up: a withdrawal without its top-up (or the reverse), legs
    of different amounts or currencies, or more than one leg of a kind."""
    legs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for delta in deltas:
        transfer = delta.get("transfer_id")
        if transfer is not None:
            legs[transfer].append(delta)
    found = []
    for transfer, pair in sorted(legs.items()):
        kinds = sorted(leg["type"] for leg in pair)
        described = ", ".join(
            f"{leg['type']} {leg['amount']} {leg['fund']} (sequence {leg['sequence']})" for leg in pair
        )
        if kinds != ["top_up", "withdrawal"]:
            found.append(f"transfer {transfer}: {described}: expected one withdrawal and one top-up")
        elif (
            Decimal(pair[0]["amount"]) + Decimal(pair[1]["amount"])
            or len({leg["margin_currency"] for leg in pair}) > 1
        ):
            found.append(f"transfer {transfer}: {described}: the legs do not match")
    return found


def _digest(line: bytes) -> bytes:
    return hashlib.blake2b(line, digest_size=DIGEST_SIZE).digest()


class _Replayed(NamedTuple):
    """A group's replay of the input: each fund's deltas as concatenated digests, in sequence
    order, and the funds' final states."""

    digests: dict[str, bytes]
    states: dict[str, FundState]


@dataclass(frozen=True)
class _ReplayInput:
    """Replay partition ranges of the input topic, keeping the deltas' digests (a process's work)."""

    settings: Settings

    async def fold(
        self, ranges: Sequence[PartitionRange], control: Control | None
    ) -> tuple[Collection[str], _Replayed]:
        settings = self.settings
        ledger = Ledger(settings.rules, settings.duplicate_window_ms)
        process = Pipeline(FillDecoder.from_schema_dir(), ledger).process
        topic = settings.input_topic
        digests: dict[str, bytearray] = defaultdict(bytearray)
        touched: set[str | None] = set()
        messages = 0
        with exact_arithmetic():
            async for partition, records in read_ranges(settings, topic, ranges):
                for record in records:
                    emitted = process(record.value, record.key, topic, partition, record.offset)
                    touched.add(emitted.fund)
                    if emitted.delta is not None and emitted.fund is not None:
                        digests[emitted.fund] += _digest(emitted.delta)
                messages += len(records)
                if control is not None:
                    control.tick(messages, fund_currencies(ledger, touched))
        replayed = _Replayed({fund: bytes(packed) for fund, packed in digests.items()}, dict(ledger.funds))
        return fund_currencies(ledger, touched), replayed


class _LedgerFund(NamedTuple):
    """One fund of the audited ledger: its deltas, what the chain check found, and the digest of the
    line carrying each sequence (the last one, for a repeated sequence)."""

    deltas: int
    findings: list[Finding]
    by_sequence: dict[int, bytes]


async def _read_ledger(
    settings: Settings, ranges: Sequence[PartitionRange], ledger: Ledger
) -> tuple[dict[str, _LedgerFund], list[dict[str, Any]]]:
    """Read the ledger topic and check each fund's chain; also return the transfers' legs."""
    lines: dict[str, list[bytes]] = defaultdict(list)
    async for _, records in read_ranges(settings, settings.deltas_topic, ranges):
        for record in records:
            if record.value is not None:
                lines[codec.loads(record.value)["fund"]].append(record.value)
    funds = {}
    legs: list[dict[str, Any]] = []
    for fund, fund_lines in lines.items():
        deltas = [codec.loads(line) for line in fund_lines]
        legs += (delta for delta in deltas if "transfer_id" in delta)
        findings = check_chain(fund, deltas, ledger.policy(fund).initial_balance)
        by_sequence = {
            delta["sequence"]: _digest(line) for delta, line in zip(deltas, fund_lines, strict=True)
        }
        funds[fund] = _LedgerFund(len(fund_lines), findings, by_sequence)
    return funds, legs


async def audit(settings: Settings, worker_url: str | None = None, jobs: int = 1) -> AuditReport:
    """Check the ledger's chains and compare it with a replay of the input, folded in up to ``jobs``
    processes (the ledger is read and checked meanwhile)."""
    report = AuditReport()
    ledger_ranges = await topic_ranges(settings, settings.deltas_topic, Start())
    input_ranges = await topic_ranges(settings, settings.input_topic, Start())
    rules = Ledger(settings.rules, settings.duplicate_window_ms)
    task = _ReplayInput(settings)
    if len(balance(input_ranges, jobs)) > 1:
        stop = threading.Event()
        replaying = asyncio.ensure_future(
            asyncio.to_thread(fold_in_parallel, task, input_ranges, jobs, None, stop, settings.log_format)
        )
        try:
            ledger, legs = await _read_ledger(settings, ledger_ranges, rules)
            replayed = [group.result for group in await replaying]
        except BaseException:
            stop.set()  # the processes end; what the replay then raises is of no interest
            replaying.add_done_callback(lambda done: done.cancelled() or done.exception())
            raise
    else:
        ledger, legs = await _read_ledger(settings, ledger_ranges, rules)
        replayed = [(await task.fold(input_ranges, None))[1]]
    report.open_transfers = open_transfers(legs)
    expected = {fund: digests for group in replayed for fund, digests in group.digests.items()}
    states = {fund: state for group in replayed for fund, state in group.states.items()}

    for fund in sorted(set(ledger) | set(expected)):
        initial = rules.policy(fund).initial_balance
        checked = ledger.get(fund) or _LedgerFund(0, check_chain(fund, [], initial), {})
        report.funds[fund] = checked.deltas
        report.findings += checked.findings
        digests = expected.get(fund, b"")
        count = len(digests) // DIGEST_SIZE
        for sequence in range(1, count + 1):  # a replay's ledger is 1..N by construction
            got = checked.by_sequence.get(sequence)
            if got is None:
                report.findings.append(
                    Finding(fund, sequence, "in the replay of the input but not in the ledger")
                )
                break
            if got != digests[(sequence - 1) * DIGEST_SIZE : sequence * DIGEST_SIZE]:
                report.findings.append(Finding(fund, sequence, "differs from the replay of the input"))
                break
        extra = sorted(sequence for sequence in checked.by_sequence if sequence > count)
        if extra:
            report.findings.append(
                Finding(fund, extra[0], "in the ledger but not in the replay of the input")
            )

    if worker_url is not None:
        with urllib.request.urlopen(worker_url.rstrip("/") + "/funds", timeout=10) as response:
            live = codec.loads(response.read())
        documents = {fund: codec.state_document(state) for fund, state in sorted(states.items())}
        for fund in sorted(set(live) | set(documents)):
            if live.get(fund) != documents.get(fund):
                differing = sorted(
                    name
                    for name in set(live.get(fund, {})) | set(documents.get(fund, {}))
                    if live.get(fund, {}).get(name) != documents.get(fund, {}).get(name)
                )
                report.findings.append(
                    Finding(fund, None, f"GET /funds differs from the replay in {', '.join(differing)}")
                )
    report.findings.sort(key=lambda f: (f.fund, f.sequence is None, f.sequence or 0))  # specific first
    return report
