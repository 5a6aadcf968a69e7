"""The funds dashboard served by the worker: a page at ``/`` drawing every fund's balance over event time,
from the output topics' history and then live from committed changes (``routes``, ``live``, ``source``,
``timeline``; the page itself is ``static/``)."""

from processor.stream.dashboard.routes import Dashboard
from processor.stream.dashboard.source import ADL_STATES_TOPIC, Budgets, DashboardTopics, KafkaTimeline

__all__ = ["ADL_STATES_TOPIC", "Budgets", "Dashboard", "DashboardTopics", "KafkaTimeline"]
