"""HTTP views on the worker: /funds, /funds/{currency}, /health, /metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faust.web import Request, Response, View

from processor import codec
from processor.domain.state import FundState
from processor.stream.metrics import render
from processor.stream.transactions import TAIL_KEY

if TYPE_CHECKING:
    from processor.stream.app import Worker

JSON = "application/json"


def fund_states(worker: Worker) -> list[FundState]:
    """Every fund this worker owns, as its table holds it."""
    records = [raw for key, raw in worker.funds.items() if key != TAIL_KEY]
    return sorted((codec.decode_fund_record(raw).state for raw in records), key=lambda state: state.fund)


def recovered(worker: Worker) -> bool:
    app = worker.app
    tables: Any = app.tables  # the TableManager; its type in faust.types lacks these attributes
    return bool(tables.recovery.completed.is_set() and tables.actives_ready) and not app.rebalancing


def consumer_lag(worker: Worker) -> dict[str, int]:
    app = worker.app
    lag: dict[str, int] = {}
    try:
        assignment = app.consumer.assignment()
    except Exception:
        return lag
    topics = {worker.processor.topics.input, worker.processor.topics.repartition}
    for tp in assignment:
        if tp.topic not in topics:
            continue
        highwater = app.consumer.highwater(tp)
        if highwater is None:
            continue
        position = worker.processor.positions.get(f"{tp.topic}:{tp.partition}", 0)
        lag[f"{tp.topic}:{tp.partition}"] = max(int(highwater) - position, 0)
    return lag


def register_views(worker: Worker) -> None:
    app = worker.app

    @app.page("/funds")
    class Funds(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(codec.encode_states(fund_states(worker)), content_type=JSON)

    @app.page("/funds/{currency}")
    class Fund(View):
        async def get(self, request: Request, currency: str) -> Response:
            for state in fund_states(worker):
                if state.fund == currency:
                    return self.bytes(codec.dumps(codec.state_document(state)), content_type=JSON)
            body = codec.dumps({"error": "unknown_fund", "detail": f"no fund {currency!r} on this worker"})
            return self.bytes(body, content_type=JSON, status=404)

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            ready = recovered(worker)
            body: dict[str, Any] = {"status": "ok" if ready else "recovering"}
            return self.bytes(codec.dumps(body), content_type=JSON, status=200 if ready else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            text = render(worker.metrics, fund_states(worker), consumer_lag(worker))
            return self.text(text, content_type="text/plain; version=0.0.4")
