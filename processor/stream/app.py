"""The faust app: topics, tables, the agent and the HTTP views, built from ``Settings``. Nothing else."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import faust
from faust.types import StreamT, TableT

from processor.codec import FillDecoder
from processor.config import Settings
from processor.domain.ledger import Ledger
from processor.stream.agents import FillProcessor, TopicNames
from processor.stream.book import FundBook
from processor.stream.kafka import (
    TABLES,
    changelog_topic,
    client_options,
    faust_credentials,
    repartition_topic,
)
from processor.stream.metrics import Metrics
from processor.stream.outbox import Outbox
from processor.stream.recovery import ReadCommittedApp, claim_before_recovery
from processor.stream.tables import ChangelogTable
from processor.stream.transactions import Transactions
from processor.stream.web import register_views


@dataclass
class Worker:
    """The app and the pieces tests and views look at."""

    app: faust.App
    processor: FillProcessor
    funds: TableT
    metrics: Metrics


def create_app(settings: Settings, partitions: int) -> Worker:
    """Build the faust app; ``partitions`` is the input topic's partition count."""
    app = ReadCommittedApp(
        settings.app_id,
        broker=[f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",")],
        broker_credentials=faust_credentials(settings.security),
        store="rocksdb://" if settings.store == "rocksdb" else "memory://",
        datadir=str(settings.data_dir),
        env={},  # settings come from Settings only, never from faust's own reading of the environment
        processing_guarantee="at_least_once",  # faust's own mode; exactly-once is ours (transactions.py)
        broker_session_timeout=10.0,  # a killed worker's partitions move after 10 s, not 60
        autodiscover=False,
        topic_partitions=partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=settings.standby_replicas,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=max(4 * settings.batch_size, 4096),
        broker_commit_interval=settings.commit_interval_seconds,
        producer_linger_ms=5,
        producer_max_batch_size=1 << 20,
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_stats_enabled=False,
        web_graph_enabled=False,
        web_router_enabled=False,
        web_tables_enabled=False,
        web_metrics_enabled=False,
    )
    names = TopicNames(
        input=settings.input_topic,
        repartition=repartition_topic(settings),
        deltas=settings.deltas_topic,
        adl=settings.adl_topic,
        dlq=settings.dlq_topic,
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    source = app.topic(names.input, names.repartition, **raw)  # type: ignore[arg-type]
    funds_name, seen_name = TABLES  # prepare_topics created their changelogs
    funds = app.Table(funds_name, partitions=partitions, key_type=bytes, value_type=bytes)
    seen = app.Table(seen_name, partitions=partitions, key_type=bytes, value_type=bytes)

    metrics = Metrics()
    changelogs = [changelog_topic(settings, name) for name in TABLES]
    transactions = Transactions(
        settings.app_id,
        settings.app_id,
        client_options(settings),
        changelogs,
        [names.input, names.repartition],
    )
    outbox = Outbox(transactions)
    tables = (ChangelogTable(funds, changelogs[0], outbox), ChangelogTable(seen, changelogs[1], outbox))
    book = FundBook(tables[0], tables[1], Ledger(settings.rules, settings.duplicate_window_ms))
    processor = FillProcessor(
        decoder=FillDecoder.from_schema_dir(),
        book=book,
        tables=tables,
        outbox=outbox,
        transactions=transactions,
        topics=names,
        partitions=partitions,
        metrics=metrics,
    )

    async def claim(partitions: Iterable[int]) -> None:
        processor.positions.update(await transactions.claim(partitions))  # done input is skipped

    claim_before_recovery(app, claim)

    @app.agent(source, concurrency=1, name="fold-fills")  # concurrency 1: faust #606
    async def fold_fills(stream: StreamT) -> None:
        await transactions.start([names.repartition, names.deltas, names.adl, names.dlq])
        batches = cast(faust.Stream, stream).take_events(settings.batch_size, settings.batch_seconds)
        async for events in batches:
            await processor.process_or_die(events)

    async def on_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        book.forget()  # after a rebalance the tables are the truth
        processor.forget()
        await transactions.release({tp.partition for tp in revoked if tp.topic == names.input})

    async def stop_transactions(sender: Any, *args: Any, **kwargs: Any) -> None:
        await transactions.stop()

    app.on_partitions_revoked.connect(cast(Any, on_revoked))
    app.on_before_shutdown.connect(cast(Any, stop_transactions))

    worker = Worker(app, processor, funds, metrics)
    register_views(worker)
    return worker
