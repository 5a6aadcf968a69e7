"""Log set-up: the text format as it was, JSON lines that always parse, SASL bytes redacted in both."""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.protocol.admin import (
    SaslAuthenticateRequest,
    SaslAuthenticateRequest_v1,
    SaslAuthenticateResponse_v1,
)

from processor import codec
from processor.logs import EXTRA_FIELDS, TEXT_FORMAT, configure_logging
from processor.stream.kafka import redact_sasl_exchange_in_logs

SASL_PASSWORD = "sasl-pa55word-do-not-print"
ISO_UTC_MILLISECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
TEXT_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>\S+): (?P<message>.*)"
)

log = logging.getLogger("processor.test_logs")


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    """``configure_logging`` changes the root logger; put back what pytest had."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    logging.captureWarnings(False)


def capture(log_format: str, level: str = "debug") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level, log_format, stream)
    return stream


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    documents = [codec.loads(line) for line in text.splitlines()]
    assert all(isinstance(document, dict) for document in documents)
    return documents


# --- json ------------------------------------------------------------------------------------------------


def test_json_line_has_time_level_logger_and_the_formatted_message() -> None:
    stream = capture("json")
    before = datetime.now(UTC).replace(microsecond=0)
    log.info("claimed %d partitions of %s", 3, "fills")
    after = datetime.now(UTC)
    [line] = json_lines(stream)
    assert set(line) == {"time", "level", "logger", "message"}
    assert (line["level"], line["logger"], line["message"]) == (
        "INFO",
        "processor.test_logs",
        "claimed 3 partitions of fills",
    )
    assert ISO_UTC_MILLISECONDS.fullmatch(line["time"]), line["time"]
    assert before <= datetime.fromisoformat(line["time"].replace("Z", "+00:00")) <= after


@pytest.mark.parametrize(
    ("method", "level"),
    [
        ("debug", "DEBUG"),
        ("info", "INFO"),
        ("warning", "WARNING"),
        ("error", "ERROR"),
        ("critical", "CRITICAL"),
    ],
)
def test_json_level_is_the_level_name(method: str, level: str) -> None:
    stream = capture("json")
    getattr(log, method)("x")
    assert json_lines(stream)[0]["level"] == level


def test_json_includes_the_extras_a_record_carries() -> None:
    stream = capture("json")
    log.info("applied", extra={"fund": "USDT", "partition": 2, "offset": 1234, "topic": "fills"})
    log.info("partly", extra={"partition": 0})
    log.info("unrelated extras are left out", extra={"worker": "w1"})
    full, partial, unrelated = json_lines(stream)
    assert {name: full[name] for name in EXTRA_FIELDS} == {
        "fund": "USDT",
        "partition": 2,
        "offset": 1234,
        "topic": "fills",
    }
    assert partial["partition"] == 0
    assert not set(EXTRA_FIELDS) - {"partition"} & set(partial)
    assert set(unrelated) == {"time", "level", "logger", "message"}


def test_json_extras_the_codec_cannot_write_become_text() -> None:
    stream = capture("json")
    log.info("odd", extra={"fund": b"USDT", "offset": 2**70, "topic": ValueError("no topic")})
    [line] = json_lines(stream)
    assert (line["fund"], line["offset"], line["topic"]) == ("b'USDT'", str(2**70), "no topic")


def test_json_exception_stays_on_one_line() -> None:
    stream = capture("json")
    try:
        raise RuntimeError("first line\nsecond line")
    except RuntimeError:
        log.exception("the transaction of partition %d failed\nafter a retry", 1)
    assert stream.getvalue().count("\n") == 1
    [line] = json_lines(stream)
    assert line["message"] == "the transaction of partition 1 failed\nafter a retry"
    assert line["level"] == "ERROR"
    assert line["exc_info"].startswith("Traceback (most recent call last):\n")
    assert line["exc_info"].endswith("RuntimeError: first line\nsecond line")


def test_json_stack_info_stays_on_one_line() -> None:
    stream = capture("json")
    log.warning("where", stack_info=True)
    assert stream.getvalue().count("\n") == 1
    [line] = json_lines(stream)
    assert "exc_info" not in line
    assert line["stack_info"].startswith("Stack (most recent call last):\n")


def test_json_record_that_cannot_be_formatted_is_still_one_json_line() -> None:
    """Logging's own report of a formatting error is a multi-line traceback on stderr."""
    stream = capture("json")
    [installed] = [
        handler for handler in logging.getLogger().handlers if getattr(handler, "stream", None) is stream
    ]
    # straight to the handler: pytest's own capture handler would raise on the record first
    installed.handle(log.makeRecord(log.name, logging.INFO, __file__, 1, "%d fills", ("three",), None))
    log.info("next")
    assert stream.getvalue().count("\n") == 2
    broken, following = json_lines(stream)
    assert broken["level"] == "ERROR"
    assert broken["logger"] == "processor.test_logs"
    assert "%d fills" in broken["message"]
    assert "three" in broken["message"]
    assert following["message"] == "next"


