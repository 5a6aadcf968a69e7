"""The reference the integration tests and the soak compare the worker with: the file replay."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson

from processor import codec
from processor.codec import FillDecoder
from processor.domain.ledger import Ledger
from processor.domain.pools import FundPools
from processor.domain.state import FundRules
from processor.pipeline import Pipeline
from processor.stream.produce import key_of


class FileReplay:
    """The reference: what ``replay --input`` makes of the same messages."""

    def __init__(self, messages: list[bytes], rules: FundRules) -> None:
        pipeline = Pipeline(FillDecoder.from_schema_dir(), Ledger(rules))
        self.deltas: list[bytes] = []
        self.triggers: list[bytes] = []
        self.dead_letters: list[dict[str, Any]] = []
        self.adl_states: list[bytes] = []
        for offset, message in enumerate(messages):
            emitted = pipeline.process(message, None, "file", None, offset)
            if emitted.delta is not None:
                self.deltas.append(emitted.delta)
            if emitted.trigger is not None:
                self.triggers.append(emitted.trigger)
            if emitted.adl_state is not None:
                self.adl_states.append(emitted.adl_state)
            if emitted.dead_letter is not None:
                self.dead_letters.append(orjson.loads(emitted.dead_letter))
        self.states = {fund: codec.state_document(state) for fund, state in pipeline.ledger.states().items()}


def by_fund(records: list[bytes]) -> dict[str, list[bytes]]:
    ledgers: dict[str, list[bytes]] = defaultdict(list)
    for record in records:
        ledgers[orjson.loads(record)["fund"]].append(record)
    return dict(ledgers)


def keyed_by_currency(
    messages: list[bytes], pools: FundPools | None = None
) -> list[tuple[bytes | None, bytes | None]]:
    """Each message with the key a producer gives it: its (fund's) currency."""
    pools = pools if pools is not None else FundPools()
    return [(key_of(message, pools), message) for message in messages]
