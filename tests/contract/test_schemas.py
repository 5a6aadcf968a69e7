"""The schemas are valid, their examples conform, and everything the codec writes conforms to them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from processor import codec
from processor.codec import FillDecoder
from processor.domain.events import FundOperation, LiquidationFill
from processor.domain.ledger import Ledger
from processor.domain.pools import FundPools, Pool
from processor.domain.state import FundRules
from processor.pipeline import Pipeline
from tests.conftest import EXAMPLES_DIR, SCHEMA_DIR, load_schemas, scaled
from tests.strategies import (
    CURRENCIES,
    FillEvent,
    InputEvent,
    fill_sequences,
    invalid_messages,
    make_operation,
    mixed_sequences,
    operation_bytes,
    pool_lists,
)

SCHEMAS = load_schemas()
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.json"))
DECODER = FillDecoder.from_schema_dir()
REGISTRY: Registry = Registry().with_resources(
    (schema["$id"], Resource.from_contents(schema)) for schema in SCHEMAS.values()
)
FUND_STATE_ID = SCHEMAS["fund_state.v1"]["$id"]
D = Decimal


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(SCHEMAS[name], registry=REGISTRY)


VALIDATORS = {name: validator(name) for name in SCHEMAS}
STATE_FILE = Draft202012Validator({"$ref": f"{FUND_STATE_ID}#/$defs/state_file"}, registry=REGISTRY)


def assert_valid(name: str, document: Any) -> None:
    errors = sorted(VALIDATORS[name].iter_errors(document), key=lambda error: list(error.path))
    assert not errors, f"{name}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors)


def schema_of(example: Path) -> str:
    """``adl_trigger.v1.no_liquidity.json`` -> ``adl_trigger.v1``."""
    name, version, *_ = example.name.split(".")
    return f"{name}.{version}"


def test_the_expected_schemas_exist() -> None:
    assert set(SCHEMAS) >= {
        "liquidation_fill.v1",
        "fund_delta.v1",
        "adl_trigger.v1",
        "dead_letter.v1",
        "fund_state.v1",
        "fund_operation.v1",
    }
    for path in SCHEMA_DIR.glob("*.json"):
        assert SCHEMAS[path.name.removesuffix(".json")]["$id"].endswith(path.name)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_is_a_valid_draft_2020_12_schema(name: str) -> None:
    Draft202012Validator.check_schema(SCHEMAS[name])
    assert SCHEMAS[name]["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_every_schema_has_examples() -> None:
    assert {schema_of(example) for example in EXAMPLES} == set(SCHEMAS)


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.name for example in EXAMPLES])
def test_example_validates_against_the_schema_named_by_its_stem(example: Path) -> None:
    assert_valid(schema_of(example), json.loads(example.read_text()))


FILL_EXAMPLES = [example for example in EXAMPLES if schema_of(example) == "liquidation_fill.v1"]


@pytest.mark.parametrize("example", FILL_EXAMPLES, ids=[example.name for example in FILL_EXAMPLES])
def test_fill_example_decodes_to_a_fill(example: Path) -> None:
    assert isinstance(DECODER.decode(example.read_bytes()), LiquidationFill)


def test_input_decimal_rules_match_the_spec() -> None:
    """SPEC section 2: finite, at most 10^15 in absolute value, at most 18 digits after the point."""
    definitions = SCHEMAS["liquidation_fill.v1"]["$defs"]
    rules = [definition["x-decimal"] for definition in definitions.values() if "x-decimal" in definition]
    assert len(rules) == 2
    for rule in rules:
        assert rule["maxAbs"] == "1000000000000000"
        assert rule["maxPlaces"] == 18
    assert definitions["positive_decimal"]["x-decimal"]["exclusiveMinimum"] == "0"
    assert definitions["non_negative_decimal"]["x-decimal"]["minimum"] == "0"


def test_a_state_file_validates_through_the_defs() -> None:
    seed_state = json.loads((EXAMPLES_DIR / "fund_state.v1.seed.json").read_text())
    assert STATE_FILE.is_valid({"USDT": seed_state})
    assert STATE_FILE.is_valid({})
    assert not STATE_FILE.is_valid({"usdt": seed_state})
    assert not STATE_FILE.is_valid({"USDT": {**seed_state, "balance": 1}})


@pytest.mark.parametrize(
    ("name", "field", "bad"),
    [
        ("fund_delta.v1", "amount", "-0.00000000"),
        ("fund_delta.v1", "amount", "1E-8"),
        ("fund_delta.v1", "amount", 199.5),
        ("fund_delta.v1", "version", 2),
        ("adl_trigger.v1", "deleverage_side", "long"),
        ("fund_state.v1", "balance", "-0.00000000"),
    ],
)
def test_schemas_reject_what_the_contract_forbids(name: str, field: str, bad: object) -> None:
    stem = {
        "fund_delta.v1": "fund_delta.v1.seed",
        "adl_trigger.v1": "adl_trigger.v1.no_liquidity",
        "fund_state.v1": "fund_state.v1.seed",
    }[name]
    document = json.loads((EXAMPLES_DIR / f"{stem}.json").read_text())
    document[field] = bad
    assert not VALIDATORS[name].is_valid(document)


# --- everything the codec writes, over generated multi-currency streams ---------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[bytes], FundRules]:
    """A replay input: valid fills (with re-sends), conflicting re-sends and invalid messages, mixed."""
    events: list[FillEvent] = draw(fill_sequences(extremes=True, max_size=20))
    messages = [event.encode() for event in events]
    for _ in range(draw(st.integers(0, 4))):
        messages.insert(draw(st.integers(0, len(messages))), draw(invalid_messages()).raw)
    if events and draw(st.booleans()):
        conflicting = events[0].document()
        conflicting["timestamp"] = conflicting["timestamp"] + 1
        messages.append(json.dumps(conflicting).encode())
    chosen = draw(st.lists(st.sampled_from(CURRENCIES), unique=True))
    rules = FundRules(
        precision={currency: draw(st.sampled_from([2, 8, 10, 12])) for currency in chosen},
        initial_balance={currency: draw(st.decimals(0, 10_000, places=3)) for currency in chosen},
        floor={currency: draw(st.decimals(0, 500, places=1)) for currency in chosen},
    )
    return messages, rules


@settings(max_examples=scaled(60))
@given(scenarios())
def test_every_output_validates_against_its_schema(scenario: tuple[list[bytes], FundRules]) -> None:
    messages, rules = scenario
    pipeline = Pipeline(DECODER, Ledger(rules), clock_ms=lambda: 1_700_000_000_000)
    for offset, raw in enumerate(messages):
        emitted = pipeline.process(
            raw, b"key" if offset % 2 else None, "liquidation-fills", offset % 3, offset
        )
        if emitted.delta is not None:
            assert_valid("fund_delta.v1", json.loads(emitted.delta))
        if emitted.trigger is not None:
            assert_valid("adl_trigger.v1", json.loads(emitted.trigger))
        if emitted.dead_letter is not None:
            assert_valid("dead_letter.v1", json.loads(emitted.dead_letter))
    for state in pipeline.ledger.funds.values():
        assert_valid("fund_state.v1", codec.state_document(state))
    state_file = json.loads(codec.encode_states(pipeline.ledger.funds.values()))
    errors = list(STATE_FILE.iter_errors(state_file))
    assert not errors, [error.message for error in errors]
    assert all(document["fund"] == fund for fund, document in state_file.items())


def test_outputs_of_the_examples_validate() -> None:
    """A deterministic pass over the fill examples (plus the dead-letter cases), for a readable failure."""
    pipeline = Pipeline(DECODER, Ledger(), clock_ms=lambda: 0)
    messages = [example.read_bytes() for example in sorted(FILL_EXAMPLES)]
    messages += [b"{", b"\xff", b"[]", b'{"version": 2}', messages[0]]
    conflicting: Mapping[str, Any] = {**json.loads(messages[0]), "fill_price": "1"}
    messages.append(json.dumps(conflicting).encode())
    seen = set()
    for offset, raw in enumerate(messages):
        emitted = pipeline.process(raw, None, "replay.jsonl", None, offset + 1)
        for name, value in (
            ("fund_delta.v1", emitted.delta),
            ("adl_trigger.v1", emitted.trigger),
            ("dead_letter.v1", emitted.dead_letter),
        ):
            if value is not None:
                document = json.loads(value)
                assert_valid(name, document)
                seen.add(document.get("error") or name)
    assert seen >= {
        "fund_delta.v1",
        "adl_trigger.v1",
        "invalid_json",
        "invalid_event",
        "unsupported_version",
        "conflicting_duplicate",
    }
    for state in pipeline.ledger.funds.values():
        assert_valid("fund_state.v1", codec.state_document(state))


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (b'{"fill_id": "' + b"x" * 999_000 + b'"}', b"USDT"),
        (b"\xff" * 100_000, None),
        (b"{", b"k" * 5_000),
        (b"{", b"\xfe" * 5_000),
    ],
    ids=["long-text", "long-binary", "long-key", "long-binary-key"],
)
def test_dead_letters_with_cut_copies_validate(value: bytes, key: bytes | None) -> None:
    letter = codec.DeadLetter("invalid_json", "bad", "liquidation-fills", 0, 1, value, key, 1)
    document = json.loads(codec.encode_dead_letter(letter))
    assert {"value_length", "key_length"} & set(document)
    assert_valid("dead_letter.v1", document)


@pytest.mark.parametrize("lone", ["value_length", "value_sha256", "key_length", "key_sha256"])
def test_a_cut_copy_needs_both_its_length_and_its_digest(lone: str) -> None:
    document = json.loads((EXAMPLES_DIR / "dead_letter.v1.truncated.json").read_text())
    assert_valid("dead_letter.v1", document)
    document.pop("value_length"), document.pop("value_sha256")
    document[lone] = 70_000 if lone.endswith("length") else "0" * 64
    assert not VALIDATORS["dead_letter.v1"].is_valid(document)


# --- pools and operations (SPEC sections 7 and 8) ---------------------------------------------------

OPERATION_EXAMPLES = [example for example in EXAMPLES if schema_of(example) == "fund_operation.v1"]
FUND_ID = "^[A-Z0-9]{2,16}([-_][A-Z0-9_-]{1,32})?$"


def test_every_operation_type_has_an_example() -> None:
    kinds = {json.loads(example.read_text())["type"] for example in OPERATION_EXAMPLES}
    assert kinds == {"top_up", "withdrawal"}
    assert any("transfer_id" in json.loads(example.read_text()) for example in OPERATION_EXAMPLES)


@pytest.mark.parametrize("example", OPERATION_EXAMPLES, ids=[example.name for example in OPERATION_EXAMPLES])
def test_operation_example_decodes_to_an_operation(example: Path) -> None:
    operation = DECODER.decode(example.read_bytes())
    assert isinstance(operation, FundOperation), operation
    assert operation.type == json.loads(example.read_text())["type"]


def test_every_fund_field_takes_a_currency_or_a_pool_id() -> None:
    """SPEC section 7: a fund id is a currency or a pool id, in every schema that names a fund."""
    assert SCHEMAS["fund_operation.v1"]["properties"]["fund"]["pattern"] == FUND_ID
    for name in ("fund_delta.v1", "adl_trigger.v1", "fund_state.v1"):
        assert SCHEMAS[name]["properties"]["fund"]["pattern"] == FUND_ID, name
    assert SCHEMAS["fund_state.v1"]["$defs"]["state_file"]["propertyNames"]["pattern"] == FUND_ID
    assert "operation_refused" in SCHEMAS["dead_letter.v1"]["properties"]["error"]["enum"]


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("type", "transfer"),
        ("fund", "usdt"),
        ("fund", "USDT-"),
        ("amount", "0"),  # a string's value is the codec's x-decimal rule, not JSON Schema's
        ("amount", "-1"),
        ("amount", 0),
        ("requested_by", ""),
        ("operation_id", ""),
        ("reason", "x" * 513),
        ("transfer_id", ""),
        ("version", 2),
    ],
)
def test_the_operation_schema_and_the_decoder_reject_what_the_contract_forbids(
    field: str, bad: object
) -> None:
    document = json.loads((EXAMPLES_DIR / "fund_operation.v1.top_up.json").read_text())
    document[field] = bad
    if not (field == "amount" and isinstance(bad, str)):
        assert not VALIDATORS["fund_operation.v1"].is_valid(document)
    assert not isinstance(DECODER.decode(json.dumps(document).encode()), FundOperation)


def test_the_operation_schema_requires_requested_by() -> None:
    document = json.loads((EXAMPLES_DIR / "fund_operation.v1.top_up.json").read_text())
    del document["requested_by"]
    assert not VALIDATORS["fund_operation.v1"].is_valid(document)


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("symbol", "BTCUSDT"),
        ("gross_pnl", "1.00000000"),
        ("shortfall", "-0.00000000"),
        ("amount", "0.00000000"),
        ("amount", "-1.00000000"),  # a top-up adds
    ],
)
def test_the_delta_schema_rejects_what_an_operation_delta_must_not_hold(field: str, bad: object) -> None:
    pipeline = Pipeline(DECODER, Ledger(), clock_ms=lambda: 0)
    emitted = pipeline.process(operation_bytes(), None, "liquidation-fills", 0, 0)
    assert emitted.delta is not None
    document = json.loads(emitted.delta)
    assert_valid("fund_delta.v1", document)
    document[field] = bad
    assert not VALIDATORS["fund_delta.v1"].is_valid(document)


def test_a_fill_delta_may_not_carry_operation_fields() -> None:
    document = json.loads((EXAMPLES_DIR / "fund_delta.v1.seed.json").read_text())
    for field, value in (("operation_id", "x"), ("requested_by", "x"), ("reason", ""), ("transfer_id", "t")):
        assert not VALIDATORS["fund_delta.v1"].is_valid({**document, field: value}), field


@st.composite
def operation_scenarios(draw: st.DrawFn) -> tuple[list[bytes], FundRules]:
    """A replay input with pools: fills, top-ups and withdrawals (some refused), re-sends, conflicts,
    operations on an undefined pool, and invalid messages, mixed."""
    pools = draw(pool_lists())
    funds = [*CURRENCIES, *(pool.fund for pool in pools)]
    events: list[InputEvent] = draw(mixed_sequences(funds=funds, max_size=20))
    messages = [event.encode() for event in events]
    for _ in range(draw(st.integers(0, 3))):
        messages.insert(draw(st.integers(0, len(messages))), draw(invalid_messages()).raw)
    for _ in range(draw(st.integers(0, 3))):
        messages.insert(draw(st.integers(0, len(messages))), draw(st.sampled_from(messages)))
    if draw(st.booleans()):
        messages.append(operation_bytes(operation_id="op-0000", amount="0.5"))  # a conflict, or new
    messages.append(operation_bytes(operation_id="ghost", fund="USDT-GHOST"))
    chosen = draw(st.lists(st.sampled_from(CURRENCIES), unique=True))
    rules = FundRules(
        precision={currency: draw(st.sampled_from([2, 8, 10, 12])) for currency in chosen},
        initial_balance={currency: draw(st.decimals(0, 10_000, places=3)) for currency in chosen},
        floor={currency: draw(st.decimals(0, 500, places=1)) for currency in chosen},
        pools=FundPools(pools),
    )
    return messages, rules


def test_the_operation_scenarios_cover_every_kind_of_output() -> None:
    """A fixed scenario, so the generated one below is known to reach every output it validates."""
    pools = FundPools([Pool("USDT-MEME", "USDT", ("*",), from_timestamp=2)])
    pipeline = Pipeline(DECODER, Ledger(FundRules(pools=pools)), clock_ms=lambda: 0)
    messages = [
        operation_bytes(operation_id="t", fund="USDT-MEME", amount="5"),
        operation_bytes(operation_id="w", fund="USDT-MEME", type="withdrawal", amount="6"),
        operation_bytes(operation_id="t", fund="USDT-MEME", amount="6"),
        operation_bytes(operation_id="g", fund="USDT-GHOST"),
    ]
    errors = [pipeline.process(raw, None, "in", 0, offset).error for offset, raw in enumerate(messages)]
    assert errors == [None, "operation_refused", "conflicting_duplicate", "invalid_event"]


@settings(max_examples=scaled(40))
@given(operation_scenarios())
def test_every_output_with_pools_and_operations_validates(scenario: tuple[list[bytes], FundRules]) -> None:
    messages, rules = scenario
    pipeline = Pipeline(DECODER, Ledger(rules), clock_ms=lambda: 1_700_000_000_000)
    for offset, raw in enumerate(messages):
        emitted = pipeline.process(
            raw, b"key" if offset % 2 else None, "liquidation-fills", offset % 3, offset
        )
        if emitted.delta is not None:
            document = json.loads(emitted.delta)
            assert_valid("fund_delta.v1", document)
        if emitted.trigger is not None:
            assert_valid("adl_trigger.v1", json.loads(emitted.trigger))
        if emitted.dead_letter is not None:
            assert_valid("dead_letter.v1", json.loads(emitted.dead_letter))
    for state in pipeline.ledger.funds.values():
        assert_valid("fund_state.v1", codec.state_document(state))
    state_file = json.loads(codec.encode_states(pipeline.ledger.funds.values()))
    errors = list(STATE_FILE.iter_errors(state_file))
    assert not errors, [error.message for error in errors]


def test_withdrawal_deltas_validate() -> None:
    pipeline = Pipeline(DECODER, Ledger(FundRules(initial_balance={"USDT": D("10")})), clock_ms=lambda: 0)
    emitted = pipeline.process(
        operation_bytes(type="withdrawal", amount="1"), None, "liquidation-fills", 0, 0
    )
    assert emitted.delta is not None
    assert_valid("fund_delta.v1", json.loads(emitted.delta))


def test_operation_refused_dead_letters_and_states_with_operations_validate() -> None:
    pools = FundPools([Pool("USDT-MEME", "USDT", ("MEME*",), D("100"), D("10"))])
    pipeline = Pipeline(DECODER, Ledger(FundRules(pools=pools)), clock_ms=lambda: 0)
    messages = [
        operation_bytes(operation_id="w", fund="USDT-MEME", type="withdrawal", amount="90.00000001"),
        operation_bytes(operation_id="t", fund="USDT-MEME", amount="0.5", transfer_id="tr-1"),
        operation_bytes(operation_id="t2", fund="USDT", amount="7"),
    ]
    letters, deltas = [], []
    for offset, raw in enumerate(messages):
        emitted = pipeline.process(raw, b"USDT", "liquidation-fills", 0, offset)
        letters += [json.loads(emitted.dead_letter)] if emitted.dead_letter is not None else []
        deltas += [json.loads(emitted.delta)] if emitted.delta is not None else []
    assert [letter["error"] for letter in letters] == ["operation_refused"]
    assert_valid("dead_letter.v1", letters[0])
    assert [delta["type"] for delta in deltas] == ["top_up", "top_up"]
    for delta in deltas:
        assert_valid("fund_delta.v1", delta)
    for state in pipeline.ledger.funds.values():
        document = codec.state_document(state)
        assert "operations" in document
        assert_valid("fund_state.v1", document)
    assert STATE_FILE.is_valid(json.loads(codec.encode_states(pipeline.ledger.funds.values())))


def test_the_state_schema_wants_the_operation_totals_together() -> None:
    ledger = Ledger()
    ledger.operate(make_operation(), "USDT")
    document = codec.state_document(ledger.funds["USDT"])
    assert_valid("fund_state.v1", document)
    for field in ("operations", "total_top_ups", "total_withdrawals"):
        assert not VALIDATORS["fund_state.v1"].is_valid({k: v for k, v in document.items() if k != field}), (
            field
        )
    assert not VALIDATORS["fund_state.v1"].is_valid({**document, "operations": 0})
