"""What the dashboard draws, as plain documents: balance points, markers and ADL state changes.

Pure functions over decoded output records (deltas, ADL triggers, ADL state events) and fund states, shared
by the history (read from the topics) and the live feed (committed states pushed into the funds view). Money
stays the decimal text of the records; the browser turns it into numbers for plotting only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from operator import itemgetter
from typing import Any, NamedTuple

from processor.codec import amount_text
from processor.domain.state import EXACT, FundState

#: Delta types of fills: drawn as the balance line only. Every other type (``top_up``, ``withdrawal``, any
#: later one) is drawn as a marker of that kind too.
FILL_TYPES = frozenset({"liquidation_surplus", "bankruptcy_loss"})
#: State totals whose growth between two committed states is an operation (SPEC section 8), by marker kind.
OPERATION_TOTALS = (("top_up", "total_top_ups"), ("withdrawal", "total_withdrawals"))

DEFAULT_LOOKBACK = "3h"
MAX_LOOKBACK_MS = 30 * 86_400_000
FUTURE_SLACK_MS = 60_000  # clocks of the browser's user and the worker may differ a little
MAX_POINTS_PER_FUND = 2_000
MAX_MARKERS_PER_SERIES = 200  # per fund and marker kind (and ADL reason)
MAX_STATE_CHANGES = 2_000

_DURATION = re.compile(r"([0-9]{1,9})([smhd])")
_EPOCH_MS = re.compile(r"[0-9]{1,16}")
_DECIMAL_TEXT = re.compile(r"-?[0-9]{1,40}(\.[0-9]{1,40})?")  # how the processor writes money
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class SinceError(ValueError):
    """A ``since`` parameter that names no usable start; the message says what is accepted."""


def parse_since(text: str | None, now_ms: int) -> int:
    """The start of the history window, in ms since the epoch (Kafka record time: when a delta was committed).

    ``text`` is a look-back (``90m``, ``3h``, ``2d``; default ``3h``), epoch milliseconds, or an ISO 8601 time
    (UTC unless it names an offset). At most 30 days back, not in the future.
    """
    if text is None or text == "":
        text = DEFAULT_LOOKBACK
    if len(text) > 64:
        raise SinceError("since: too long (expected e.g. 3h, 90m, 1700000000000 or 2026-11-30T08:00:00Z)")
    duration = _DURATION.fullmatch(text)
    if duration is not None:
        lookback = int(duration[1]) * _UNIT_MS[duration[2]]
        if lookback == 0 or lookback > MAX_LOOKBACK_MS:
            raise SinceError(f"since: {text!r} must look back more than 0 and at most 30 days")
        return now_ms - lookback
    if _EPOCH_MS.fullmatch(text) is not None:
        since = int(text)
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise SinceError(
                f"since: {text!r} is not a look-back (3h, 90m, 2d), epoch milliseconds or an ISO 8601 time"
                " (a + in a URL must be written %2B)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        since = math.floor(moment.timestamp() * 1000)
    if since > now_ms + FUTURE_SLACK_MS:
        raise SinceError(f"since: {text!r} is in the future")
    if now_ms - since > MAX_LOOKBACK_MS:
        raise SinceError(f"since: {text!r} is more than 30 days back")
    return since


class Point(NamedTuple):
    """The balance of a fund after the delta with ``sequence``, at that delta's event time."""

    timestamp: int
    balance: str
    sequence: int


