"""Hostile input at volume, the quick version (``make soak`` runs the long one, ``python -m soak.hostile``):
1,500 malformed or adversarial messages of every kind, a few of them 1 MB, between 1,500 valid fills.

The worker must stay up; every bad message must have exactly one dead letter with the expected error, a
detail naming the field and a bounded, faithful copy of the message; every good one must be applied, the
deltas, triggers and fund states equal to the file replay of the same messages; memory must stay bounded.
"""

from __future__ import annotations

from pathlib import Path

from testkit.hostile import run_hostile

BAD = GOOD = 1_500


def test_hostile_input_is_dead_lettered_and_valid_fills_flow(kafka_bootstrap: str, tmp_path: Path) -> None:
    result = run_hostile(kafka_bootstrap, tmp_path, BAD, GOOD, seed=20261125)
    print(result.summary())  # shown with -s, and on failure

    assert result.worker_alive and result.worker_healthy, result.summary()
    assert not result.worker_exit_codes
    assert (result.bad_sent, result.good_sent) == (BAD, GOOD)
    assert result.huge_sent >= 4
    assert result.dlq_count == BAD, result.summary()
    assert result.missing_dead_letters == result.extra_dead_letters == 0, result.summary()
    assert result.deltas_count == result.expected_deltas == GOOD, result.summary()
    assert result.triggers_count == result.expected_triggers
    assert not result.mismatches, result.summary()
    assert result.memory_ok, result.summary()
    assert result.ok


def test_hostile_input_across_partitions(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Three partitions: unkeyed and wrongly keyed fills are forwarded to their fund's partition, two
    of them as large as the broker takes."""
    result = run_hostile(kafka_bootstrap, tmp_path, 300, 300, seed=7, partitions=3)
    print(result.summary())
    assert result.ok, result.summary()
