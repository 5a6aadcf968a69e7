"""Golden files: each recorded scenario's outputs must match, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.golden.regenerate import expected_outputs, replay_scenario, scenarios


@pytest.mark.parametrize("scenario", scenarios(), ids=lambda path: path.name)
def test_replay_matches_recorded_outputs(scenario: Path, tmp_path: Path) -> None:
    replay_scenario(scenario, tmp_path)
    for name in expected_outputs(scenario):
        expected = (scenario / "expected" / name).read_bytes()
        assert (tmp_path / name).read_bytes() == expected, f"{scenario.name}/{name} differs; see make golden"