def decimate(points: Sequence[Point], limit: int = MAX_POINTS_PER_FUND) -> list[Point]:
    """At most ``limit`` points that keep the shape: the first and last, and the lowest and highest balance
    of each run of consecutive points in between (a crash's trough survives any zoom level)."""
    if len(points) <= limit:
        return list(points)
    first, last, inner = points[0], points[-1], points[1:-1]
    buckets = max(1, (limit - 2) // 2)
    size = math.ceil(len(inner) / buckets)
    values = [Decimal(point.balance) for point in inner]  # exact: never float money, even to plot
    kept = [first]
    for start in range(0, len(inner), size):
        indexes = range(start, min(start + size, len(inner)))
        low = min(indexes, key=values.__getitem__)
        high = max(indexes, key=values.__getitem__)
        kept.extend(inner[index] for index in sorted({low, high}))
    kept.append(last)
    return kept


def _text(document: Mapping[str, Any], name: str) -> str | None:
    value = document.get(name)
    return value if isinstance(value, str) else None


def _integer(document: Mapping[str, Any], name: str) -> int | None:
    value = document.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Marker(NamedTuple):
    """One thing that happened to a fund at a point of its balance line."""

    kind: str  # "adl", or a delta type such as "top_up" / "withdrawal"
    fund: str
    reason: str | None  # the ADL trigger's reason
    timestamp: int
    balance: str
    sequence: int
    detail: Mapping[str, Any]


def marker_documents(markers: Sequence[Marker], limit: int = MAX_MARKERS_PER_SERIES) -> list[dict[str, Any]]:
    """Markers as documents, at most ``limit`` per (fund, kind, reason): beyond that, consecutive markers are
    merged into one with their ``count`` (the last one's time, balance and sequence, no detail)."""
    series: dict[tuple[str, str, str | None], list[Marker]] = {}
    for marker in markers:
        series.setdefault((marker.fund, marker.kind, marker.reason), []).append(marker)
    documents: list[dict[str, Any]] = []
    for run in series.values():
        run.sort(key=lambda marker: marker.sequence)
        size = math.ceil(len(run) / limit)
        for start in range(0, len(run), size):
            group = run[start : start + size]
            first, last = group[0], group[-1]
            document: dict[str, Any] = {
                "kind": last.kind,
                "fund": last.fund,
                "count": len(group),
                "timestamp": last.timestamp,
                "first_timestamp": first.timestamp,
                "balance": last.balance,
                "sequence": last.sequence,
            }
            if last.reason is not None:
                document["reason"] = last.reason
            if len(group) == 1 and last.detail:
                document["detail"] = dict(last.detail)
            documents.append(document)
    documents.sort(key=lambda document: (document["timestamp"], document["sequence"]))
    return documents


def delta_marker(delta: Mapping[str, Any], fund: str, point: Point) -> Marker | None:
    """A marker for a delta that is not a fill's (a top-up, a withdrawal, a later kind)."""
    kind = _text(delta, "type")
    if kind is None or kind in FILL_TYPES:
        return None
    detail = {
        name: delta[name]
        for name in ("amount", "operation_id", "requested_by", "reason", "transfer_id")
        if isinstance(delta.get(name), str)
    }
    return Marker(kind, fund, None, point.timestamp, point.balance, point.sequence, detail)


def trigger_marker(trigger: Mapping[str, Any]) -> Marker | None:
    """The marker of an ADL trigger record (any reason); ``None`` for a record that is not one."""
    fund, reason, balance = _text(trigger, "fund"), _text(trigger, "reason"), _text(trigger, "fund_balance")
    timestamp, sequence = _integer(trigger, "timestamp"), _integer(trigger, "sequence")
    if fund is None or reason is None or balance is None or timestamp is None or sequence is None:
        return None
    if _DECIMAL_TEXT.fullmatch(balance) is None:
        return None
    detail = {
        name: trigger[name]
        for name in ("symbol", "quantity", "deleverage_side", "shortfall", "bankruptcy_price")
        if isinstance(trigger.get(name), str)
    }
    return Marker("adl", fund, reason, timestamp, balance, sequence, detail)


def state_change(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """An ADL state event (``insurance-fund-adl-states``, SPEC section 9) as the dashboard needs it."""
    fund, state = _text(event, "fund"), _text(event, "state")
    timestamp, sequence = _integer(event, "timestamp"), _integer(event, "sequence")
    if fund is None or state is None or timestamp is None or sequence is None:
        return None
    document: dict[str, Any] = {"fund": fund, "state": state, "timestamp": timestamp, "sequence": sequence}
    for name in ("previous_state", "drawdown", "peak", "balance", "start", "stop"):
        if isinstance(event.get(name), str):
            document[name] = event[name]
    return document


def operation_markers(previous: FundState, current: FundState) -> list[Marker]:
    """Operations between two committed states of a fund, from the growth of their totals (SPEC section 8):
    one marker per kind, with the summed amount. States without those totals give none."""
    markers = []
    for kind, total in OPERATION_TOTALS:
        before, after = getattr(previous, total, None), getattr(current, total, None)
        if isinstance(before, Decimal) and isinstance(after, Decimal) and after > before:
            moved = EXACT.subtract(after, before)
            amount = amount_text(moved if kind == "top_up" else EXACT.minus(moved))
            markers.append(
                Marker(
                    kind,
                    current.fund,
                    None,
                    current.last_timestamp or 0,
                    amount_text(current.balance),
                    current.sequence,
                    {"amount": amount},
                )
            )
    return markers


class History:
    """The history document of one window, built from the records read for it (the hot path of a page load:
    up to the budget's 100,000 deltas, so the checks are inline)."""

    def __init__(self, funds: Iterable[str] | None = None) -> None:
        self._only = None if funds is None else frozenset(funds)
        self._points: dict[str, list[Point]] = {}
        self._markers: list[Marker] = []
        self._states: list[dict[str, Any]] = []
        self.skipped = 0

    def add_delta(self, delta: Any) -> None:
        try:
            fund, balance = delta["fund"], delta["balance_after"]
            timestamp, sequence, kind = delta["timestamp"], delta["sequence"], delta.get("type")
        except (TypeError, KeyError, IndexError, AttributeError):
            self.skipped += 1
            return
        if (
            type(fund) is not str
            or type(balance) is not str
            or type(timestamp) is not int
            or type(sequence) is not int
            or _DECIMAL_TEXT.fullmatch(balance) is None
        ):
            self.skipped += 1
            return
        if self._only is not None and fund not in self._only:
            return
        point = Point(timestamp, balance, sequence)
        points = self._points.get(fund)
        if points is None:
            points = self._points[fund] = []
        points.append(point)
        if kind not in FILL_TYPES:
            marker = delta_marker(delta, fund, point)
            if marker is not None:
                self._markers.append(marker)

    def add_trigger(self, trigger: Any) -> None:
        marker = trigger_marker(trigger) if isinstance(trigger, Mapping) else None
        if marker is None:
            self.skipped += 1
        elif self._only is None or marker.fund in self._only:
            self._markers.append(marker)

    def add_state(self, event: Any) -> None:
        change = state_change(event) if isinstance(event, Mapping) else None
        if change is None:
            self.skipped += 1
        elif self._only is None or change["fund"] in self._only:
            self._states.append(change)

    def document(self) -> dict[str, Any]:
        """Points (decimated per fund), markers (merged when many), state changes, and per fund the last
        sequence of each record kind read, so that the browser drops the live records the window holds."""
        funds = {}
        last: dict[str, dict[str, int]] = {"delta": {}, "trigger": {}, "state": {}}
        for fund, points in sorted(self._points.items()):
            points.sort(key=itemgetter(2))
            funds[fund] = {"points": [list(point) for point in decimate(points)], "deltas": len(points)}
            last["delta"][fund] = points[-1].sequence
        for marker in self._markers:
            if marker.kind == "adl":
                last["trigger"][marker.fund] = max(marker.sequence, last["trigger"].get(marker.fund, 0))
        for change in self._states:
            last["state"][change["fund"]] = max(change["sequence"], last["state"].get(change["fund"], 0))
        self._states.sort(key=lambda change: (change["timestamp"], change["sequence"]))
        return {
            "funds": funds,
            "markers": marker_documents(self._markers),
            "states": self._states[-MAX_STATE_CHANGES:],
            "last_sequence": last,
        }