def test_json_lone_surrogates_are_escaped_not_lost() -> None:
    stream = capture("json")
    log.info("fill id %s", "bad-\udcff-id")
    [line] = json_lines(stream)
    assert line["message"] == "fill id bad-\\udcff-id"


def test_json_mode_logs_python_warnings_as_json_lines() -> None:
    """The warnings module writes two lines (the warning, then the source line) straight to stderr."""
    stream = capture("json")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("the store is nearly full\nreally", ResourceWarning, stacklevel=1)
    [line] = json_lines(stream)
    assert (line["level"], line["logger"]) == ("WARNING", "py.warnings")
    assert "ResourceWarning: the store is nearly full\nreally" in line["message"]


# --- text ------------------------------------------------------------------------------------------------


def test_text_format_is_unchanged() -> None:
    assert TEXT_FORMAT == "%(asctime)s %(levelname)s %(name)s: %(message)s"
    stream = capture("text")
    log.warning("stopping: %r", "timeout")
    [line] = stream.getvalue().splitlines()
    match = TEXT_LINE.fullmatch(line)
    assert match is not None, line
    assert match.group("level", "logger", "message") == (
        "WARNING",
        "processor.test_logs",
        "stopping: 'timeout'",
    )


def test_text_format_keeps_tracebacks_as_they_were() -> None:
    stream = capture("text")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    lines = stream.getvalue().splitlines()
    assert TEXT_LINE.fullmatch(lines[0])
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "RuntimeError: boom"


# --- both ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_level_filters_records(log_format: str) -> None:
    stream = capture(log_format, level="warning")
    log.info("hidden")
    logging.getLogger("aiokafka.conn").debug("hidden too")
    log.warning("shown")
    assert "hidden" not in stream.getvalue()
    assert stream.getvalue().count("\n") == 1
    assert "shown" in stream.getvalue()


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_one_handler_on_the_root_logger_however_often_configured(log_format: str) -> None:
    root = logging.getLogger()
    before = len(root.handlers)
    configure_logging("info", "text", io.StringIO())
    stream = capture(log_format, level="info")
    assert len(root.handlers) == before + 1
    log.info("once")
    assert stream.getvalue().count("once") == 1


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_logs_go_to_stderr_by_default(log_format: str, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", log_format)
    log.info("to stderr")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "to stderr" in captured.err


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="xml"):
        configure_logging("info", "xml")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_sasl_exchange_is_redacted(log_format: str) -> None:
    """aiokafka logs every request and response at debug level; for PLAIN the SASL bytes hold the
    password. The filter on ``aiokafka.conn`` rewrites the record before any handler formats it."""
    redact_sasl_exchange_in_logs()
    stream = capture(log_format)
    payload = b"\x00fund-worker\x00" + SASL_PASSWORD.encode()
    request = SaslAuthenticateRequest(payload).build(SaslAuthenticateRequest_v1)
    response = SaslAuthenticateResponse_v1(0, "", payload, 0)
    conn_log = logging.getLogger("aiokafka.conn")
    conn_log.debug("Request to %s:%d %d: %s", "kafka", 9093, 3, request)
    conn_log.debug("Response from %s:%d %d: %s", "kafka", 9093, 3, response)
    conn_log.debug("Request to %s:%d %d: %s", "kafka", 9093, 4, "MetadataRequest_v1(topics=[])")
    output = stream.getvalue()
    assert SASL_PASSWORD not in output
    assert SASL_PASSWORD.encode().hex() not in output
    if log_format == "json":
        messages = [line["message"] for line in json_lines(stream)]
        assert all(line["logger"] == "aiokafka.conn" for line in json_lines(stream))
    else:
        messages = [
            match.group("message") for match in map(TEXT_LINE.fullmatch, output.splitlines()) if match
        ]
    assert messages == [
        "Request to kafka:9093 3: SaslAuthenticateRequest_v1(<redacted>)",
        "Response from kafka:9093 3: SaslAuthenticateResponse_v1(<redacted>)",
        "Request to kafka:9093 4: MetadataRequest_v1(topics=[])",
    ]
