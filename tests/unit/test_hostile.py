"""The hostile stream of ``testkit.hostile``, without a broker: it is deterministic, it holds every kind
of message the issue lists, and the file pipeline gives each message exactly the outcome the stream
says it must (so the integration test and the soak check the worker against true expectations)."""

from __future__ import annotations

import random
from collections import Counter

import orjson
import pytest

from processor.codec import FillDecoder
from processor.domain.ledger import Ledger
from processor.pipeline import Pipeline
from processor.simulate import fills as simulated_fills
from testkit.hostile import (
    BAD_KINDS,
    HUGE_MESSAGE_BYTES,
    MESSAGE,
    Expected,
    Hostile,
    copy_problem,
    dead_letter_problem,
    extreme_fills,
    hostile_messages,
    respelled,
)

BROKER_MESSAGE_LIMIT = 1_048_588  # Kafka's default message.max.bytes
MESSAGES = hostile_messages(1_500, 1_500, seed=11)


def test_the_stream_is_deterministic() -> None:
    assert hostile_messages(300, 300, seed=11) == hostile_messages(300, 300, seed=11)
    assert hostile_messages(300, 300, seed=11) != hostile_messages(300, 300, seed=12)


def test_the_stream_has_the_counts_asked_for_and_every_kind() -> None:
    kinds = Counter(message.kind for message in MESSAGES)
    assert sum(1 for message in MESSAGES if message.expected is not None) == 1_500
    assert sum(count for kind, count in kinds.items() if kind.startswith("valid")) == 1_500
    assert kinds["exact_duplicate"] == 30
    assert set(BAD_KINDS) | {"megabyte"} <= set(kinds)
    assert {"valid", "valid_unkeyed", "valid_respelled", "valid_1mb"} <= set(kinds)
    assert any(message.key is None for message in MESSAGES if message.expected is not None)
    assert any(message.value is None for message in MESSAGES)
    assert any(message.value == b"" for message in MESSAGES)
    huge = [message for message in MESSAGES if len(message.value or b"") > 900_000]
    assert len(huge) >= 4 and any(message.expected is None for message in huge)


def test_every_message_fits_the_broker() -> None:
    assert HUGE_MESSAGE_BYTES + 16 < BROKER_MESSAGE_LIMIT - 1_000  # room for the record's overhead
    for message in [*MESSAGES, *hostile_messages(4_000, 100, seed=5, huge=400)]:
        assert len(message.value or b"") <= HUGE_MESSAGE_BYTES
        assert len(message.value or b"") + len(message.key or b"") <= HUGE_MESSAGE_BYTES + 16
        assert message.key is not None or message.value is not None  # a record needs one of them


def test_the_pipeline_gives_every_message_the_outcome_the_stream_expects() -> None:
    pipeline = Pipeline(FillDecoder.from_schema_dir(), Ledger())
    problems: list[str] = []
    deltas = duplicates = 0
    for offset, message in enumerate(MESSAGES):
        emitted = pipeline.process(message.value, message.key, "fills", 0, offset)
        if emitted.dead_letter is not None:
            problem = dead_letter_problem(orjson.loads(emitted.dead_letter), message, "fills")
        elif message.expected is not None:
            problem = "not dead-lettered"
        elif message.kind.startswith("valid"):
            problem = None if emitted.delta is not None else "valid, but no delta"
            deltas += emitted.delta is not None
        else:
            problem = "an exact duplicate with an output" if emitted.delta is not None else None
            duplicates += 1
        if problem is not None:
            problems.append(f"{message.kind} #{offset}: {problem}")
    assert not problems, problems[:20]
    assert deltas == 1_500
    assert sum(state.duplicates for state in pipeline.ledger.funds.values()) == duplicates


def test_a_respelled_fill_is_the_same_fill() -> None:
    decoder = FillDecoder.from_schema_dir()
    rng = random.Random(1)
    for document in [*extreme_fills(30), *simulated_fills(300, seed=2)]:
        plain = decoder.decode(orjson.dumps(document))
        for _ in range(10):
            assert decoder.decode(respelled(document, rng)) == plain


def test_a_megabyte_message_of_every_shape_is_dead_lettered_as_expected() -> None:
    """Every branch of the 1 MB generator, not just the few a stream happens to draw."""
    messages = [
        message for message in hostile_messages(200, 50, seed=3, huge=60) if message.kind == "megabyte"
    ]
    pipeline = Pipeline(FillDecoder.from_schema_dir(), Ledger())
    fields = set()
    for offset, message in enumerate(messages):
        assert message.expected is not None
        emitted = pipeline.process(message.value, message.key, "fills", 0, offset)
        assert emitted.dead_letter is not None
        assert len(emitted.dead_letter) < 500_000
        assert dead_letter_problem(orjson.loads(emitted.dead_letter), message, "fills") is None
        fields.add(message.expected.field)
    assert MESSAGE in fields and {"fill_id", "quantity"} <= fields


@pytest.mark.parametrize(
    ("letter", "problem"),
    [
        ({"error": "invalid_event", "detail": "field 'fee' is bad", "value": "{"}, "error"),
        ({"error": "invalid_json", "detail": "field 'fee' is bad", "value": "{"}, "does not name"),
        ({"error": "invalid_json", "detail": "message is not JSON", "value": "{}"}, "differs"),
        ({"error": "invalid_json", "detail": "message is not JSON", "value_base64": "ew=="}, "no value"),
    ],
)
def test_the_dead_letter_check_catches_a_wrong_letter(letter: dict[str, object], problem: str) -> None:
    message = Hostile(b"USDT", b"{", Expected("invalid_json", MESSAGE), "truncated")
    found = dead_letter_problem({"source_topic": "fills", "key": "USDT", **letter}, message, "fills")
    assert found is not None and problem in found


def test_the_copy_check_wants_the_length_and_digest_of_a_cut_copy() -> None:
    value = b"x" * 70_000
    letter = {"value": "x" * 65_536, "value_length": 70_000, "value_sha256": "0" * 64}
    assert copy_problem(letter, value, "value") is not None
    assert copy_problem({"value": "x" * 65_536}, value, "value") is not None
    assert copy_problem({"key": None}, None, "key") is None
    assert copy_problem({"key": "USDT"}, None, "key") is not None
