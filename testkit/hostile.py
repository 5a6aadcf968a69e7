"""Hostile input at volume: malformed and adversarial messages between valid fills, against the real worker.

``hostile_messages`` makes a deterministic (seeded) stream: valid fills from ``processor.simulate``
(some respelled, unkeyed, padded to 1 MB or extreme but valid), exact duplicates of them (not dead
letters: SPEC 3.1), and bad messages of every kind below, each paired with the dead letter it must
produce (error code and the field its detail names). ``run_hostile`` produces the stream to a real
worker and checks that the worker stays up, that every bad message has exactly one dead letter with
the expected error, a detail naming the field and a faithful (bounded) copy of the message, that the
deltas, triggers and fund states equal the file replay of the same messages byte for byte, and that
memory stays bounded.

``tests/integration/test_hostile.py`` runs it briefly; ``make soak`` and its command line run it long:

    python -m soak.hostile --bad 10000 --good 10000      # a broker of its own unless KAFKA_BOOTSTRAP_SERVERS
    python -m soak.hostile --bad 1000 --good 1000 --partitions 3   # forwarding too, and fills at the limit

The kinds of bad message (``BAD_KINDS``, plus ``megabyte``): invalid JSON (truncated, garbage), non-UTF-8
bytes, empty and null values, non-objects, deep nesting (in the message and in a field), huge and tiny
numbers (1e400, 5,000-digit integers, 1e999999999, 5e-324), ~1 MB strings, wrong types, NaN / Infinity
(bare and as strings), negative quantities, unknown versions, missing fields, bad strings, lone
surrogates, a zero quantity, too many places, a field sent twice, and conflicting duplicates (an applied
fill_id with one field changed). About 30% of them have no key, some a binary or long key.

"1 MB" messages are ``HUGE_MESSAGE_BYTES`` = 1,000,000 bytes: within the broker's default
``message.max.bytes`` (1,048,588) with room for the key and the record overhead. The producer's
``max_request_size`` is raised above that so that the broker decides (``AT_LIMIT_MESSAGE_BYTES``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple, cast

import orjson
from aiokafka import AIOKafkaProducer

from processor import codec
from processor.codec import (
    CONFLICTING_DUPLICATE,
    DEAD_LETTER_KEY_LIMIT,
    DEAD_LETTER_VALUE_LIMIT,
    INVALID_EVENT,
    INVALID_JSON,
    UNSUPPORTED_VERSION,
    FillDecoder,
)
from processor.domain.ledger import Ledger
from processor.domain.state import FundRules
from processor.pipeline import Pipeline
from processor.replay import OutputFiles, replay_lines
from processor.simulate import fills as simulated_fills
from processor.stream.partitioning import key_partition
from testkit.broker import create_topics, read_all
from testkit.fields import DECIMAL_FIELDS, REQUIRED_FIELDS
from testkit.reference import by_fund
from testkit.worker import RunningWorker, WorkerConfig

HUGE_MESSAGE_BYTES = 1_000_000
#: A valid fill padded to just under the broker's limit (message.max.bytes 1,048,588 counts the
#: record batch): sent, with several partitions, to a partition that is not its fund's, so that the
#: worker forwards it, and the forwarded record (the same value plus origin headers) must still fit.
AT_LIMIT_MESSAGE_BYTES = 1_048_500
AT_LIMIT_CURRENCY = "ATLIMIT"
#: With several partitions, every fill of this fund is sent to another partition than its own.
FORWARDED_CURRENCY = "USDC"
#: Peak resident memory the worker may reach, whatever the message count.
RSS_CAP_BYTES = 384 * 2**20
#: How much resident memory may grow between the end of the first half and the end of the run.
RSS_GROWTH_LIMIT_BYTES = 64 * 2**20
MESSAGE = "message"  # the "field" of a defect in the message as a whole (not JSON, not an object...)

Say = Callable[[str], None]

POSITIVE_DECIMALS = ("contract_size", "bankruptcy_price", "fill_price")
STRING_FIELDS = ("fill_id", "liquidation_id", "symbol", "margin_currency")
ENUM_FIELDS = ("side", "contract_type")
CONFLICT_FIELDS = (
    "liquidation_id",
    "symbol",
    "side",
    "contract_size",
    "bankruptcy_price",
    "fill_price",
    "quantity",
    "unfilled_quantity",
    "fee",
    "timestamp",
)
EXTREME_CURRENCY = "XTRM"


class Expected(NamedTuple):
    """The dead letter a bad message must produce: its error code and the field its detail names."""

    error: str
    field: str  # ``MESSAGE`` when the message as a whole is at fault


class Hostile(NamedTuple):
    """One message of the stream; ``expected`` is ``None`` for a message that must not be dead-lettered
    (a valid fill, applied once, or an exact duplicate of one, counted and ignored)."""

    key: bytes | None
    value: bytes | None
    expected: Expected | None
    kind: str
    partition: int | None = None  # set only for unkeyed messages when the topic has several partitions


def names_field(detail: str, name: str) -> bool:
    """``detail`` names ``name`` as a word (so 'quantity' is not found inside 'unfilled_quantity')."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", detail) is not None


def _literal(document: dict[str, Any], name: str, text: str) -> bytes:
    """``document`` encoded with ``name`` set to raw JSON text (numbers Python cannot hold, NaN...)."""
    placeholder = f"@@{name}@@"
    encoded = orjson.dumps({**document, name: placeholder})
    return encoded.replace(orjson.dumps(placeholder), text.encode(), 1)


