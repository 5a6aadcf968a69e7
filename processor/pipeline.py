"""Decode, fold, encode: the path every input message takes, whatever carries it (file, topic, bench)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from processor import codec
from processor.codec import FillDecoder, Rejection
from processor.domain.ledger import Ledger

_new = tuple.__new__


class Emitted(NamedTuple):
    """The encoded outputs of one input message; at most one of ``delta`` and ``dead_letter``."""

    fund: str | None
    symbol: str | None
    delta: bytes | None = None
    trigger: bytes | None = None
    dead_letter: bytes | None = None


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Pipeline:
    """Fold raw messages into a ``Ledger`` and encode what each one produced."""

    def __init__(
        self, decoder: FillDecoder, ledger: Ledger, clock_ms: Callable[[], int] = wall_clock_ms
    ) -> None:
        self.decoder = decoder
        self.ledger = ledger
        self.clock_ms = clock_ms

    def process(
        self, value: bytes | None, key: bytes | None, topic: str, partition: int | None, offset: int
    ) -> Emitted:
        fill = self.decoder.decode(value)
        if isinstance(fill, Rejection):
            return Emitted(
                None, None, dead_letter=self._dead_letter(fill, value, key, topic, partition, offset)
            )
        _, delta, trigger, conflict = self.ledger.fold(fill)
        if delta is None:
            if conflict is None:
                return Emitted(fill.margin_currency, fill.symbol)
            rejection = Rejection(codec.CONFLICTING_DUPLICATE, conflict)
            letter = self._dead_letter(rejection, value, key, topic, partition, offset)
            return Emitted(fill.margin_currency, fill.symbol, dead_letter=letter)
        # Positional construction: building a NamedTuple by keyword costs several times more.
        return _new(
            Emitted,
            (
                fill.margin_currency,
                fill.symbol,
                codec.encode_delta(delta),
                None if trigger is None else codec.encode_trigger(trigger, self.ledger.policy(trigger.fund)),
                None,
            ),
        )

    def _dead_letter(
        self,
        rejection: Rejection,
        value: bytes | None,
        key: bytes | None,
        topic: str,
        partition: int | None,
        offset: int,
    ) -> bytes:
        return codec.encode_rejection(rejection, value, key, topic, partition, offset, self.clock_ms())
