"""The ADL policy's outputs against their schemas (SPEC section 9): every state change it publishes
(``adl_state.v1``) and every fund state with the policy's fields (``fund_state.v1``), over generated
streams that cross the thresholds both ways."""

from __future__ import annotations

import json

from hypothesis import given, settings

from processor import codec
from processor.codec import FillDecoder
from processor.domain.events import LiquidationFill
from processor.domain.ledger import Ledger
from processor.domain.state import FundRules
from processor.pipeline import Pipeline
from tests.conftest import scaled
from tests.contract.test_schemas import STATE_FILE, assert_valid
from tests.unit.domain.test_drawdown_properties import NEVER_FORGET_MS, Event, scenarios

DECODER = FillDecoder.from_schema_dir()


@settings(max_examples=scaled(60))
@given(scenarios())
def test_every_state_change_and_state_validates(scenario: tuple[FundRules, list[Event]]) -> None:
    rules, events = scenario
    pipeline = Pipeline(DECODER, Ledger(rules, NEVER_FORGET_MS), clock_ms=lambda: 0)
    for offset, event in enumerate(events):
        raw = (
            codec.encode_fill(event) if isinstance(event, LiquidationFill) else codec.encode_operation(event)
        )
        emitted = pipeline.process(raw, None, "liquidation-fills", 0, offset)
        if emitted.adl_state is not None:
            document = json.loads(emitted.adl_state)
            assert_valid("adl_state.v1", document)
            assert document["fund"] == emitted.fund
        if emitted.trigger is not None:
            assert_valid("adl_trigger.v1", json.loads(emitted.trigger))
    for state in pipeline.ledger.funds.values():
        document = codec.state_document(state)
        assert_valid("fund_state.v1", document)
        assert {"adl_state", "drawdown", "peak"} <= set(document) or state.sequence == 0
    errors = list(STATE_FILE.iter_errors(json.loads(codec.encode_states(pipeline.ledger.funds.values()))))
    assert not errors, [error.message for error in errors]
