"""What the codec tests share: verdict assertions, messages with raw JSON numbers, the schema examples."""

from __future__ import annotations

import json
import re
from typing import Any

from processor.codec import FillDecoder, Rejection
from processor.domain.events import LiquidationFill
from tests.conftest import EXAMPLES_DIR

DECODER = FillDecoder.from_schema_dir()
STATE_KEYS = [
    "fund",
    "balance",
    "total_surplus",
    "total_paid",
    "total_shortfall",
    "fills",
    "duplicates",
    "adl_triggers",
    "sequence",
    "last_timestamp",
    "by_symbol",
]


def names(detail: str, field: str) -> bool:
    """The detail names ``field`` as a word (so 'quantity' is not found inside 'unfilled_quantity')."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(field)}(?![A-Za-z0-9_])", detail) is not None


def accepted(decoder: FillDecoder, raw: bytes) -> LiquidationFill:
    result = decoder.decode(raw)
    assert isinstance(result, LiquidationFill), result
    return result


def rejected(decoder: FillDecoder, raw: bytes | None, error: str, field: str | None = None) -> Rejection:
    result = decoder.decode(raw)
    assert isinstance(result, Rejection), result
    assert result.error == error, result
    assert result.detail
    if field is not None:
        assert names(result.detail, field), result.detail
    return result


def raw_with(document: dict[str, Any], **numbers: str) -> bytes:
    """Encode ``document`` with some fields set to raw JSON number text (e.g. 1e400) Python cannot hold."""
    for name in numbers:
        document[name] = f"@@{name}@@"
    text = json.dumps(document)
    for name, literal in numbers.items():
        text = text.replace(f'"@@{name}@@"', literal)
    return text.encode()


def example(name: str) -> Any:
    return json.loads((EXAMPLES_DIR / f"{name}.json").read_text())
