"""Operations through the serialization seam (SPEC section 8): decoding by ``type``, the canonical
text of an operation, operation deltas byte for byte, and the state and segment records that carry
operations and pool fills."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from processor import codec
from processor.codec import Rejection
from processor.domain.events import FundOperation, LiquidationFill, OperationDelta
from processor.domain.fold import Applied
from processor.domain.ledger import Ledger
from processor.domain.pools import FundPools, Pool
from processor.domain.state import FundRules, FundState
from tests.conftest import load_schemas, scaled
from tests.strategies import (
    BASE_TIMESTAMP,
    DELETE,
    FillEvent,
    OperationEvent,
    fill_events,
    make_fill,
    make_operation,
    operation_bytes,
    operation_document,
    operation_events,
)
from tests.unit.codec.support import DECODER, STATE_KEYS, example, names

D = Decimal
T = BASE_TIMESTAMP
OPERATION_VALIDATOR = Draft202012Validator(load_schemas()["fund_operation.v1"])
OPERATION_DELTA_KEYS = [
    "delta_id",
    "fund",
    "margin_currency",
    "symbol",
    "liquidation_id",
    "fill_id",
    "type",
    "operation_id",
    "gross_pnl",
    "fee",
    "net",
    "amount",
    "shortfall",
    "balance_before",
    "balance_after",
    "requested_by",
    "reason",
    "transfer_id",
    "sequence",
    "timestamp",
    "version",
]
OPERATION_STATE_KEYS = [*STATE_KEYS, "operations", "total_top_ups", "total_withdrawals"]
POOLS = FundPools([Pool("USDT-MEME", "USDT", ("MEME*",), D("500"), D("50"))])
DEFAULT_RULES = FundRules()


def decoded_operation(raw: bytes) -> FundOperation:
    result = DECODER.decode(raw)
    assert isinstance(result, FundOperation), result
    return result


# --- decoding -------------------------------------------------------------------------------------


def test_an_operation_decodes_by_its_type() -> None:
    assert decoded_operation(operation_bytes()) == make_operation()
    assert decoded_operation(operation_bytes(type="withdrawal")) == make_operation(type="withdrawal")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "fund_operation.v1.top_up",
            make_operation(
                operation_id="op-2026-11-30-001",
                amount="250000",
                reason="refill after the 2026-11-29 crash",
                timestamp=1764460800000,
            ),
        ),
        (
            "fund_operation.v1.withdrawal",
            make_operation(
                operation_id="op-2026-11-30-002",
                type="withdrawal",
                fund="USDT-MEME",
                amount="1000.5",
                requested_by="treasury:bob",
                reason="excess above target",
                timestamp=1764460860000,
            ),
        ),
        (
            "fund_operation.v1.transfer_leg",
            make_operation(
                operation_id="tr-7f3a-in",
                fund="USDT-NEW",
                amount="5000",
                reason="seed the new listings pool",
                transfer_id="tr-7f3a",
                timestamp=1764460920000,
            ),
        ),
    ],
)
def test_the_operation_examples_decode_to_their_operations(name: str, expected: FundOperation) -> None:
    assert decoded_operation(json.dumps(example(name)).encode()) == expected


def test_optional_fields_take_their_defaults_when_absent_or_null() -> None:
    for changes in ({"reason": DELETE}, {"reason": None}, {"transfer_id": None}, {"version": None}):
        decoded = decoded_operation(operation_bytes(**changes))
        expected_reason = "" if "reason" in changes else "refill after the crash"
        assert (decoded.reason, decoded.transfer_id, decoded.version) == (expected_reason, None, 1)


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("1000.5", "1000.5"),
        (1000.5, "1000.5"),
        ("1.0005e3", "1000.5"),
        (1000, "1000"),
        ("0.000000000000000001", "1E-18"),
    ],
)
def test_the_amount_is_read_like_any_input_decimal(spelling: object, expected: str) -> None:
    assert decoded_operation(operation_bytes(amount=spelling)).amount == D(expected)


def test_a_fill_field_on_an_operation_and_an_operation_field_on_a_fill_are_ignored() -> None:
    assert decoded_operation(operation_bytes(fill_id="f-1", symbol="BTCUSDT")) == make_operation()
    fill = DECODER.decode(json.dumps(example("liquidation_fill.v1.seed") | {"operation_id": "x"}).encode())
    assert isinstance(fill, LiquidationFill)


def test_a_document_with_a_fill_type_is_checked_as_a_fill() -> None:
    result = DECODER.decode(operation_bytes(type="liquidation_fill"))
    assert isinstance(result, Rejection)
    assert (result.error, names(result.detail, "fill_id")) == ("invalid_event", True)


def test_the_from_document_path_agrees_with_decode() -> None:
    document = operation_document(amount=1000.5, reason=None)
    assert DECODER.from_document(document) == DECODER.decode(json.dumps(document).encode())


@settings(max_examples=scaled(100))
@given(operation_events(funds=["USDT", "BTC", "USDT-MEME", "BTC_ALT-2"]))
def test_every_spelling_of_a_valid_operation_decodes_to_the_same_operation(event: OperationEvent) -> None:
    assert decoded_operation(event.encode()) == event.expected()
    assert OPERATION_VALIDATOR.is_valid(event.document())


@settings(max_examples=scaled(100))
@given(operation_events(), st.data())
def test_document_mutations_of_operations_are_an_operation_or_a_rejection(
    event: OperationEvent, data: st.DataObject
) -> None:
    """Whatever a producer gets wrong, the decoder answers and never raises; what it accepts, the
    schema accepts too."""
    document = event.document()
    for _ in range(data.draw(st.integers(1, 3))):
        name = data.draw(st.sampled_from([*document, "type", "version", "extra"]))
        if data.draw(st.booleans()):
            document.pop(name, None)
        else:
            document[name] = data.draw(
                st.none()
                | st.booleans()
                | st.integers()
                | st.text(max_size=6)
                | st.sampled_from(["-1", "0", "top_up"])
            )
    result = DECODER.decode(json.dumps(document).encode())
    assert isinstance(result, (FundOperation, LiquidationFill, Rejection)), result
    if isinstance(result, Rejection):
        assert result.error in ("invalid_event", "unsupported_version") and result.detail
    elif isinstance(result, FundOperation):
        assert OPERATION_VALIDATOR.is_valid(document), document
        assert result.amount > 0
    reference = DECODER.from_document(document)  # the reference path reaches the same verdict
    if isinstance(result, Rejection):
        assert isinstance(reference, Rejection) and reference.error == result.error
    else:
        assert reference == result


# --- the canonical text of an operation (forwarded compact) ----------------------------------------


@settings(max_examples=scaled(100))
@given(operation_events(funds=["USDT", "USDT-MEME"]))
def test_encode_operation_decodes_to_the_same_operation(event: OperationEvent) -> None:
    operation = decoded_operation(event.encode())
    assert decoded_operation(codec.encode_operation(operation)) == operation


def test_encode_operation_writes_transfer_id_only_when_set_and_drops_unknown_fields() -> None:
    plain = json.loads(codec.encode_operation(decoded_operation(operation_bytes(padding="x" * 100))))
    assert list(plain) == [
        "type",
        "operation_id",
        "fund",
        "amount",
        "requested_by",
        "reason",
        "timestamp",
        "version",
    ]
    leg = json.loads(codec.encode_operation(make_operation(transfer_id="tr-1")))
    assert leg["transfer_id"] == "tr-1" and list(leg)[-3:] == ["transfer_id", "timestamp", "version"]


# --- operation deltas -----------------------------------------------------------------------------


def delta_of(
    operation: FundOperation, rules: FundRules = DEFAULT_RULES, state: FundState | None = None
) -> OperationDelta:
    ledger = Ledger(rules)
    if state is not None:
        ledger.funds[state.fund] = state
    currency = ledger.currency_of(operation.fund)
    assert currency is not None
    outcome = ledger.operate(operation, currency)
    assert isinstance(outcome.delta, OperationDelta), outcome
    return outcome.delta


def test_a_top_up_delta_exact_bytes() -> None:
    delta = delta_of(make_operation(amount="250000"))
    assert codec.encode_operation_delta(delta) == (
        b'{"delta_id":"op-0001","fund":"USDT","margin_currency":"USDT","symbol":null,"liquidation_id":null,'
        b'"fill_id":null,"type":"top_up","operation_id":"op-0001","gross_pnl":"0.00000000",'
        b'"fee":"0.00000000","net":"0.00000000","amount":"250000.00000000","shortfall":"0.00000000",'
        b'"balance_before":"0.00000000","balance_after":"250000.00000000","requested_by":"treasury:alice",'
        b'"reason":"refill after the crash","sequence":1,"timestamp":1700000000000,"version":1}'
    )


def test_a_transfer_leg_delta_carries_its_transfer_id_before_the_sequence() -> None:
    rules = FundRules(pools=POOLS)
    document = codec.operation_delta_document(
        delta_of(make_operation(fund="USDT-MEME", transfer_id="tr-1"), rules)
    )
    assert list(document) == OPERATION_DELTA_KEYS
    assert (document["fund"], document["margin_currency"], document["transfer_id"]) == (
        "USDT-MEME",
        "USDT",
        "tr-1",
    )
    assert document["balance_before"] == "500.00000000"


def test_an_operation_delta_without_a_transfer_has_no_transfer_id() -> None:
    document = codec.operation_delta_document(delta_of(make_operation()))
    assert list(document) == [key for key in OPERATION_DELTA_KEYS if key != "transfer_id"]


def test_a_withdrawal_delta_amount_is_negative_at_the_funds_places() -> None:
    rules = FundRules(initial_balance={"USDT": D("1000")})
    document = codec.operation_delta_document(
        delta_of(make_operation(type="withdrawal", amount="0.1"), rules)
    )
    assert (document["amount"], document["balance_before"], document["balance_after"]) == (
        "-0.10000000",
        "1000.00000000",
        "999.90000000",
    )


@pytest.mark.parametrize("places", [0, 2, 8, 10, 18])
def test_a_withdrawal_delta_has_no_negative_zero(places: int) -> None:
    rules = FundRules(precision={"USDT": places}, initial_balance={"USDT": D("1000")})
    document = codec.operation_delta_document(delta_of(make_operation(type="withdrawal", amount="1"), rules))
    zero = format(D(0).scaleb(-places), "f")
    assert [document[name] for name in ("gross_pnl", "fee", "net", "shortfall")] == [zero] * 4


@pytest.mark.parametrize("places", [0, 2, 8, 10, 18])
def test_operation_delta_amounts_carry_exactly_p_places(places: int) -> None:
    rules = FundRules(precision={"BTC": places}, initial_balance={"BTC": D("3")})
    for kind in ("top_up", "withdrawal"):
        document = codec.operation_delta_document(
            delta_of(make_operation(fund="BTC", type=kind, amount="1"), rules)
        )
        for name in ("gross_pnl", "fee", "net", "amount", "shortfall", "balance_before", "balance_after"):
            text = document[name]
            assert "E" not in text and "e" not in text, (name, text)
            assert len(text.partition(".")[2]) == places, (name, text)


def test_a_top_up_delta_of_a_tiny_amount_is_written_fixed_point() -> None:
    document = codec.operation_delta_document(delta_of(make_operation(amount="0.00000001")))
    assert (document["amount"], document["balance_after"], document["fee"]) == (
        "0.00000001",
        "0.00000001",
        "0.00000000",
    )


# --- state documents with operations --------------------------------------------------------------


def test_a_fund_without_operations_reads_exactly_as_in_v1() -> None:
    ledger = Ledger()
    ledger.fold(make_fill())
    assert list(codec.state_document(ledger.funds["USDT"])) == STATE_KEYS


def test_a_fund_with_operations_adds_their_count_and_totals() -> None:
    ledger = Ledger(FundRules(initial_balance={"USDT": D("10")}))
    ledger.fold(make_fill())
    ledger.operate(make_operation(operation_id="t", amount="100.5"), "USDT")
    ledger.operate(make_operation(operation_id="w", type="withdrawal", amount="0.25"), "USDT")
    ledger.operate(make_operation(operation_id="w", type="withdrawal", amount="0.25"), "USDT")  # a duplicate
    document = codec.state_document(ledger.funds["USDT"])
    assert list(document) == OPERATION_STATE_KEYS
    assert {name: document[name] for name in OPERATION_STATE_KEYS[1:] if name != "by_symbol"} == {
        "balance": "309.75000000",
        "total_surplus": "199.50000000",
        "total_paid": "0.00000000",
        "total_shortfall": "0.00000000",
        "fills": 1,
        "duplicates": 1,
        "adl_triggers": 0,
        "sequence": 3,
        "last_timestamp": T,
        "operations": 2,
        "total_top_ups": "100.50000000",
        "total_withdrawals": "0.25000000",
    }
    assert document["by_symbol"] == {"BTCUSDT": "199.50000000"}


def test_a_fund_with_only_operations_has_no_symbols_and_a_last_timestamp() -> None:
    ledger = Ledger()
    ledger.operate(make_operation(timestamp=T + 5), "USDT")
    document = codec.state_document(ledger.funds["USDT"])
    assert (document["fills"], document["operations"], document["by_symbol"], document["last_timestamp"]) == (
        0,
        1,
        {},
        T + 5,
    )


@pytest.mark.parametrize("places", [2, 8, 10])
def test_state_documents_with_operations_round_trip(places: int) -> None:
    ledger = Ledger(FundRules(precision={"USDT": places}, pools=POOLS))
    ledger.fold(make_fill(symbol="MEMEUSDT", fill_price="27000"))
    ledger.operate(make_operation(fund="USDT-MEME", amount="1000"), "USDT")
    ledger.operate(
        make_operation(operation_id="w", fund="USDT-MEME", type="withdrawal", amount="1.5"), "USDT"
    )
    ledger.operate(make_operation(operation_id="only"), "USDT")
    for state in ledger.funds.values():
        document = json.loads(json.dumps(codec.state_document(state)))
        assert codec.decode_state(document) == state
        assert codec.state_document(codec.decode_state(document)) == document
        record = codec.FundRecord(state, {"liquidation-fills:0": 3})
        assert codec.decode_fund_record(codec.encode_fund_record(record)) == record


def test_a_v1_state_document_reads_back_with_no_operations() -> None:
    state = codec.decode_state(example("fund_state.v1.seed"))
    assert (state.operations, state.total_top_ups, state.total_withdrawals) == (0, 0, 0)
    assert str(state.total_top_ups) == str(state.balance * 0)


# --- segments: pool fills and operations ------------------------------------------------------------


def test_a_pool_fills_row_carries_its_currency_and_a_currency_funds_row_does_not() -> None:
    fill = make_fill(symbol="MEMEUSDT")
    assert len(json.loads(codec.encode_fill_segment("USDT", [fill]))[0]) == 12
    (row,) = json.loads(codec.encode_fill_segment("USDT-MEME", [fill]))
    assert (len(row), codec.row_currency(row, "USDT-MEME")) == (13, "USDT")
    assert codec.decode_fill_segment("USDT-MEME", codec.encode_fill_segment("USDT-MEME", [fill])) == [fill]


def test_an_operations_row_is_an_object() -> None:
    operation = make_operation(fund="USDT-MEME", transfer_id="tr-1", reason="a\x1fb")
    (row,) = json.loads(codec.encode_fill_segment("USDT-MEME", [operation]))
    assert row == {
        "operation_id": "op-0001",
        "type": "top_up",
        "amount": "1000",
        "requested_by": "treasury:alice",
        "reason": "a\x1fb",
        "transfer_id": "tr-1",
        "timestamp": T,
    }
    assert codec.operation_from_row("USDT-MEME", row) == operation


@settings(max_examples=scaled(50))
@given(
    st.lists(fill_events(currencies=["USDT"], extremes=True), max_size=4),
    st.lists(operation_events(funds=["USDT-MEME"]), max_size=4),
    st.randoms(use_true_random=False),
)
def test_a_mixed_segment_reads_back_as_written(
    fills: list[FillEvent], operations: list[OperationEvent], order: Any
) -> None:
    events: list[Applied] = [event.expected() for event in fills] + [event.expected() for event in operations]
    order.shuffle(events)
    for fund in ("USDT", "USDT-MEME"):
        assert codec.decode_fill_segment(fund, codec.encode_fill_segment(fund, events)) == [
            event._replace(fund=fund) if isinstance(event, FundOperation) else event for event in events
        ]
