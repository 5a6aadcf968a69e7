"""``--jobs`` and ``--partitions``: bad values are argument errors (one ``error:`` line, exit 2),
found before any broker is asked."""

from __future__ import annotations

import pytest

from processor.cli import main
from processor.config import InputError
from processor.stream.replay import parse_partitions


@pytest.fixture(autouse=True)
def no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # nothing listens: must not be needed


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err.splitlines()


@pytest.mark.parametrize("jobs", ["0", "-1", "two", "1.5", "", " 2", "²"])
@pytest.mark.parametrize("command", [["replay", "--topic", "fills"], ["audit"]])
def test_bad_jobs_are_argument_errors(
    command: list[str], jobs: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, f"--jobs={jobs}"]) == 2
    assert error_lines(capsys) == [f"error: --jobs: expected a whole number of processes >= 1, got {jobs!r}"]


@pytest.mark.parametrize("option", [["--jobs", "2"], ["--partitions", "0-3"]])
def test_jobs_and_partitions_need_a_topic(option: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--input", "-", *option]) == 2
    [line] = error_lines(capsys)
    assert line.startswith("error: ") and line.endswith("need --topic")


@pytest.mark.parametrize("text", ["3-1", "a", "1-", "-2", ",", "0:1", "²"])
def test_bad_partitions_are_argument_errors(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--topic", "fills", f"--partitions={text}"]) == 2
    [line] = error_lines(capsys)
    assert line.startswith("error: --partitions: expected PARTITION[-PARTITION][,...], got ")


def test_partitions_are_ranges_and_numbers() -> None:
    assert parse_partitions("4, 0-2,1") == (0, 1, 2, 4)
    assert parse_partitions("7") == (7,)
    with pytest.raises(InputError):
        parse_partitions("")
