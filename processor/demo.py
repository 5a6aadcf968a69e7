"""``make demo``: a worker, a simulated liquidation feed, a live terminal view of the funds and the address of
the worker's dashboard, which draws the same funds in a browser.

A calm market first (liquidations close better than bankruptcy: the funds grow), then a crash
(prices gap through bankruptcy: the USDT fund drains, falls into ADL drawdown and ADL triggers fire), then
treasury refills the funds (top-ups). Fresh topics every run.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter, deque
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from processor import codec
from processor.config import Settings
from processor.simulate import Market, fills
from processor.stream.connect import wait_for_broker
from processor.stream.kafka import client_options

CALM_FILLS = 1_500
CRASH_FILLS = 900
FILLS_PER_SECOND = 150
REFILL_AFTER_SECONDS = 3.0  # the drained funds stay on screen a moment before treasury tops them up
REFILLS = (("USDT", "30000"), ("BTC", "1"), ("USDT-MEME", "10000"))
#: ``examples/pools.toml``: MEMEUSDT fills go to the isolated pool USDT-MEME, not to the USDT fund.
POOLS_FILE = Path(__file__).resolve().parent.parent / "examples" / "pools.toml"
MARKETS = (
    Market("BTCUSDT", "USDT", "linear", "0.001", 28000),
    Market("ETHUSDT", "USDT", "linear", "0.01", 1600),
    Market("SOLUSDT", "USDT", "linear", "1", 21),
    Market("MEMEUSDT", "USDT", "linear", "100", 0.5),
    Market("BTCUSD", "BTC", "inverse", "100", 28000),
)


def _demo_env(settings: Settings, run: str) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "APP_ID": f"demo-{run}",
        "INPUT_TOPIC": f"demo-{run}-liquidation-fills",
        "DELTAS_TOPIC": f"demo-{run}-insurance-fund-deltas",
        "ADL_TOPIC": f"demo-{run}-adl-triggers",
        "DLQ_TOPIC": f"demo-{run}-liquidation-fills-dlq",
        "DATA_DIR": str(Path("var") / f"demo-{run}"),
        "ADL_STATES_TOPIC": f"demo-{run}-insurance-fund-adl-states",
        "FUND_INITIAL_BALANCES": os.environ.get("FUND_INITIAL_BALANCES", "USDT=25000,BTC=0.5"),
        "ADL_DRAWDOWN_START": os.environ.get("ADL_DRAWDOWN_START", "0.3"),
        "ADL_DRAWDOWN_STOP": os.environ.get("ADL_DRAWDOWN_STOP", "0.25"),
        "FUND_POOLS_FILE": os.environ.get("FUND_POOLS_FILE", str(POOLS_FILE)),
        "LOG_LEVEL": "warning",
    }


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=2) as response:
        return codec.loads(response.read())


def _wait_healthy(url: str, worker: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited ({worker.returncode}); see var/demo-worker.log")
        try:
            _get_json(url + "/health")
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the worker did not become healthy; see var/demo-worker.log")


async def _feed(settings: Settings, topic: str, run: str) -> None:
    producer = AIOKafkaProducer(**client_options(settings), enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        stream = fills(CALM_FILLS + CRASH_FILLS, seed=int(time.time()), crash_at=CALM_FILLS, markets=MARKETS)
        last_timestamp = 0
        for number, fill in enumerate(stream, start=1):
            await producer.send(topic, value=codec.dumps(fill), key=str(fill["margin_currency"]).encode())
            last_timestamp = int(str(fill["timestamp"]))
            if number % 15 == 0:
                await asyncio.sleep(15 / FILLS_PER_SECOND)
        await producer.flush()
        await asyncio.sleep(REFILL_AFTER_SECONDS)
        for fund, amount in REFILLS:
            last_timestamp += 1_000
            top_up = {
                "type": "top_up",
                "operation_id": f"demo-{run}-refill-{fund}",
                "fund": fund,
                "amount": amount,
                "requested_by": "treasury:demo",
                "reason": "refill after the crash",
                "timestamp": last_timestamp,
                "version": 1,
            }
            currency = fund.split("-")[0]  # a pool's currency (examples/pools.toml), keyed like its fills
            await producer.send(topic, value=codec.dumps(top_up), key=currency.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def _view(settings: Settings, url: str, adl_topic: str, feed: asyncio.Task[None]) -> None:
    consumer = AIOKafkaConsumer(adl_topic, **client_options(settings), auto_offset_reset="earliest")
    await consumer.start()
    triggers: Counter[str] = Counter()
    recent: deque[str] = deque(maxlen=6)
    quiet_until = None
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=400)
            for records in batch.values():
                for record in records:
                    trigger = codec.loads(record.value)
                    triggers[trigger["symbol"]] += 1
                    recent.append(
                        f"  {trigger['symbol']:<9} {trigger['reason']:<18} "
                        f"deleverage {trigger['deleverage_side']:<5} qty {trigger['quantity']:>14} "
                        f"@ {trigger['bankruptcy_price']}"
                    )
            try:
                funds = _get_json(url + "/funds")
            except OSError:
                funds = {}
            _render(funds if isinstance(funds, dict) else {}, triggers, recent, feed.done(), url + "/")
            if feed.done():
                quiet_until = quiet_until or time.monotonic() + 5
                if time.monotonic() > quiet_until:
                    return
    finally:
        await consumer.stop()


def _render(
    funds: dict[str, dict[str, object]],
    triggers: Counter[str],
    recent: deque[str],
    done: bool,
    dashboard: str,
) -> None:
    lines = [
        "\x1b[2J\x1b[H insurance funds (live)  " + ("feed finished" if done else "feed running..."),
        f" dashboard: {dashboard}  (open it in a browser: the funds drain and refill as charts)",
        "",
    ]
    lines.append(
        f"  {'fund':<6}{'balance':>20}{'surplus':>18}{'paid':>18}{'shortfall':>18}{'fills':>8}{'ADL':>6}"
    )
    for name, fund in sorted(funds.items()):
        lines.append(
            f"  {name:<6}{fund['balance']!s:>20}{fund['total_surplus']!s:>18}{fund['total_paid']!s:>18}"
            f"{fund['total_shortfall']!s:>18}{fund['fills']!s:>8}{fund['adl_triggers']!s:>6}"
        )
    lines += ["", f"  ADL triggers by symbol: {dict(triggers) or '-'}", "  latest:"]
    lines += list(recent) or ["  -"]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def run_demo(settings: Settings) -> int:
    asyncio.run(wait_for_broker(settings))  # before starting anything: an error line, not a worker log
    run = time.strftime("%Y%m%d%H%M%S")
    env = _demo_env(settings, run)
    url = f"http://127.0.0.1:{settings.web_port}"
    Path("var").mkdir(exist_ok=True)
    with Path("var/demo-worker.log").open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "processor", "worker"], env=env, stdout=log, stderr=log
        )
        try:
            print(f"starting the worker (topics demo-{run}-*, logs in var/demo-worker.log) ...", flush=True)
            _wait_healthy(url, worker)
            print(f"dashboard: {url}/ (open it in a browser)", flush=True)

            async def main() -> None:
                feed = asyncio.ensure_future(_feed(settings, env["INPUT_TOPIC"], run))
                await _view(settings, url, env["ADL_TOPIC"], feed)
                await feed

            asyncio.run(main())
        except KeyboardInterrupt:
            pass
        finally:
            worker.terminate()
            worker.wait(30)
    print(f"\ndemo finished: deltas are on {env['DELTAS_TOPIC']}, triggers on {env['ADL_TOPIC']}")
    return 0
