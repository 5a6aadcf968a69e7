"""What every crash scenario shares: the input and its malformed share, a paced producer, and the
tally of what the committed topics hold against the file replay of the same input."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from processor import codec
from processor.domain.pools import FundPools
from processor.domain.state import DrawdownPolicy, FundRules
from processor.simulate import MARKETS, Market
from processor.simulate import fills as simulated_fills
from testkit.broker import read_all
from testkit.reference import FileReplay, by_fund, keyed_by_currency
from testkit.worker import WorkerConfig

BAD_EVERY = 97  # one malformed message among every 97, so the dead-letter topic is checked too


def peak_rss(pid: int) -> int:
    """The process's peak resident set size in bytes (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Tally:
    """One scenario's findings; ``ok`` only when nothing was lost, repeated or changed."""

    scenario: str
    kills: int = 0
    #: kills of a worker whose ``insurance_fund_events_total`` had grown since it started, and again
    #: just before the kill, while input was still being produced
    busy_kills: int = 0
    restarts: int = 0  # graceful stops (SIGTERM) followed by a start under the same WORKER_ID
    events_checked: int = 0
    duplicates: int = 0
    losses: int = 0
    mismatches: int = 0
    dlq: int = 0
    peak_rss: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.losses or self.mismatches or self.problems)


def messages(fills: int, seed: int, markets: Sequence[Market] = MARKETS) -> tuple[list[bytes], list[bytes]]:
    """Simulated fills of ``markets`` (keyed by margin currency when produced) with a malformed message
    every ``BAD_EVERY``; returns (all messages, the malformed ones)."""
    good = [codec.dumps(fill) for fill in simulated_fills(fills, seed, markets=markets)]
    everything: list[bytes] = []
    bad: list[bytes] = []
    for index, line in enumerate(good):
        if index % BAD_EVERY == BAD_EVERY - 1:
            malformed = b'{"soak_malformed": %d}' % index
            bad.append(malformed)
            everything.append(malformed)
        everything.append(line)
    return everything, bad


class PacedProducer(threading.Thread):
    """Produce ``messages`` keyed by margin currency, spread evenly over ``seconds`` (or until the
    deadline ``finish_by`` sets, which a scenario moves as it learns how long its steps take), through
    one idempotent producer that retries for as long as a broker restart takes (never twice a record)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        messages: list[bytes],
        seconds: float,
        chunk: int = 250,
        pools: FundPools | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.seconds, self.chunk = bootstrap, topic, seconds, chunk
        self.keyed = keyed_by_currency(messages, pools)
        self.error: BaseException | None = None
        self.sent = 0  # messages acknowledged by the broker
        self._deadline: float | None = None

    def finish_by(self, deadline: float) -> None:
        """Spread what is left evenly until ``deadline`` (``time.monotonic()``)."""
        self._deadline = deadline

    @property
    def flowing(self) -> bool:
        """Whether input is still being produced (some of it not sent yet)."""
        return self.is_alive() and self.sent < len(self.keyed) and self.error is None

    def run(self) -> None:
        if self._deadline is None:
            self._deadline = time.monotonic() + self.seconds
        try:
            asyncio.run(self._produce())
        except BaseException as error:  # reported by the scenario
            self.error = error

    async def _produce(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            request_timeout_ms=120_000,
            retry_backoff_ms=500,
        )
        await producer.start()
        try:
            chunks = [self.keyed[i : i + self.chunk] for i in range(0, len(self.keyed), self.chunk)]
            for index, chunk in enumerate(chunks):
                started = time.monotonic()
                sent = [await producer.send(self.topic, value=value, key=key) for key, value in chunk]
                await asyncio.gather(*sent)
                self.sent += len(chunk)
                left = len(chunks) - index - 1
                if left:
                    assert self._deadline is not None
                    pause = max(0.0, self._deadline - started) / (left + 1)
                    await asyncio.sleep(max(0.0, pause - (time.monotonic() - started)))
        finally:
            await producer.stop()


def tally_outputs(tally: Tally, config: WorkerConfig, expected: FileReplay, bad: list[bytes]) -> None:
    """Read the committed outputs and count, against ``expected``, what is missing, repeated or
    different: deltas by (fund, sequence), triggers and dead letters as multisets."""
    bootstrap = config.bootstrap
    deltas = _values(bootstrap, config.deltas_topic, len(expected.deltas))
    triggers = _values(bootstrap, config.adl_topic, len(expected.triggers))
    letters = _values(bootstrap, config.dlq_topic, len(bad))
    tally.events_checked += len(deltas) + len(triggers) + len(letters)
    tally.dlq += len(letters)

    want: dict[tuple[str, int], bytes] = {}
    for delta in expected.deltas:
        document = orjson.loads(delta)
        want[document["fund"], document["sequence"]] = delta
    seen: Counter[tuple[str, int]] = Counter()
    last_sequence: dict[str, int] = {}
    for record in deltas:
        document = orjson.loads(record or b"{}")
        slot = (document.get("fund", ""), document.get("sequence", 0))
        seen[slot] += 1
        if seen[slot] > 1:
            tally.duplicates += 1
        elif want.get(slot) != record:
            tally.mismatches += 1
        if document["sequence"] <= last_sequence.get(document["fund"], 0) and seen[slot] == 1:
            tally.problems.append(f"{document['fund']} sequence {document['sequence']} out of order")
        last_sequence[document["fund"]] = max(document["sequence"], last_sequence.get(document["fund"], 0))
    tally.losses += sum(1 for slot in want if slot not in seen)

    before = (tally.duplicates, tally.losses)
    _compare_multisets(tally, Counter(triggers), Counter(expected.triggers))
    if expected.adl_states:  # under an ADL policy: its state changes, in order per fund
        states = _values(bootstrap, config.adl_states_topic, len(expected.adl_states))
        tally.events_checked += len(states)
        ordered = by_fund([state for state in states if state is not None]) == by_fund(expected.adl_states)
        _compare_multisets(tally, Counter(states), Counter(expected.adl_states))
        if not ordered and Counter(states) == Counter(expected.adl_states):
            tally.problems.append("ADL state changes out of order within a fund")
    got_bad = Counter(orjson.loads(letter or b"{}").get("value", "").encode() for letter in letters)
    _compare_multisets(tally, got_bad, Counter(bad))
    if (tally.duplicates, tally.losses) != before:
        tally.problems.append(
            f"triggers and dead letters: {tally.duplicates - before[0]} repeated,"
            f" {tally.losses - before[1]} missing"
        )


def _values(bootstrap: str, topic: str, expected: int) -> list[bytes | None]:
    return [value for _, value, _ in asyncio.run(read_all(bootstrap, topic, expected))]


def _compare_multisets(tally: Tally, got: Counter[bytes | None], want: Counter[bytes | None]) -> None:
    for item in got.keys() | want.keys():
        extra = got[item] - want[item]
        if extra > 0:
            tally.duplicates += extra
        elif extra < 0:
            tally.losses -= extra


def adl_env(policy: DrawdownPolicy) -> dict[str, str]:
    """The worker's settings for ``policy`` as every fund's ADL policy."""
    return {
        "ADL_DRAWDOWN_START": str(policy.start),
        "ADL_DRAWDOWN_STOP": str(policy.stop),
        "ADL_DRAWDOWN_WINDOW_MS": str(policy.window_ms),
    }


def rules_env(rules: FundRules) -> dict[str, str]:
    balances = ",".join(f"{fund}={amount}" for fund, amount in sorted(rules.initial_balance.items()))
    return {"FUND_INITIAL_BALANCES": balances} if balances else {}