def _padded(document: dict[str, Any], name: str, unit: str, wrap: tuple[str, str] = ("", "")) -> bytes:
    """``document`` with ``name`` set to ``unit`` repeated so that the message is about 1 MB."""
    base = len(_literal(document, name, '""'))
    room = HUGE_MESSAGE_BYTES - base - len(wrap[0]) - len(wrap[1])
    value = wrap[0] + unit * (room // len(unit.encode())) + wrap[1]
    encoded = orjson.dumps({**document, name: value})
    if len(encoded) > HUGE_MESSAGE_BYTES:  # escaped characters take more room: drop the excess
        excess = len(encoded) - HUGE_MESSAGE_BYTES
        value = wrap[0] + unit * (room // len(unit.encode()) - excess) + wrap[1]
        encoded = orjson.dumps({**document, name: value})
    return encoded


def _nested(depth: int, leaf: str = "1", kind: str = "array") -> str:
    if kind == "array":
        return "[" * depth + leaf + "]" * depth
    return '{"a":' * depth + leaf + "}" * depth


class _Stream:
    """Builds the message list; one instance per call of ``hostile_messages``."""

    def __init__(self, seed: int, partitions: int) -> None:
        self.rng = random.Random(seed)
        self.partitions = partitions
        self.sent_good: list[dict[str, Any]] = []  # documents of the valid fills sent so far
        self.serial = 0
        self.template: dict[str, Any] = {}

    # --- keys --------------------------------------------------------------------------------------

    def fund_partition(self, currency: str) -> int | None:
        """Where the fund's fills and duplicates are sent, keyed or not: its own partition, or for
        ``FORWARDED_CURRENCY`` another one (all of them, so that the worker forwards them in order).
        ``None`` (the producer's choice) with a single partition."""
        if self.partitions == 1:
            return None
        home = key_partition(currency.encode(), self.partitions)
        return (home + 1) % self.partitions if currency == FORWARDED_CURRENCY else home

    def any_partition(self) -> int | None:
        return None if self.partitions == 1 else self.rng.randrange(self.partitions)

    def bad_key(self) -> tuple[bytes | None, int | None]:
        roll = self.rng.random()
        currency = str(self.template.get("margin_currency", "USDT"))
        if roll < 0.55:
            return currency.encode(), None
        if roll < 0.85:
            return None, self.any_partition()
        if roll < 0.95:
            return bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 16))), None
        return b"k" * self.rng.choice([DEAD_LETTER_KEY_LIMIT + 1, 10_000, 100_000]), None

    # --- bad messages: (value, expected) ---------------------------------------------------------

    def base(self) -> dict[str, Any]:
        """A valid document with a fill id of its own, so that no defect can pass as a duplicate."""
        self.serial += 1
        return {**self.template, "fill_id": f"H{self.serial:09d}"}

    def truncated(self) -> tuple[bytes | None, Expected]:
        raw = orjson.dumps(self.base())
        return raw[: self.rng.randrange(1, len(raw))], Expected(INVALID_JSON, MESSAGE)

    def garbage(self) -> tuple[bytes | None, Expected]:
        junk = self.rng.choice(
            [
                b"not json",
                b"{'fill_id': 'x'}",
                b"{,}",
                b"}{",
                b"[1,]",
                b'{"a" 1}',
                b"tru",
                b'"unterminated',
                b"\x00",
                b'{"fill_id": "x"}\x00',
                orjson.dumps(self.base()) + b"}",
                orjson.dumps(self.base()) * 2,
                bytes(self.rng.randrange(32, 127) for _ in range(self.rng.randint(1, 200))) + b"{",
            ]
        )
        return junk, Expected(INVALID_JSON, MESSAGE)

    def not_utf8(self) -> tuple[bytes | None, Expected]:
        raw = orjson.dumps(self.base())
        position = raw.index(b'"fill_id":"') + len(b'"fill_id":"') + 1
        bad = self.rng.choice(
            [b"\xff", b"\xc3\x28", b"\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe9"]
        )
        return raw[:position] + bad + raw[position:], Expected(INVALID_JSON, MESSAGE)

    def empty(self) -> tuple[bytes | None, Expected]:
        return self.rng.choice([b"", None, b" ", b"\n", b"\r\n\t "]), Expected(INVALID_JSON, MESSAGE)

    def not_an_object(self) -> tuple[bytes | None, Expected]:
        value = self.rng.choice(
            [b"null", b"[]", b"42", b'"fill"', b"true", b"1e400", orjson.dumps([self.base()])]
        )
        return value, Expected(INVALID_EVENT, MESSAGE)

    def deep_nesting(self) -> tuple[bytes | None, Expected]:
        choice = self.rng.randrange(4)
        if choice == 0:  # beyond any parser: the message as a whole
            depth = self.rng.choice([2_000, 10_000, 100_000])
            kind = self.rng.choice(["array", "object"])
            return _nested(depth, kind=kind).encode(), Expected(INVALID_JSON, MESSAGE)
        if choice == 1:  # unclosed
            return b"[" * self.rng.choice([5_000, 50_000]), Expected(INVALID_JSON, MESSAGE)
        if choice == 2:  # too deep for the parser, inside a field
            name = self.rng.choice(REQUIRED_FIELDS)
            return _literal(self.base(), name, _nested(5_000)), Expected(INVALID_JSON, MESSAGE)
        name = self.rng.choice(REQUIRED_FIELDS)  # parseable, but no field holds a structure
        depth = self.rng.randint(2, 500)
        nested = _nested(depth, kind=self.rng.choice(["array", "object"]))
        return _literal(self.base(), name, nested), Expected(INVALID_EVENT, name)

    def huge_number(self) -> tuple[bytes | None, Expected]:
        roll = self.rng.random()
        if roll < 0.6:
            name = self.rng.choice(DECIMAL_FIELDS)
            text = self.rng.choice(
                [
                    "1e400",
                    "-1e400",
                    "1" + "0" * self.rng.randint(16, 6_000),
                    "1e999999999",
                    '"1e999999999"',
                    "1e16",
                    '"1000000000000001"',
                    "123456789012345678901234567890",
                    '"1e99999999999999999999"',
                ]
            )
        elif roll < 0.9:
            name = "timestamp"
            text = self.rng.choice(
                [
                    "1e5000",
                    "1" * self.rng.randint(20, 6_000),
                    "1e999999999",
                    "9223372036854775808",
                    "18446744073709551616",
                    "-1e400",
                    "1e19",
                ]
            )
        else:
            name = "version"
            text = self.rng.choice(["1e5000", "2" * 5_000, "1e999999999", "-1e400"])
        return _literal(self.base(), name, text), Expected(INVALID_EVENT, name)

    def tiny_number(self) -> tuple[bytes | None, Expected]:
        name = self.rng.choice(DECIMAL_FIELDS)
        texts = ["5e-324", "1e-19", '"1e-19"', '"0.0000000000000000001"', "1.5e-18", '"1e-999999999"']
        if name in POSITIVE_DECIMALS:
            texts += ["1e-400", '"0"', "0", "0.0"]  # below a double's range is 0: not > 0
        return _literal(self.base(), name, self.rng.choice(texts)), Expected(INVALID_EVENT, name)

    def megabyte(self) -> tuple[bytes | None, Expected]:
        """A message of about 1 MB (``HUGE_MESSAGE_BYTES``)."""
        choice = self.rng.randrange(8)
        if choice == 0:  # control characters: a dead letter's JSON escapes each as 6 bytes
            return b"\x01" * HUGE_MESSAGE_BYTES, Expected(INVALID_JSON, MESSAGE)
        if choice == 1:  # not UTF-8: a dead letter carries base64
            return b"\xff" * HUGE_MESSAGE_BYTES, Expected(INVALID_JSON, MESSAGE)
        if choice == 2:  # one JSON string
            return b'"' + b"x" * (HUGE_MESSAGE_BYTES - 2) + b'"', Expected(INVALID_EVENT, MESSAGE)
        if choice == 3:  # 3-byte characters: the dead letter's cut falls inside one
            return _padded(self.base(), "fill_id", "\u20ac"), Expected(INVALID_EVENT, "fill_id")
        if choice == 4:
            name = self.rng.choice(["liquidation_id", "symbol", "margin_currency", "side", "contract_type"])
            unit = self.rng.choice(["x", "U", '"', "\\", "\u00e9"])
            return _padded(self.base(), name, unit), Expected(INVALID_EVENT, name)
        if choice == 5:
            return _padded(self.base(), "quantity", "1"), Expected(INVALID_EVENT, "quantity")
        if choice == 6:
            name = self.rng.choice(["fee", "fill_price"])
            return _padded(self.base(), name, "0", ("0.", "1")), Expected(INVALID_EVENT, name)
        return b"[" + b"1," * ((HUGE_MESSAGE_BYTES - 3) // 2) + b"1]", Expected(INVALID_EVENT, MESSAGE)

    def wrong_type(self) -> tuple[bytes | None, Expected]:
        name = self.rng.choice([*REQUIRED_FIELDS, "contract_type", "contract_size", "fee", "version"])
        value: Any
        if name in STRING_FIELDS:
            value = self.rng.choice([123, 1.5, True, False, [], {}, ["x"], {"a": 1}])
        elif name in ENUM_FIELDS:
            value = self.rng.choice([1, True, [], {}, "LONG", "", ["long"]])
        elif name in DECIMAL_FIELDS:
            value = self.rng.choice([True, False, [], {}, ["1"], {"v": "1"}, "abc", "", " 1", "1_000"])
        elif name == "timestamp":
            value = self.rng.choice(["1700000000000", True, [1], {}, 1.5, "now"])
        else:  # version
            value = self.rng.choice(["1", "2", "", [1], {"v": 1}, 1.5])
        if name in REQUIRED_FIELDS and self.rng.random() < 0.15:
            value = None  # null where a value is required
        return orjson.dumps({**self.base(), name: value}), Expected(INVALID_EVENT, name)

    def nan_infinity(self) -> tuple[bytes | None, Expected]:
        name = self.rng.choice([*DECIMAL_FIELDS, "timestamp"])
        if self.rng.random() < 0.5:  # not JSON at all, but the detail still names the field
            literal = self.rng.choice(["NaN", "Infinity", "-Infinity"])
            return _literal(self.base(), name, literal), Expected(INVALID_JSON, name)
        text = self.rng.choice(["NaN", "Infinity", "-Infinity", "inf", "nan", "sNaN", "-NaN", "+Infinity"])
        return orjson.dumps({**self.base(), name: text}), Expected(INVALID_EVENT, name)

    def negative(self) -> tuple[bytes | None, Expected]:
        name = self.rng.choice(DECIMAL_FIELDS)
        value = self.rng.choice(["-1", "-0.00000001", -5, -0.5, "-1e3", "-1000000000000000"])
        return orjson.dumps({**self.base(), name: value}), Expected(INVALID_EVENT, name)

    def unknown_version(self) -> tuple[bytes | None, Expected]:
        if self.rng.random() < 0.7:
            version = self.rng.choice([0, 2, 3, 99, -1, 2.0, 2**31, 2**63 - 1])
            document = {**self.base(), "version": version}
            if self.rng.random() < 0.3:  # the version is judged first
                document["quantity"] = "NaN"
            return orjson.dumps(document), Expected(UNSUPPORTED_VERSION, "version")
        value = self.rng.choice(["1", "2", "", [1], {"v": 1}, 1.5])
        return orjson.dumps({**self.base(), "version": value}), Expected(INVALID_EVENT, "version")

    def missing(self) -> tuple[bytes | None, Expected]:
        name = self.rng.choice(REQUIRED_FIELDS)
        document = self.base()
        del document[name]
        return orjson.dumps(document), Expected(INVALID_EVENT, name)

    def bad_string(self) -> tuple[bytes | None, Expected]:
        name = self.rng.choice(STRING_FIELDS)
        if name == "margin_currency":
            value = self.rng.choice(["usdt", "U", "A" * 17, "USDT\n", "US-DT", "", " USDT", "\u00dcSDT"])
        else:
            limit = 64 if name == "symbol" else 128
            value = self.rng.choice(["", "x" * (limit + 1)])
        return orjson.dumps({**self.base(), name: value}), Expected(INVALID_EVENT, name)

    def lone_surrogate(self) -> tuple[bytes | None, Expected]:
        name = self.rng.choice([*STRING_FIELDS, *ENUM_FIELDS, *DECIMAL_FIELDS])
        text = self.rng.choice(['"\\ud800"', '"x\\udfff"', '"\\ud83d"'])
        return _literal(self.base(), name, text), Expected(INVALID_EVENT, name)

    def zero_quantity(self) -> tuple[bytes | None, Expected]:
        document = {**self.base(), "quantity": self.rng.choice(["0", 0, "0.000", "-0", "0e5"])}
        document["unfilled_quantity"] = self.rng.choice(["0", 0, None])
        return orjson.dumps(document), Expected(INVALID_EVENT, "quantity")

    def too_many_places(self) -> tuple[bytes | None, Expected]:
        name = self.rng.choice(DECIMAL_FIELDS)
        text = self.rng.choice(["1.0000000000000000001", "0.1234567890123456789", "1.000000000000000000000"])
        return orjson.dumps({**self.base(), name: text}), Expected(INVALID_EVENT, name)

    def duplicate_key(self) -> tuple[bytes | None, Expected]:
        """A field sent twice, the second time invalid: JSON parsers keep the last one."""
        name = self.rng.choice([*DECIMAL_FIELDS, *STRING_FIELDS])
        bad = '"-1"' if name in DECIMAL_FIELDS else "123"
        raw = orjson.dumps(self.base())
        return raw[:-1] + f',"{name}":{bad}}}'.encode(), Expected(INVALID_EVENT, name)

    def conflicting_duplicate(self) -> tuple[bytes | None, Expected]:
        """A fill already applied, re-sent with one field changed (but the same fund)."""
        original = self.rng.choice(self.sent_good)
        name = self.rng.choice(CONFLICT_FIELDS)
        value = original.get(name)
        changed: Any
        if name == "side":
            changed = "short" if value == "long" else "long"
        elif name == "timestamp":
            changed = int(str(value)) + 1
        elif name in ("liquidation_id", "symbol"):
            changed = f"{value}X"
        elif name == "fee":
            changed = str(Decimal(value or "0") + Decimal("0.00000001"))
        elif name in ("quantity", "unfilled_quantity"):
            changed = str(Decimal(value or "0") + 1)
        else:
            changed = str(Decimal(value or "1") * 2)
        return orjson.dumps({**original, name: changed}), Expected(CONFLICTING_DUPLICATE, name)

    # --- messages that must not be dead-lettered --------------------------------------------------

    def good(self, document: dict[str, Any], kind: str) -> Hostile:
        """A valid fill; ``kind`` says how it is sent."""
        self.sent_good.append(document)
        currency = str(document["margin_currency"])
        key, partition = currency.encode(), self.fund_partition(currency)
        if kind == "huge":
            return Hostile(key, _padded(document, "padding", "x"), None, "valid_1mb", partition)
        if kind == "respelled":
            return Hostile(key, self.respelled(document), None, "valid_respelled", partition)
        if kind == "unkeyed":
            return Hostile(None, orjson.dumps(document), None, "valid_unkeyed", partition)
        return Hostile(key, orjson.dumps(document), None, "valid", partition)

    def respelled(self, document: dict[str, Any]) -> bytes:
        return respelled(document, self.rng)

    def exact_duplicate(self) -> Hostile:
        """A fill already applied, sent again (the same bytes, or the same values respelled)."""
        original = self.rng.choice(self.sent_good)
        currency = str(original["margin_currency"])
        value = orjson.dumps(original) if self.rng.random() < 0.5 else self.respelled(original)
        key = None if self.rng.random() < 0.3 else currency.encode()
        return Hostile(key, value, None, "exact_duplicate", self.fund_partition(currency))


def respelled(document: dict[str, Any], rng: random.Random) -> bytes:
    """The same fill spelled otherwise: numbers, exponents, defaults left out or null, unknown
    fields (one beyond a double, one nested 50 deep), another field order."""
    out: dict[str, Any] = dict(document)
    for name in DECIMAL_FIELDS:
        text = out.get(name)
        if not isinstance(text, str):
            continue
        roll = rng.random()
        if roll < 0.3 and Decimal(repr(float(text))) == Decimal(text):
            out[name] = float(text) if "." in text or "e" in text.lower() else int(text)
        elif roll < 0.5:
            out[name] = format(Decimal(text), "E")
        elif roll < 0.6 and "e" not in text.lower() and _places(text) + 3 <= 18:
            out[name] = text + ("" if "." in text else ".") + "000"
    if out.get("unfilled_quantity") in ("0", 0) and rng.random() < 0.5:
        out["unfilled_quantity"] = None
    if out.get("contract_type") == "linear" and rng.random() < 0.5:
        del out["contract_type"]
    out["version"] = rng.choice([1, 1.0, None])
    out["trace"] = {"note": "\u00fcn\u00efc\u00f6d\u00e9 \u2713", "deep": orjson.loads(_nested(50))}
    names = list(out)
    rng.shuffle(names)
    ordered = {name: out[name] for name in names}
    if rng.random() < 0.3:
        return _literal(ordered, "beyond_a_double", "1e400")
    return orjson.dumps(ordered)


def _places(text: str) -> int:
    exponent = Decimal(text).as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def extreme_fills(count: int) -> Iterator[dict[str, Any]]:
    """Valid fills at the edges of SPEC 2 (10^15 contracts of 10^15, prices of 10^-18, 18 places),
    in a fund of their own."""
    for number in range(count):
        yield {
            "fill_id": f"XTRM{number:08d}",
            "liquidation_id": f"XTRM-L{number // 2:08d}",
            "symbol": "XTRMUSD",
            "margin_currency": EXTREME_CURRENCY,
            "side": "long" if number % 3 else "short",
            "contract_type": "inverse" if number % 2 else "linear",
            "contract_size": "1000000000000000" if number % 4 else "0.000000000000000001",
            "bankruptcy_price": "0.000000000000000001"
            if number % 2
            else "999999999999999.999999999999999999",
            "fill_price": "1000000000000000" if number % 3 else "0.000000000000000001",
            "quantity": "1000000000000000" if number % 5 else "0",
            "unfilled_quantity": "0" if number % 5 else "123456789.123456789012345678",
            "fee": "0.000000000000000001",
            "timestamp": 1_700_000_000_000 + number,
            "version": 1,
        }


BAD_KINDS = (
    "truncated",
    "garbage",
    "not_utf8",
    "empty",
    "not_an_object",
    "deep_nesting",
    "huge_number",
    "tiny_number",
    "wrong_type",
    "nan_infinity",
    "negative",
    "unknown_version",
    "missing",
    "bad_string",
    "lone_surrogate",
    "zero_quantity",
    "too_many_places",
    "duplicate_key",
    "conflicting_duplicate",
)


def default_huge(bad: int, good: int) -> int:
    """How many 1 MB messages a run of this size sends: at least 4, about one in 500."""
    return max(4, (bad + good) // 500)


def hostile_messages(
    bad: int,
    good: int,
    seed: int,
    *,
    huge: int | None = None,
    duplicates: int | None = None,
    partitions: int = 1,
) -> list[Hostile]:
    """``bad`` messages that must be dead-lettered (``huge`` of them and of the valid fills about
    1 MB), ``good`` valid fills and ``duplicates`` exact duplicates, interleaved at random (seeded)."""
    stream = _Stream(seed, partitions)
    huge = default_huge(bad, good) if huge is None else huge
    duplicates = max(1, good // 50) if duplicates is None else duplicates
    huge_bad = min(bad, huge - huge // 3)
    huge_good = min(good, huge - huge_bad)
    extremes = min(good, max(3, good // 300))
    documents = _interleave(
        list(simulated_fills(good - extremes, seed)), list(extreme_fills(extremes)), stream.rng
    )
    stream.template = dict(documents[0]) if documents else dict(next(simulated_fills(1, seed)))

    slots = ["good"] * good + ["bad"] * (bad - huge_bad) + ["huge_bad"] * huge_bad + ["dup"] * duplicates
    stream.rng.shuffle(slots)
    good_kinds = ["huge"] * huge_good
    good_kinds += ["respelled"] * (good // 10) + ["unkeyed"] * (good // 10)
    good_kinds += ["plain"] * (good - len(good_kinds))
    stream.rng.shuffle(good_kinds)

    messages: list[Hostile] = []
    late: list[str] = []  # duplicates drawn before any fill was sent
    fills = iter(zip(documents, good_kinds, strict=False))
    for slot in slots:
        if slot == "good":
            document, kind = next(fills)
            stream.template = {**document}
            messages.append(stream.good(document, kind))
            continue
        if slot == "dup":
            if stream.sent_good:
                messages.append(stream.exact_duplicate())
            else:
                late.append(slot)
            continue
        kind = "megabyte" if slot == "huge_bad" else stream.rng.choice(BAD_KINDS)
        while kind == "conflicting_duplicate" and not stream.sent_good:
            kind = stream.rng.choice(BAD_KINDS)
        value, expected = getattr(stream, kind)()
        key, partition = stream.bad_key()
        if kind == "conflicting_duplicate" and partitions > 1:
            # on its fund's partition, whatever its key, behind the fill it conflicts with (a
            # forwarded copy could overtake that fill)
            partition = stream.fund_partition(str(orjson.loads(value or b"{}")["margin_currency"]))
        too_large = len(value or b"") + len(key or b"") > HUGE_MESSAGE_BYTES  # for the broker
        if too_large or (value is None and key is None):  # a record needs a key or a value
            key, partition = str(stream.template["margin_currency"]).encode(), None
        messages.append(Hostile(key, value, expected, kind, partition))
    for _ in late:
        if stream.sent_good:
            messages.append(stream.exact_duplicate())
    if partitions > 1:
        _insert_at_limit_fills(messages, stream.rng, partitions)
    return messages


def _insert_at_limit_fills(messages: list[Hostile], rng: random.Random, partitions: int) -> None:
    """Two valid fills of a fund of their own, each as large as the broker takes, on a partition
    that is not the fund's (forwarded by the worker), placed at random."""
    home = key_partition(AT_LIMIT_CURRENCY.encode(), partitions)
    fills = []
    for number in range(2):
        document = {
            "fill_id": f"ATLIMIT{number:08d}",
            "liquidation_id": "ATLIMIT-L",
            "symbol": "ATLIMITUSD",
            "margin_currency": AT_LIMIT_CURRENCY,
            "side": "long",
            "bankruptcy_price": "100",
            "fill_price": "101",
            "quantity": "1",
            "timestamp": 1_700_000_000_000 + number,
            "padding": "",
        }
        document["padding"] = "x" * (AT_LIMIT_MESSAGE_BYTES - len(orjson.dumps(document)))
        fills.append(Hostile(None, orjson.dumps(document), None, "valid_at_limit", (home + 1) % partitions))
    places = sorted(rng.randrange(len(messages) + 1) for _ in fills)
    for place, fill in zip(reversed(places), reversed(fills), strict=True):
        messages.insert(place, fill)


def _interleave(
    ordinary: list[dict[str, Any]], extra: list[dict[str, Any]], rng: random.Random
) -> list[dict[str, Any]]:
    """Spread ``extra`` over ``ordinary`` at random places, each list keeping its order."""
    places = sorted(rng.randrange(len(ordinary) + 1) for _ in extra)
    merged: list[dict[str, Any]] = []
    start = 0
    for place, document in zip(places, extra, strict=True):
        merged.extend(ordinary[start:place])
        merged.append(document)
        start = place
    merged.extend(ordinary[start:])
    return merged


# --- checking dead letters ------------------------------------------------------------------------


def copy_problem(letter: dict[str, Any], original: bytes | None, name: str) -> str | None:
    """Why the dead letter's copy of the message's ``name`` ("value" or "key") is not a faithful,
    bounded copy of ``original``; ``None`` when it is."""
    limit = DEAD_LETTER_VALUE_LIMIT if name == "value" else DEAD_LETTER_KEY_LIMIT
    if name == "key" and original is None:
        return None if letter.get("key") is None else "a key where the message had none"
    raw = original if original is not None else b""
    try:
        raw.decode("utf-8")
        is_text = True
    except UnicodeDecodeError:
        is_text = False
    if name == "value":
        text = letter.get("value") if is_text else letter.get("value_base64")
    else:
        text = letter.get("key")
    if not isinstance(text, str):
        return f"no {name} copy ({'text' if is_text else 'base64'} expected)"
    try:
        copy = text.encode("utf-8") if is_text else base64.b64decode(text, validate=True)
    except (UnicodeEncodeError, binascii.Error) as error:
        return f"{name} copy unreadable: {error}"
    length, digest = letter.get(f"{name}_length"), letter.get(f"{name}_sha256")
    if len(raw) <= limit:
        if copy != raw:
            return f"{name} copy differs from the message"
        if length is not None or digest is not None:
            return f"{name}_length/{name}_sha256 on a copy that was not cut"
        return None
    if length != len(raw) or digest != hashlib.sha256(raw).hexdigest():
        return f"{name}_length/{name}_sha256 do not describe the message ({length}, {digest})"
    if not raw.startswith(copy) or not limit - 4 < len(copy) <= limit:
        return f"{name} copy is not the first {limit} bytes of the message ({len(copy)} bytes)"
    return None


def dead_letter_problem(letter: dict[str, Any], message: Hostile, topic: str) -> str | None:
    """Why ``letter`` is not the dead letter ``message`` must produce; ``None`` when it is."""
    expected = message.expected
    if expected is None:
        return f"dead-lettered ({letter.get('error')}: {str(letter.get('detail'))[:120]})"
    detail = str(letter.get("detail", ""))
    if letter.get("error") != expected.error:
        return f"error {letter.get('error')!r}, expected {expected.error!r} ({detail[:160]})"
    if not names_field(detail, expected.field):
        return f"detail does not name {expected.field!r}: {detail[:160]}"
    if letter.get("source_topic") != topic:
        return f"source_topic {letter.get('source_topic')!r}"
    return copy_problem(letter, message.value, "value") or copy_problem(letter, message.key, "key")


# --- the scenario ---------------------------------------------------------------------------------


def read_rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in bytes; (0, 0) once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    values = {}
    for line in status.splitlines():
        label, _, rest = line.partition(":")
        if label in ("VmRSS", "VmHWM"):
            values[label] = int(rest.split()[0]) * 1024
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


class _RssSampler(threading.Thread):
    """Sample a process's resident memory every ``interval`` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss, high_water = read_rss(self.pid)
            self.peak = max(self.peak, rss, high_water)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


@dataclass
class HostileResult:
    """What one hostile run sent, found and measured; ``ok`` when nothing is wrong."""

    bad_sent: int = 0
    good_sent: int = 0
    duplicates_sent: int = 0
    huge_sent: int = 0
    bytes_sent: int = 0
    dlq_count: int = 0
    deltas_count: int = 0
    triggers_count: int = 0
    expected_deltas: int = 0
    expected_triggers: int = 0
    missing_dead_letters: int = 0
    extra_dead_letters: int = 0
    mismatches: list[str] = field(default_factory=list)
    worker_alive: bool = False
    worker_healthy: bool = False
    worker_exit_codes: list[int] = field(default_factory=list)
    rss_start_bytes: int = 0
    rss_half_bytes: int = 0
    rss_end_bytes: int = 0
    peak_rss_bytes: int = 0
    rss_cap_bytes: int = RSS_CAP_BYTES
    rss_growth_limit_bytes: int = RSS_GROWTH_LIMIT_BYTES
    seconds: float = 0.0
    kinds: dict[str, int] = field(default_factory=dict)
    worker_log_tail: str = ""  # the end of the worker's log, when it exited

    @property
    def memory_ok(self) -> bool:
        return (
            0 < self.peak_rss_bytes <= self.rss_cap_bytes
            and self.rss_end_bytes - self.rss_half_bytes <= self.rss_growth_limit_bytes
        )

    @property
    def ok(self) -> bool:
        return (
            self.worker_alive
            and self.worker_healthy
            and not self.worker_exit_codes
            and not self.mismatches
            and not self.missing_dead_letters
            and not self.extra_dead_letters
            and self.dlq_count == self.bad_sent
            and self.deltas_count == self.expected_deltas
            and self.memory_ok
        )

    def summary(self) -> str:
        mib = 2**20
        lines = [
            f"sent: {self.bad_sent} bad, {self.good_sent} good, {self.duplicates_sent} exact duplicates, "
            f"{self.huge_sent} of ~1 MB, {self.bytes_sent / mib:.1f} MiB in {self.seconds:.1f} s",
            f"dead letters: {self.dlq_count} (missing {self.missing_dead_letters}, "
            f"extra {self.extra_dead_letters})",
            f"deltas: {self.deltas_count} of {self.expected_deltas}, "
            f"triggers: {self.triggers_count} of {self.expected_triggers}",
            f"worker: {'alive' if self.worker_alive else 'DEAD'}, "
            f"{'healthy' if self.worker_healthy else 'NOT healthy'}, exit codes {self.worker_exit_codes}",
            f"worker RSS: start {self.rss_start_bytes / mib:.0f} MiB, "
            f"half {self.rss_half_bytes / mib:.0f} MiB, end {self.rss_end_bytes / mib:.0f} MiB, "
            f"peak {self.peak_rss_bytes / mib:.0f} MiB (cap {self.rss_cap_bytes / mib:.0f} MiB, "
            f"growth limit {self.rss_growth_limit_bytes / mib:.0f} MiB)",
            f"mismatches: {len(self.mismatches)}",
            *(f"  {mismatch}" for mismatch in self.mismatches[:20]),
            *([f"the worker's log ends:\n{self.worker_log_tail}"] if self.worker_log_tail else []),
            f"result: {'ok' if self.ok else 'FAILED'}",
        ]
        return "\n".join(lines)


async def _produce(bootstrap: str, topic: str, messages: Sequence[Hostile]) -> list[tuple[int, int]]:
    """Send ``messages`` in order through one idempotent producer; their (partition, offset)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_request_size=2**21,  # the broker decides: its message.max.bytes (1,048,588) is the limit
        request_timeout_ms=60_000,
    )
    await producer.start()
    try:
        pending = []
        for message in messages:
            pending.append(
                await producer.send(topic, value=message.value, key=message.key, partition=message.partition)
            )
        delivered = await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return [(record.partition, record.offset) for record in delivered]


def _wait_processed(worker: RunningWorker, messages: int, timeout: float) -> None:
    """Wait until the worker has taken in ``messages`` input messages (and their forwarded copies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            return
        try:
            events = worker.metric("insurance_fund_events_total")
            forwarded = worker.metric("insurance_fund_forwarded_total")
        except (OSError, AssertionError):
            events = forwarded = -1.0
        if events - forwarded >= messages and events >= messages + forwarded:
            return
        time.sleep(0.2)


def _replay(
    messages: Sequence[Hostile], rules: FundRules, scratch: Path
) -> tuple[list[bytes], list[bytes], dict[str, Any]]:
    """The file replay (``replay --input``'s code path) of the same messages: deltas, triggers, states."""
    pipeline = Pipeline(FillDecoder.from_schema_dir(), Ledger(rules))
    outputs = OutputFiles(
        state=scratch / "replay-state.json",
        deltas=scratch / "replay-deltas.jsonl",
        adl=scratch / "replay-adl.jsonl",
    )
    values = cast(Iterable[bytes], (message.value for message in messages))  # a null value included
    replay_lines(values, pipeline, outputs, "hostile")
    assert outputs.deltas is not None and outputs.adl is not None and outputs.state is not None
    deltas = outputs.deltas.read_bytes().splitlines()
    triggers = outputs.adl.read_bytes().splitlines()
    states = orjson.loads(outputs.state.read_bytes())
    return deltas, triggers, states


def _quiet(_: str) -> None:
    pass


def run_hostile(
    bootstrap: str,
    scratch: Path,
    bad: int,
    good: int,
    seed: int,
    *,
    huge: int | None = None,
    duplicates: int | None = None,
    partitions: int = 1,
    say: Say = _quiet,
) -> HostileResult:
    """Start the worker, send the hostile stream in two halves, and check everything; see the module
    docstring. The worker is left stopped."""
    started = time.monotonic()
    scratch.mkdir(parents=True, exist_ok=True)
    messages = hostile_messages(bad, good, seed, huge=huge, duplicates=duplicates, partitions=partitions)
    result = HostileResult(
        bad_sent=sum(1 for message in messages if message.expected is not None),
        good_sent=sum(1 for message in messages if message.kind.startswith("valid")),
        duplicates_sent=sum(1 for message in messages if message.kind == "exact_duplicate"),
        huge_sent=sum(1 for message in messages if len(message.value or b"") > HUGE_MESSAGE_BYTES * 9 // 10),
        bytes_sent=sum(len(message.value or b"") + len(message.key or b"") for message in messages),
        kinds=dict(sorted(Counter(message.kind for message in messages).items())),
    )
    say(f"{len(messages)} messages, {result.bytes_sent / 2**20:.1f} MiB; replaying them from memory")
    deltas_expected, triggers_expected, states_expected = _replay(messages, FundRules(), scratch)
    result.expected_deltas, result.expected_triggers = len(deltas_expected), len(triggers_expected)

    config = WorkerConfig(bootstrap=bootstrap, scratch=scratch, partitions=partitions)
    asyncio.run(create_topics(bootstrap, [config.input_topic], partitions))
    worker = RunningWorker(config, "hostile")
    sampler = _RssSampler(worker.process.pid)
    sampler.start()
    try:
        worker.wait_healthy(120)
        result.rss_start_bytes = read_rss(worker.process.pid)[0]
        half = len(messages) // 2
        say(f"worker up (RSS {result.rss_start_bytes / 2**20:.0f} MiB); producing the first half")
        coordinates = asyncio.run(_produce(bootstrap, config.input_topic, messages[:half]))
        _wait_processed(worker, half, timeout=300)
        result.rss_half_bytes = read_rss(worker.process.pid)[0]
        say(f"first half taken in (RSS {result.rss_half_bytes / 2**20:.0f} MiB); producing the second half")
        coordinates += asyncio.run(_produce(bootstrap, config.input_topic, messages[half:]))
        _wait_processed(worker, len(messages), timeout=300)
        result.rss_end_bytes = read_rss(worker.process.pid)[0]
        say(f"all taken in (RSS {result.rss_end_bytes / 2**20:.0f} MiB); reading the outputs")

        alive = worker.process.poll() is None  # a dead worker produces no more: read what is there

        def values(topic: str, expected: int) -> list[bytes]:
            records = asyncio.run(read_all(bootstrap, topic, expected if alive else None))
            return [value or b"" for _, value, _ in records]

        letters = values(config.dlq_topic, result.bad_sent)
        deltas = values(config.deltas_topic, result.expected_deltas)
        triggers = values(config.adl_topic, result.expected_triggers)
        result.worker_alive = worker.process.poll() is None
        if result.worker_alive:
            try:
                result.worker_healthy = worker.get("/health")[0] == 200
                funds = worker.funds() if result.worker_healthy else {}
            except OSError:
                funds = {}
            if funds != states_expected:
                differing = sorted(
                    fund
                    for fund in funds.keys() | states_expected.keys()
                    if funds.get(fund) != states_expected.get(fund)
                )
                result.mismatches.append(f"GET /funds differs from the replay for {', '.join(differing)}")
    finally:
        sampler.stop()
        result.peak_rss_bytes = max(sampler.peak, read_rss(worker.process.pid)[1])
        if worker.process.poll() is not None and worker.process.returncode is not None:
            result.worker_exit_codes.append(worker.process.returncode)
        worker.stop()

    result.dlq_count, result.deltas_count, result.triggers_count = len(letters), len(deltas), len(triggers)
    _check_dead_letters(result, messages, coordinates, letters, config.input_topic)
    if by_fund(deltas) != by_fund(deltas_expected):
        result.mismatches.append(_first_ledger_difference(deltas, deltas_expected))
    if sorted(triggers) != sorted(triggers_expected):
        result.mismatches.append(
            f"triggers differ from the replay ({len(triggers)} vs {len(triggers_expected)})"
        )
    if not result.memory_ok:
        result.mismatches.append("memory not bounded: " + result.summary().splitlines()[4])
    if result.worker_exit_codes:
        result.worker_log_tail = worker.log_path.read_text(errors="replace")[-1500:]
        result.mismatches.insert(0, f"the worker exited with {result.worker_exit_codes}")
    result.seconds = time.monotonic() - started
    return result


def _check_dead_letters(
    result: HostileResult,
    messages: Sequence[Hostile],
    coordinates: Sequence[tuple[int, int]],
    letters: Sequence[bytes],
    topic: str,
) -> None:
    """Match every dead letter to the message at its source partition and offset."""
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # no stubs pinned

    schema = orjson.loads((codec.SCHEMA_DIR / "dead_letter.v1.json").read_bytes())
    validator = Draft202012Validator(schema)
    at = {coordinate: message for coordinate, message in zip(coordinates, messages, strict=True)}
    seen: Counter[tuple[int, int]] = Counter()
    for value in letters:
        letter = orjson.loads(value or b"{}")
        errors = [error.message[:120] for error in validator.iter_errors(letter)]
        if errors:
            result.mismatches.append(f"dead letter not valid by its schema: {errors[0]}")
        coordinate = (letter.get("source_partition"), letter.get("source_offset"))
        message = at.get(cast(tuple[int, int], coordinate))
        seen[cast(tuple[int, int], coordinate)] += 1
        if message is None:
            result.extra_dead_letters += 1
            result.mismatches.append(f"dead letter for no message sent: {coordinate}")
            continue
        if seen[cast(tuple[int, int], coordinate)] > 1:
            result.extra_dead_letters += 1
            result.mismatches.append(f"second dead letter for offset {coordinate} ({message.kind})")
            continue
        problem = dead_letter_problem(letter, message, topic)
        if problem is not None:
            if message.expected is None:
                result.extra_dead_letters += 1
            result.mismatches.append(f"{message.kind} at {coordinate}: {problem}")
    for coordinate, message in zip(coordinates, messages, strict=True):
        if message.expected is not None and not seen[coordinate]:
            result.missing_dead_letters += 1
            if result.missing_dead_letters <= 20:
                result.mismatches.append(f"{message.kind} at {coordinate}: no dead letter")


def _first_ledger_difference(got: list[bytes], want: list[bytes]) -> str:
    got_by_fund, want_by_fund = by_fund(got), by_fund(want)
    for fund in sorted(got_by_fund.keys() | want_by_fund.keys()):
        mine, theirs = got_by_fund.get(fund, []), want_by_fund.get(fund, [])
        for position, (one, other) in enumerate(zip(mine, theirs, strict=False)):
            if one != other:
                return (
                    f"deltas of {fund} differ from the replay at #{position + 1}: "
                    f"{one[:200]!r} vs {other[:200]!r}"
                )
        if len(mine) != len(theirs):
            return f"deltas of {fund}: {len(mine)} on the topic, {len(theirs)} in the replay"
    return "deltas differ from the replay"
