"""The schemas are valid, their examples conform, and everything the codec writes conforms to them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from processor import codec
from processor.codec import FillDecoder
from processor.domain.events import LiquidationFill
from processor.domain.ledger import Ledger
from processor.domain.state import FundRules
from processor.pipeline import Pipeline
from tests.conftest import EXAMPLES_DIR, SCHEMA_DIR, load_schemas, scaled
from tests.strategies import CURRENCIES, FillEvent, fill_sequences, invalid_messages

SCHEMAS = load_schemas()
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.json"))
DECODER = FillDecoder.from_schema_dir()
REGISTRY: Registry = Registry().with_resources(
    (schema["$id"], Resource.from_contents(schema)) for schema in SCHEMAS.values()
)
FUND_STATE_ID = SCHEMAS["fund_state.v1"]["$id"]


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
