"""Operations through the one handler (SPEC section 8): what each good or bad top-up or withdrawal
turns into, and that a bad one never changes a fund."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import pytest

from processor import codec
from processor.codec import FillDecoder
from processor.domain.ledger import Ledger
from processor.domain.pools import FundPools, Pool
from processor.domain.state import FundRules
from processor.pipeline import SOURCE_HEADER, SOURCE_KEY_HEADER, Emitted, Pipeline
from tests.strategies import DELETE, operation_bytes, seed_bytes
from tests.unit.codec.support import names

D = Decimal
CLOCK_MS = 1_700_000_999_000
INPUT = "liquidation-fills"
REPARTITION = "insurance-fund-fills-by-fund"
HOMES = {"USDT": 1, "BTC": 2, "ETH": 0}
RULES = FundRules(
    precision={"BTC": 10, "ETH": 2},
    floor={"USDT": D("100")},
    initial_balance={"USDT": D("1000"), "BTC": D("1")},
    pools=FundPools(
        [
            Pool("USDT-MEME", "USDT", ("MEME*USDT",), D("500"), D("50")),
            Pool("ETH_NEW", "ETH", ("*",), from_timestamp=0),
        ]
    ),
)


@pytest.fixture
def pipeline(decoder: FillDecoder) -> Pipeline:
    """A pipeline whose funds have all seen something: USDT, its pool, BTC and ETH."""
    pipeline = Pipeline(decoder, Ledger(RULES), clock_ms=lambda: CLOCK_MS)
    for number, (fund, amount) in enumerate(
        [("USDT", "1"), ("USDT-MEME", "1"), ("BTC", "0.5"), ("ETH", "3")]
    ):
        emitted = pipeline.process(
            operation_bytes(operation_id=f"setup-{number}", fund=fund, amount=amount), b"k", INPUT, 0, number
        )
        assert emitted.delta is not None
    pipeline.process(seed_bytes(fill_id="fill-1"), b"USDT", INPUT, 0, 10)
    pipeline.process(seed_bytes(fill_id="fill-meme", symbol="MEMEUSDT"), b"USDT", INPUT, 0, 11)
    return pipeline


def snapshot(pipeline: Pipeline) -> tuple[Any, ...]:
    """Everything a message could change: every fund's state and every duplicate window's contents."""
    ledger = pipeline.ledger
    windows = {fund: sorted(map(repr, window)) for fund, window in ledger.windows.items()}
    return copy.deepcopy(dict(ledger.funds)), windows


def rejected(pipeline: Pipeline, raw: bytes, error: str, field: str, offset: int = 99) -> dict[str, Any]:
    """Process ``raw``: one dead letter with ``error`` naming ``field``, and no fund changed."""
    before = snapshot(pipeline)
    emitted = pipeline.process(raw, b"USDT", INPUT, 3, offset)
    assert (emitted.delta, emitted.trigger, emitted.forward, emitted.error) == (None, None, None, error)
    assert emitted.dead_letter is not None
    letter: dict[str, Any] = json.loads(emitted.dead_letter)
    assert letter["error"] == error
    assert names(letter["detail"], field), letter["detail"]
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (INPUT, 3, offset)
    assert (letter["value"], letter["key"], letter["timestamp"]) == (raw.decode(), "USDT", CLOCK_MS)
    assert snapshot(pipeline) == before
    return letter


# --- applied --------------------------------------------------------------------------------------


def test_a_top_up_yields_its_delta(pipeline: Pipeline) -> None:
    emitted = pipeline.process(operation_bytes(amount="250.123456789"), b"USDT", INPUT, 1, 20)
    assert (emitted.fund, emitted.symbol, emitted.trigger, emitted.dead_letter) == ("USDT", None, None, None)
    assert emitted.delta is not None
    delta = json.loads(emitted.delta)
    assert (delta["amount"], delta["balance_before"], delta["balance_after"]) == (
        "250.12345679",
        "1200.50000000",
        "1450.62345679",
    )
    assert (delta["delta_id"], delta["type"], delta["sequence"]) == ("op-0001", "top_up", 3)
    state = pipeline.ledger.funds["USDT"]
    assert (state.operations, state.fills, state.total_top_ups) == (2, 1, D("251.12345679"))


def test_a_withdrawal_yields_its_delta_with_a_negative_amount(pipeline: Pipeline) -> None:
    raw = operation_bytes(type="withdrawal", fund="USDT-MEME", amount="100", transfer_id="tr-1")
    emitted = pipeline.process(raw, b"USDT", INPUT, 1, 21)
    assert emitted.fund == "USDT-MEME"
    assert emitted.delta is not None
    delta = json.loads(emitted.delta)
    assert (delta["fund"], delta["margin_currency"], delta["amount"], delta["transfer_id"]) == (
        "USDT-MEME",
        "USDT",
        "-100.00000000",
        "tr-1",
    )


def test_a_withdrawal_down_to_exactly_the_floor_is_applied(pipeline: Pipeline) -> None:
    balance = pipeline.ledger.funds["USDT"].balance  # 1000 + 1 + 199.5
    raw = operation_bytes(type="withdrawal", amount=str(balance - 100))
    emitted = pipeline.process(raw, b"USDT", INPUT, 1, 22)
    assert emitted.delta is not None
    assert json.loads(emitted.delta)["balance_after"] == "100.00000000"


def test_an_identical_resend_yields_nothing_and_is_counted(pipeline: Pipeline) -> None:
    pipeline.process(operation_bytes(), b"USDT", INPUT, 1, 23)
    before = pipeline.ledger.funds["USDT"]
    for raw in (
        operation_bytes(),
        operation_bytes(amount="1000.000"),
        operation_bytes(amount=1000),
        operation_bytes(amount="1e3", version=DELETE, transfer_id=None),
        operation_bytes(producer="treasury-cli 2.1"),
    ):
        assert pipeline.process(raw, b"USDT", INPUT, 1, 24) == Emitted("USDT", None)
    assert pipeline.ledger.funds["USDT"] == before._replace(duplicates=before.duplicates + 5)


# --- bad input (issue 10, item 5): a dead letter naming the field, and no fund changed -------------


def test_an_operation_on_a_pool_the_file_does_not_define_is_invalid(pipeline: Pipeline) -> None:
    letter = rejected(pipeline, operation_bytes(fund="USDT-GHOST"), "invalid_event", "fund")
    assert letter["detail"] == "field 'fund' names pool 'USDT-GHOST', which the pools file does not define"
    assert "USDT-GHOST" not in pipeline.ledger.funds


def test_an_operation_on_a_pool_is_invalid_when_there_is_no_pools_file(decoder: FillDecoder) -> None:
    pipeline = Pipeline(decoder, Ledger(), clock_ms=lambda: CLOCK_MS)
    rejected(pipeline, operation_bytes(fund="USDT-MEME"), "invalid_event", "fund")
    assert pipeline.ledger.funds == {}


@pytest.mark.parametrize("amount", ["0", "0.0", "-0", "-5", "-0.00000001", 0, -1, -0.5, "0E+5"])
@pytest.mark.parametrize("kind", ["top_up", "withdrawal"])
def test_a_negative_or_zero_amount_is_invalid(pipeline: Pipeline, amount: object, kind: str) -> None:
    rejected(pipeline, operation_bytes(type=kind, amount=amount), "invalid_event", "amount")


@pytest.mark.parametrize(
    ("fund", "amount", "places"),
    [
        ("USDT", "0.000000001", 8),
        ("USDT", "0.000000005", 8),  # half to even: 0
        ("USDT-MEME", "0.000000004999", 8),  # a pool rounds at its currency's precision
        ("BTC", "0.00000000005", 10),
        ("ETH", "0.004", 2),
        ("ETH_NEW", "0.005", 2),  # half to even: 0.00
        ("ETH", 0.001, 2),
    ],
)
@pytest.mark.parametrize("kind", ["top_up", "withdrawal"])
def test_an_amount_that_rounds_to_0_is_invalid(
    pipeline: Pipeline, fund: str, amount: object, places: int, kind: str
) -> None:
    letter = rejected(
        pipeline, operation_bytes(type=kind, fund=fund, amount=amount), "invalid_event", "amount"
    )
    assert f"rounds to 0 at the fund's precision ({places} places)" in letter["detail"]


@pytest.mark.parametrize(("fund", "amount"), [("USDT", "0.000000006"), ("ETH", "0.015"), ("BTC", "1e-10")])
def test_the_smallest_amounts_that_round_to_a_quantum_are_applied(
    pipeline: Pipeline, fund: str, amount: str
) -> None:
    assert pipeline.process(operation_bytes(fund=fund, amount=amount), b"k", INPUT, 0, 30).delta is not None


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        (DELETE, "required field 'requested_by' is missing"),
        (None, "required field 'requested_by' must not be null"),
        ("", "field 'requested_by' must have 1..128 characters, got 0"),
        ("x" * 129, "field 'requested_by' must have 1..128 characters, got 129"),
        (42, "field 'requested_by' must be a string, got a number"),
    ],
)
def test_a_missing_or_empty_requested_by_is_invalid(pipeline: Pipeline, change: object, detail: str) -> None:
    letter = rejected(pipeline, operation_bytes(requested_by=change), "invalid_event", "requested_by")
    assert letter["detail"] == detail


@pytest.mark.parametrize(
    "fund",
    [
        "usdt",
        "U",
        "A" * 17,
        "USDT-",
        "USDT_",
        "-MEME",
        "USDT MEME",
        "USDT\n",
        "USDT-meme",
        "USDT-" + "X" * 33,
        "USDT/MEME",
        "",
        5,
        [],
        None,
        DELETE,
    ],
)
def test_a_fund_that_is_not_a_valid_id_is_invalid(pipeline: Pipeline, fund: object) -> None:
    rejected(pipeline, operation_bytes(fund=fund), "invalid_event", "fund")


def test_a_withdrawal_below_the_floor_is_refused_naming_balance_floor_and_amount(pipeline: Pipeline) -> None:
    # USDT holds 1000 + 1 + 199.5 = 1200.5 over a floor of 100: 1100.5 may go, not a quantum more
    raw = operation_bytes(type="withdrawal", operation_id="w-1", amount="1100.50000001")
    letter = rejected(pipeline, raw, "operation_refused", "balance")
    assert letter["detail"] == (
        "withdrawal of amount 1100.50000001 from fund USDT refused: balance 1200.50000000 - amount "
        "1100.50000001 would fall below the floor 100.00000000"
    )
    assert names(letter["detail"], "floor") and names(letter["detail"], "amount")
    assert pipeline.ledger.windows["USDT"].get("w-1") is None
    # not remembered: sent again once the balance allows, it applies
    pipeline.process(operation_bytes(operation_id="more", amount="0.00000001"), b"USDT", INPUT, 1, 40)
    emitted = pipeline.process(raw, b"USDT", INPUT, 1, 41)
    assert emitted.delta is not None
    assert json.loads(emitted.delta)["balance_after"] == "100.00000000"


def test_a_pool_withdrawal_below_the_pools_floor_is_refused(pipeline: Pipeline) -> None:
    balance = pipeline.ledger.funds["USDT-MEME"].balance
    raw = operation_bytes(type="withdrawal", fund="USDT-MEME", amount=str(balance - 50 + D("0.00000001")))
    letter = rejected(pipeline, raw, "operation_refused", "floor")
    assert "from fund USDT-MEME refused" in letter["detail"]
    assert "the floor 50.00000000" in letter["detail"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", "1000.00000001"),
        ("type", "withdrawal"),
        ("requested_by", "treasury:mallory"),
        ("reason", "another reason"),
        ("transfer_id", "tr-1"),
        ("timestamp", 1_700_000_000_001),
    ],
)
def test_a_resent_operation_id_with_other_content_is_a_conflicting_duplicate(
    pipeline: Pipeline, field: str, value: object
) -> None:
    pipeline.process(operation_bytes(), b"USDT", INPUT, 1, 50)
    letter = rejected(pipeline, operation_bytes(**{field: value}), "conflicting_duplicate", field)
    assert letter["detail"].startswith("operation_id 'op-0001' was already applied to fund USDT")


def test_an_operation_id_equal_to_a_fill_id_of_the_same_fund_is_a_conflicting_duplicate(
    pipeline: Pipeline,
) -> None:
    letter = rejected(
        pipeline, operation_bytes(operation_id="fill-1"), "conflicting_duplicate", "operation_id"
    )
    assert letter["detail"] == "operation_id 'fill-1' was already used by a fill applied to fund USDT"
    pool = rejected(
        pipeline,
        operation_bytes(operation_id="fill-meme", fund="USDT-MEME"),
        "conflicting_duplicate",
        "operation_id",
    )
    assert pool["detail"] == "operation_id 'fill-meme' was already used by a fill applied to fund USDT-MEME"


def test_a_fill_id_equal_to_an_operation_id_of_the_same_fund_is_a_conflicting_duplicate(
    pipeline: Pipeline,
) -> None:
    letter = rejected(pipeline, seed_bytes(fill_id="setup-0"), "conflicting_duplicate", "fill_id")
    assert letter["detail"] == "fill_id 'setup-0' was already used by an operation applied to fund USDT"


def test_an_operation_id_equal_to_a_fill_id_of_another_fund_is_applied(pipeline: Pipeline) -> None:
    emitted = pipeline.process(operation_bytes(operation_id="fill-1", fund="USDT-MEME"), b"k", INPUT, 0, 60)
    assert emitted.delta is not None


@pytest.mark.parametrize(
    "kind", ["transfer", "TOP_UP", "top-up", "withdraw", "deposit", "", " top_up", 1, True, ["top_up"], {}]
)
def test_a_type_other_than_the_three_is_invalid(pipeline: Pipeline, kind: object) -> None:
    letter = rejected(pipeline, operation_bytes(type=kind), "invalid_event", "type")
    assert letter["detail"].startswith(
        "field 'type' must be one of 'liquidation_fill', 'top_up', 'withdrawal'"
    )


def test_a_fill_may_say_it_is_a_fill(pipeline: Pipeline) -> None:
    assert pipeline.process(seed_bytes(fill_id="typed", type="liquidation_fill"), b"k", INPUT, 0, 70).delta


def test_an_operation_of_another_version_is_unsupported(pipeline: Pipeline) -> None:
    rejected(pipeline, operation_bytes(version=2), "unsupported_version", "version")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"operation_id": ""}, "operation_id"),
        ({"operation_id": "x" * 129}, "operation_id"),
        ({"operation_id": DELETE}, "operation_id"),
        ({"reason": "x" * 513}, "reason"),
        ({"reason": 5}, "reason"),
        ({"transfer_id": ""}, "transfer_id"),
        ({"amount": "NaN"}, "amount"),
        ({"amount": "1e16"}, "amount"),
        ({"amount": "0.0000000000000000001"}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": DELETE}, "amount"),
        ({"timestamp": -1}, "timestamp"),
        ({"timestamp": "1700000000000"}, "timestamp"),
    ],
)
def test_other_broken_rules_of_the_operation_schema_are_invalid(
    pipeline: Pipeline, change: dict[str, object], field: str
) -> None:
    rejected(pipeline, operation_bytes(**change), "invalid_event", field)


def test_nothing_stops_after_bad_operations(pipeline: Pipeline) -> None:
    for offset, raw in enumerate(
        [operation_bytes(fund="USDT-GHOST"), operation_bytes(amount="-1"), operation_bytes(type="transfer")]
    ):
        assert pipeline.process(raw, b"k", INPUT, 0, offset).error == "invalid_event"
    assert pipeline.process(operation_bytes(operation_id="fine"), b"k", INPUT, 0, 9).delta is not None


# --- routing: an operation is folded on its fund's currency's partition ------------------------------


@pytest.fixture
def routed(decoder: FillDecoder) -> Pipeline:
    return Pipeline(
        decoder, Ledger(RULES), clock_ms=lambda: CLOCK_MS, home=HOMES.__getitem__, routed_topic=INPUT
    )


@pytest.mark.parametrize(("fund", "currency"), [("USDT", "USDT"), ("USDT-MEME", "USDT"), ("ETH_NEW", "ETH")])
def test_an_operation_read_elsewhere_is_forwarded_to_its_currencys_home(
    routed: Pipeline, fund: str, currency: str
) -> None:
    raw = operation_bytes(fund=fund)
    elsewhere = (HOMES[currency] + 1) % 3
    emitted = routed.process(raw, b"key", INPUT, elsewhere, 7)
    assert emitted == Emitted(
        currency,
        None,
        forward=raw,
        home=HOMES[currency],
        headers=[(SOURCE_HEADER, f"{INPUT}:{elsewhere}:7".encode()), (SOURCE_KEY_HEADER, b"key")],
    )
    assert routed.ledger.funds == {}
    assert emitted.headers is not None
    folded = routed.process(raw, b"key", REPARTITION, emitted.home, 0, emitted.headers)
    assert folded.delta is not None and json.loads(folded.delta)["fund"] == fund


def test_an_operation_on_its_home_partition_is_folded(routed: Pipeline) -> None:
    assert (
        routed.process(operation_bytes(fund="USDT-MEME"), b"USDT", INPUT, HOMES["USDT"], 1).delta is not None
    )


def test_a_large_operation_is_forwarded_compact(routed: Pipeline, decoder: FillDecoder) -> None:
    raw = operation_bytes(padding="x" * codec.DEAD_LETTER_VALUE_LIMIT)
    emitted = routed.process(raw, b"USDT", INPUT, 0, 7)
    assert emitted.forward is not None and len(emitted.forward) < 1000
    assert decoder.decode(emitted.forward) == decoder.decode(raw)


@pytest.mark.parametrize(
    ("raw", "field"),
    [(operation_bytes(fund="USDT-GHOST"), "fund"), (operation_bytes(amount="0.000000001"), "amount")],
    ids=["unknown-pool", "rounds-to-0"],
)
def test_an_operation_invalid_for_its_fund_is_dead_lettered_where_it_was_read(
    routed: Pipeline, raw: bytes, field: str
) -> None:
    emitted = routed.process(raw, b"USDT", INPUT, 0, 12)
    assert (emitted.forward, emitted.delta, emitted.error) == (None, None, "invalid_event")
    assert emitted.dead_letter is not None
    letter = json.loads(emitted.dead_letter)
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (INPUT, 0, 12)
    assert names(letter["detail"], field)


@pytest.mark.parametrize(
    "raw", [operation_bytes(fund="USDT-GHOST"), operation_bytes(amount="0.000000001")], ids=["pool", "zero"]
)
def test_an_operation_invalid_at_home_is_dead_lettered_where_the_producer_put_it(
    routed: Pipeline, raw: bytes
) -> None:
    headers = [(SOURCE_HEADER, b"liquidation-fills:0:41"), (SOURCE_KEY_HEADER, b"USDT-key")]
    emitted = routed.process(raw, b"USDT", REPARTITION, 1, 9, headers)
    assert emitted.dead_letter is not None
    letter = json.loads(emitted.dead_letter)
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (INPUT, 0, 41)
    assert (letter["key"], emitted.dead_letter_key) == ("USDT-key", b"USDT-key")


def test_a_conflicting_operation_forwarded_home_is_dead_lettered_where_the_producer_put_it(
    routed: Pipeline,
) -> None:
    routed.process(operation_bytes(), b"USDT", INPUT, HOMES["USDT"], 1)
    raw = operation_bytes(amount="1")
    forwarded = routed.process(raw, b"USDT-key", INPUT, 0, 41)
    assert forwarded.forward is not None and forwarded.headers is not None
    emitted = routed.process(forwarded.forward, b"USDT", REPARTITION, forwarded.home, 9, forwarded.headers)
    assert emitted.error == "conflicting_duplicate"
    assert emitted.dead_letter is not None
    letter = json.loads(emitted.dead_letter)
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (INPUT, 0, 41)
    assert letter["key"] == "USDT-key"
