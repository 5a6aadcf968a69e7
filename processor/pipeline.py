"""The one handler: decode, route, fold, encode. The worker, file replay, topic replay and the
benchmarks all process a message through ``Pipeline.process``, so there is one path from bytes to
deltas whatever carries them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from mypy_extensions import mypyc_attr

from processor import codec
from processor.codec import FillDecoder, Rejection
from processor.codec.encoding import encode_adl_state, encode_delta, encode_trigger  # compiled: direct calls
from processor.domain.events import FundOperation, LiquidationFill, OperationDelta
from processor.domain.ledger import Ledger
from processor.domain.record import Record

SOURCE_HEADER = "insurance-fund-source"
SOURCE_KEY_HEADER = "insurance-fund-source-key"
#: Beside a key cut to the dead-letter limit: "<length>:<sha256 hex>" of the whole key
SOURCE_KEY_SUMMARY_HEADER = "insurance-fund-source-key-summary"
Headers = Sequence[tuple[str, bytes]]


@mypyc_attr(acyclic=True, free_list_len=1)
class Emitted(Record):
    """The encoded outputs of one input message.

    At most one of ``delta``, ``dead_letter`` and ``forward`` is set. ``forward`` is the message to
    move to partition ``home`` of the re-partition topic first (a fill read on a partition its fund
    does not live on); ``headers`` then say where it came from. ``adl_state`` is the fund's ADL state
    change, with the delta (SPEC section 9).
    """

    _fields = (
        "fund",
        "symbol",
        "delta",
        "trigger",
        "dead_letter",
        "dead_letter_key",
        "forward",
        "home",
        "headers",
        "error",
        "adl_state",
    )
    __slots__ = _fields

    def __init__(
        self,
        fund: str | None,
        symbol: str | None,
        delta: bytes | None = None,
        trigger: bytes | None = None,
        dead_letter: bytes | None = None,
        dead_letter_key: bytes | None = None,
        forward: bytes | None = None,
        home: int = -1,
        headers: list[tuple[str, bytes]] | None = None,
        error: str | None = None,
        adl_state: bytes | None = None,
    ) -> None:
        self.fund: Final = fund
        self.symbol: Final = symbol
        self.delta: Final = delta
        self.trigger: Final = trigger
        self.dead_letter: Final = dead_letter
        self.dead_letter_key: Final = dead_letter_key
        self.forward: Final = forward
        self.home: Final = home
        self.headers: Final = headers
        self.error: Final = error
        self.adl_state: Final = adl_state


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Pipeline:
    """Fold raw messages into a ``Ledger`` and encode what each one produced.

    With ``home`` (fund -> partition number) and ``routed_topic`` (the topic producers write), a fill
    read from ``routed_topic`` on another partition than its fund's is not folded but returned as a
    ``forward``: only the partition a fund lives on folds it, so each fund has one owner.
    """

    def __init__(
        self,
        decoder: FillDecoder,
        ledger: Ledger,
        clock_ms: Callable[[], int] = wall_clock_ms,
        home: Callable[[str], int] | None = None,
        routed_topic: str | None = None,
    ) -> None:
        self.decoder = decoder
        self.ledger = ledger
        self.clock_ms = clock_ms
        self.home = home
        self.routed_topic = routed_topic

    def process(
        self,
        value: bytes | None,
        key: bytes | None,
        topic: str,
        partition: int | None,
        offset: int,
        headers: Headers = (),
    ) -> Emitted:
        fill, packed = self.decoder.decode_packed(value)
        if type(fill) is not LiquidationFill:
            if isinstance(fill, FundOperation):
                return self._operate(fill, value, key, topic, partition, offset, headers)
            return self._rejected(fill, value, key, topic, partition, offset, headers)  # type: ignore[arg-type]
        currency = fill.margin_currency
        if self.home is not None and topic == self.routed_topic:
            home = self.home(currency)
            if home != partition:
                return self._forward(
                    currency, codec.encode_fill, fill, value, key, topic, partition, offset, home
                )
        outcome = self.ledger.fold(fill, packed)
        delta, trigger, change = outcome.delta, outcome.trigger, outcome.state_change
        if delta is None:
            conflict = outcome.conflict
            if conflict is None:
                return Emitted(currency, fill.symbol)
            rejection = Rejection(codec.CONFLICTING_DUPLICATE, conflict)
            return self._rejected(
                rejection, value, key, topic, partition, offset, headers, currency, fill.symbol
            )
        return Emitted(
            delta.fund,
            fill.symbol,
            encode_delta(delta),  # type: ignore[arg-type]
            None if trigger is None else encode_trigger(trigger, self.ledger.policy(trigger.fund)),
            None,
            None,
            None,
            -1,
            None,
            None,
            None if change is None else encode_adl_state(change),
        )

    def _operate(
        self,
        operation: FundOperation,
        value: bytes | None,
        key: bytes | None,
        topic: str,
        partition: int | None,
        offset: int,
        headers: Headers,
    ) -> Emitted:
        """Route, check and fold a top-up or withdrawal (SPEC section 8)."""
        fund = operation.fund
        ledger = self.ledger
        currency = ledger.currency_of(fund)
        if currency is None:
            detail = f"field 'fund' names pool {fund!r}, which the pools file does not define"
            return self._rejected(
                Rejection(codec.INVALID_EVENT, detail), value, key, topic, partition, offset, headers
            )
        policy = ledger.policy(fund)
        if not policy.q(operation.amount):
            detail = (
                f"field 'amount' is {operation.amount}, which rounds to 0 at the fund's precision "
                f"({policy.precision} places)"
            )
            return self._rejected(
                Rejection(codec.INVALID_EVENT, detail), value, key, topic, partition, offset, headers
            )
        if self.home is not None and topic == self.routed_topic:
            home = self.home(currency)
            if home != partition:
                return self._forward(
                    currency, codec.encode_operation, operation, value, key, topic, partition, offset, home
                )
        outcome = ledger.operate(operation, currency)
        delta, conflict, refusal, change = (
            outcome.delta,
            outcome.conflict,
            outcome.refusal,
            outcome.state_change,
        )
        if isinstance(delta, OperationDelta):
            state = None if change is None else codec.encode_adl_state(change)
            return Emitted(fund, None, codec.encode_operation_delta(delta), adl_state=state)
        if conflict is not None:
            problem = Rejection(codec.CONFLICTING_DUPLICATE, conflict)
        elif refusal is not None:
            problem = Rejection(codec.OPERATION_REFUSED, refusal)
        else:
            return Emitted(fund, None)  # an identical duplicate
        return self._rejected(problem, value, key, topic, partition, offset, headers, fund)

    @staticmethod
    def _forward(
        currency: str,
        compact: Callable[[Any], bytes],
        event: LiquidationFill | FundOperation,
        value: bytes | None,
        key: bytes | None,
        topic: str,
        partition: int | None,
        offset: int,
        home: int,
    ) -> Emitted:
        origin = [(SOURCE_HEADER, f"{topic}:{partition}:{offset}".encode())]
        short_key = codec.dead_letter_key(key)
        if short_key is not None:
            origin.append((SOURCE_KEY_HEADER, short_key))
        if key is not None and len(key) > codec.DEAD_LETTER_KEY_LIMIT:  # cut: still name the whole key
            length, digest = codec.key_summary(key)
            origin.append((SOURCE_KEY_SUMMARY_HEADER, f"{length}:{digest}".encode()))
        # an event near the broker's size limit would not fit with the headers: forward it compact
        small = value is not None and len(value) <= codec.DEAD_LETTER_VALUE_LIMIT
        forwarded = value if small else compact(event)
        return Emitted(currency, None, forward=forwarded, home=home, headers=origin)

    def _rejected(
        self,
        rejection: Rejection,
        value: bytes | None,
        key: bytes | None,
        topic: str,
        partition: int | None,
        offset: int,
        headers: Headers = (),
        fund: str | None = None,
        symbol: str | None = None,
    ) -> Emitted:
        summary = None
        if topic != self.routed_topic:  # origin headers are ours, on the re-partition topic only
            topic, partition, offset, key, summary = _origin(headers, topic, partition, offset, key)
        letter = codec.encode_rejection(
            rejection, value, key, topic, partition, offset, self.clock_ms(), summary
        )
        return Emitted(
            fund,
            symbol,
            dead_letter=letter,
            dead_letter_key=codec.dead_letter_key(key),
            error=rejection.error,
        )


def _origin(
    headers: Headers, topic: str, partition: int | None, offset: int, key: bytes | None
) -> tuple[str, int | None, int, bytes | None, tuple[int, str] | None]:
    """Where a forwarded fill was first read (topic, partition, offset, key, and the whole key's
    length and SHA-256 when the key was cut), from its headers; the coordinates it was read at when
    it carries none (or unreadable ones)."""
    source = _header(headers, SOURCE_HEADER)
    if source is None:
        return topic, partition, offset, key, None
    try:
        source_topic, source_partition, source_offset = source.decode().rsplit(":", 2)
        origin = (source_topic, int(source_partition), int(source_offset))
    except (AttributeError, UnicodeDecodeError, ValueError):
        return topic, partition, offset, key, None
    summary = _summary(_header(headers, SOURCE_KEY_SUMMARY_HEADER))
    return (*origin, _header(headers, SOURCE_KEY_HEADER), summary)


def _header(headers: Headers, wanted: str) -> bytes | None:
    """The value of the first header called ``wanted``; ``None`` when there is none."""
    return next((value for name, value in headers if name == wanted), None)


def _summary(header: bytes | None) -> tuple[int, str] | None:
    """A key summary header's length and digest; ``None`` when absent or unreadable."""
    if header is None:
        return None
    length, _, digest = header.partition(b":")
    if not length.isdigit() or len(digest) != 64 or not all(c in b"0123456789abcdef" for c in digest):
        return None
    return int(length), digest.decode()
