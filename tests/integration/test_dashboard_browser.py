"""The dashboard in a real headless Chromium (Debian's ``chromium``), driven over the DevTools protocol.

Skipped, with the reason, when no Chromium is installed (``make test`` installs it when it can).
Screenshots go to the git-ignored ``var/test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from processor import codec
from processor.domain.state import FundRules, FundState
from processor.simulate import fills
from processor.stream.dashboard import Dashboard, DashboardTopics, KafkaTimeline
from processor.stream.metrics import Metrics
from processor.stream.view import FundsView
from processor.stream.web import start_web
from testkit.broker import ROOT, create_topics, produce, unique
from testkit.browser import Page, chromium, find_chromium, open_page
from testkit.worker import RunningWorker, WorkerConfig

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium: `apt-get install -y chromium` (make test installs it when run as root with apt-get)",
)
ARTIFACTS = ROOT / "var" / "test-artifacts"
LIVE_SECONDS = 2.0  # a fill committed now shows on the page within this

BALANCE_OF = "document.querySelector('tr[data-fund=\"{fund}\"] td.balance').textContent"
READY = "document.body.dataset.state === 'ready'"


class _Health:
    def health(self) -> tuple[str, str | None]:
        return "ok", None


def surplus_fill(fill_id: str, timestamp: int) -> bytes:
    """A BTCUSDT long closed 100 above bankruptcy: the USDT fund receives 0.1 x 100 = 10 USDT."""
    return codec.dumps(
        {
            "fill_id": fill_id,
            "liquidation_id": fill_id,
            "symbol": "BTCUSDT",
            "margin_currency": "USDT",
            "side": "long",
            "contract_type": "linear",
            "contract_size": "0.001",
            "bankruptcy_price": "28000",
            "fill_price": "28100",
            "quantity": "100",
            "timestamp": timestamp,
        }
    )


async def fund_rows(page: Page) -> list[str]:
    rows = await page.evaluate(
        "[...document.querySelectorAll('#funds tbody tr')].map((row) => row.dataset.fund)"
    )
    return list(rows)


def test_the_page_shows_every_fund_and_a_new_fill_moves_its_balance_within_two_seconds(
    start_worker: Callable[..., RunningWorker], worker_config: WorkerConfig, tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    worker_config.extra_env["FUND_INITIAL_BALANCES"] = "USDT=300000,BTC=8,ETH=90,USDC=200000"
    worker = start_worker()
    feed = [
        (str(fill["margin_currency"]).encode(), codec.dumps(fill))
        for fill in fills(1_200, seed=5, crash_at=800)
    ]
    asyncio.run(produce(worker_config.bootstrap, worker_config.input_topic, feed))  # calm, then a crash
    deadline = time.monotonic() + 60
    while sum(int(str(fund["fills"])) for fund in worker.funds().values()) < len(feed):
        assert time.monotonic() < deadline, "the worker did not fold the feed"
        time.sleep(0.2)
    funds = worker.funds()
    last_timestamp = max(int(str(fund["last_timestamp"])) for fund in funds.values())

    async def main() -> tuple[float, str, str]:
        producer = AIOKafkaProducer(bootstrap_servers=worker_config.bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            async with chromium(CHROMIUM, tmp_path / "chromium") as page:
                await open_page(page, worker.url + "/?since=1h")
                await page.wait_for(READY)
                assert await fund_rows(page) == sorted(funds)
                for fund, state in funds.items():
                    assert await page.evaluate(BALANCE_OF.format(fund=fund)) == state["balance"]
                    points = await page.evaluate(
                        f"document.querySelector('.chart[data-fund=\"{fund}\"] svg').dataset.points"
                    )
                    assert int(points) == state["fills"]  # the whole window's history, one point per delta
                adl = await page.evaluate("document.querySelectorAll('circle.marker.adl').length")
                assert adl > 0  # the crash's ADL triggers
                before = await page.evaluate(BALANCE_OF.format(fund="USDT"))

                started = time.monotonic()
                await producer.send_and_wait(
                    worker_config.input_topic, surplus_fill("live-1", last_timestamp + 1_000), key=b"USDT"
                )
                after = await page.wait_for(
                    f"{BALANCE_OF.format(fund='USDT')} !== {before!r} && {BALANCE_OF.format(fund='USDT')}",
                    timeout=15,
                    every=0.02,
                )
                took = time.monotonic() - started
                await asyncio.sleep(1.2)  # the row's highlight fades: a calm picture
                await page.screenshot(ARTIFACTS / "dashboard.png")
                failures = page.failures()
                foreign = [url for url in page.requested() if not url.startswith(worker.url)]
                assert failures == [], failures
                assert foreign == [], foreign
                return took, before, after
        finally:
            await producer.stop()

    took, before, after = asyncio.run(main())
    assert Decimal(after) - Decimal(before) == Decimal(10)
    assert after == worker.funds()["USDT"]["balance"]
    print(f"\nfill -> balance on the page: {took:.2f} s")
    assert took <= LIVE_SECONDS, f"the balance moved {took:.2f} s after the fill (limit {LIVE_SECONDS} s)"


BASE = 1_700_000_000_000


def record(fund: str, sequence: int, **fields: object) -> dict[str, object]:
    return {"fund": fund, "sequence": sequence, "timestamp": BASE + sequence * 1_000, **fields}


def count(selector: str) -> str:
    return f"document.querySelectorAll({selector!r}).length"


def test_the_page_marks_operations_adl_reasons_and_drawdown_periods(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Records shaped like SPEC sections 8 and 9's outputs, on real topics, drawn by the page: top-ups and
    withdrawals, ADL triggers of every reason, drawdown shading; then more of them live."""
    assert CHROMIUM is not None
    topics = DashboardTopics(unique("deltas"), unique("adl"), unique("adl-states"))
    balances = [100_000 - 900 * step if step < 60 else 46_000 + 1_500 * (step - 60) for step in range(90)]
    deltas, triggers = [], []
    for step, balance in enumerate(balances, start=1):
        kind = {62: "top_up", 85: "withdrawal"}.get(step, "liquidation_surplus")
        deltas.append(
            record("USDT", step, type=kind, balance_after=f"{balance}.00000000", amount="5000.00000000")
        )
        if 36 <= step < 60 and step % 3 == 0:
            reason = "fund_drawdown" if step >= 45 else "insufficient_fund"
            triggers.append(
                record("USDT", step, reason=reason, fund_balance=f"{balance}.00000000", symbol="ETHUSDT")
            )
    states = [
        record("USDT", 44, state="drawdown", previous_state="normal", drawdown="0.39600000"),
        record("USDT", 75, state="normal", previous_state="drawdown", drawdown="0.19000000"),
    ]
    opened = FundState.opened("USDT", FundRules().policy_for("USDT"))
    current = opened._replace(
        balance=Decimal(balances[-1]),
        sequence=90,
        last_timestamp=BASE + 90_000,
        total_top_ups=Decimal(5000),
        total_withdrawals=Decimal(5000),
    )
    svg = "document.querySelector('.chart[data-fund=\"USDT\"] svg')"

    async def main() -> tuple[dict[str, object], str, list[str]]:
        await create_topics(kafka_bootstrap, [topics.deltas, topics.adl, topics.adl_states], partitions=2)
        await produce(kafka_bootstrap, topics.deltas, [(b"USDT", codec.dumps(delta)) for delta in deltas])
        await produce(
            kafka_bootstrap, topics.adl, [(b"ETHUSDT", codec.dumps(trigger)) for trigger in triggers]
        )
        await produce(kafka_bootstrap, topics.adl_states, [(b"USDT", codec.dumps(state)) for state in states])
        view = FundsView({"bootstrap_servers": kafka_bootstrap}, unique("unused-changelog"))
        view.update([current])
        board = Dashboard(view, KafkaTimeline({"bootstrap_servers": kafka_bootstrap}, topics))
        runner = await start_web("127.0.0.1", 0, view, _Health(), Metrics(view.states, dict), board)
        [(host, port)] = runner.addresses
        try:
            async with chromium(CHROMIUM, tmp_path / "chromium", height=700) as page:
                await open_page(page, f"http://{host}:{port}/")
                await page.wait_for(READY)
                await page.wait_for(f"{svg}.dataset.drawdowns === '1'")
                drawn = {
                    "top_up": await page.evaluate(count('path.marker[data-kind="top_up"]')),
                    "withdrawal": await page.evaluate(count('path.marker[data-kind="withdrawal"]')),
                    "fund_drawdown": await page.evaluate(count('circle[data-reason="fund_drawdown"]')),
                    "insufficient_fund": await page.evaluate(
                        count('circle[data-reason="insufficient_fund"]')
                    ),
                    "state": await page.evaluate(
                        'document.querySelector(\'tr[data-fund="USDT"] td[data-field="state"]\').textContent'
                    ),
                }
                await page.screenshot(ARTIFACTS / "dashboard-markers.png")

                # live: a new ADL reason, a drawdown that begins, a top-up seen as the totals grow
                producer = AIOKafkaProducer(
                    bootstrap_servers=kafka_bootstrap, transactional_id=unique("dash")
                )
                await producer.start()
                try:
                    async with producer.transaction():
                        new_trigger = record(
                            "USDT", 91, reason="a_later_reason", fund_balance="1000.00000000"
                        )
                        await producer.send_and_wait(topics.adl, codec.dumps(new_trigger), key=b"X")
                        new_state = record("USDT", 91, state="drawdown", previous_state="normal")
                        await producer.send_and_wait(topics.adl_states, codec.dumps(new_state), key=b"USDT")
                finally:
                    await producer.stop()
                drained = current._replace(balance=Decimal(1000), sequence=91, last_timestamp=BASE + 91_000)
                view.update([drained])
                view.update(
                    [
                        drained._replace(
                            balance=Decimal(21000),
                            sequence=92,
                            last_timestamp=BASE + 92_000,
                            total_top_ups=Decimal(25000),
                        )
                    ]
                )
                await page.wait_for(count('circle[data-reason="a_later_reason"]') + " === 1")
                await page.wait_for(count('path.marker[data-kind="top_up"]') + " === 2")
                await page.wait_for(f"{svg}.dataset.drawdowns === '2'")
                legend = await page.evaluate("document.getElementById('legend').textContent")
                return drawn, legend, page.failures()
        finally:
            await runner.cleanup()

    drawn, legend, failures = asyncio.run(main())
    assert drawn == {
        "top_up": 1,
        "withdrawal": 1,
        "fund_drawdown": 5,
        "insufficient_fund": 3,
        "state": "normal",
    }
    for label in (
        "ADL: a_later_reason",
        "ADL: fund_drawdown",
        "ADL: insufficient_fund",
        "top-up",
        "withdrawal",
    ):
        assert label in legend
    assert "ADL drawdown" in legend
    assert failures == [], failures
