"""Shared fixtures: the decoder built from the real schemas, the schemas themselves, a hypothesis profile."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from processor import native
from processor.codec import FillDecoder

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "schemas"
EXAMPLES_DIR = SCHEMA_DIR / "examples"

# Keep the property and fuzz tests fast enough that the whole unit suite runs in well under a minute;
# raise the budget with HYPOTHESIS_PROFILE=thorough.
settings.register_profile(
    "default", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

_STALE = native.stale_extensions() if os.environ.get("PROCESSOR_PURE") != "1" else []
if _STALE:  # the tests would run the old compiled code, not the source under test
    raise pytest.UsageError(
        f"compiled modules older than their source: {', '.join(_STALE)}; run `make native` "
        "(or PROCESSOR_PURE=1 to test the source interpreted)"
    )


def scaled(examples: int) -> int:
    """An example budget for a test that needs more (or fewer) than the default, scaled with the profile."""
    return max(1, examples * settings.default.max_examples // 100)


def load_schemas() -> dict[str, dict[str, Any]]:
    """Every schema file, keyed by its name without ``.json`` (e.g. ``fund_delta.v1``)."""
    return {
        path.name.removesuffix(".json"): json.loads(path.read_text()) for path in SCHEMA_DIR.glob("*.json")
    }


@pytest.fixture(scope="session")
def decoder() -> FillDecoder:
    return FillDecoder.from_schema_dir()


@pytest.fixture(scope="session")
def schemas() -> Mapping[str, dict[str, Any]]:
    return load_schemas()
