"""A quick version of the cluster soak (``make soak-cluster``, the same code in ``testkit.failover``):
on a 3-node cluster, the broker leading an input partition being processed is SIGKILLed while input
flows and brought back; nothing the committed topics hold may be lost, repeated or different from the
file replay, and the worker must ride the failover out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.cluster import JarCluster, cluster_unavailable, jar_cluster
from testkit.failover import failover_scenario

UNAVAILABLE = cluster_unavailable()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[JarCluster]:
    with jar_cluster(tmp_path / "cluster") as running:
        yield running


def test_killing_the_input_partition_leader_loses_and_repeats_nothing(
    cluster: JarCluster, tmp_path: Path
) -> None:
    tally = failover_scenario(
        cluster, tmp_path / "scenario", "leader", fills=2500, rounds=1, workers=1, seed=16, cycle_guess=15.0
    )
    assert tally.problems == []
    assert (tally.duplicates, tally.losses, tally.mismatches) == (0, 0, 0)
    assert tally.kills == 1
    assert tally.busy_kills == 1  # the kill landed while the worker was processing input
    assert tally.events_checked >= 2500
    assert tally.dlq == 2500 // 97
    assert 0 < tally.longest_output_stall < 60
