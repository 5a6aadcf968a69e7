"""Run ``python -m processor`` as a user would, and check how it fails."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

from testkit.broker import ROOT


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """One command in a subprocess, with the environment plus ``env``; its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "processor", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], code: int, *names: str) -> None:
    """The command exited with ``code`` and its stderr is one ``error:`` line naming each of ``names``."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for name in names:
        assert name in lines[0], lines[0]
