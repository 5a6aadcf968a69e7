"""Log set-up: one handler on stderr writing text lines, or one JSON object per line (``LOG_FORMAT``)."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from processor import codec

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Attributes a caller may attach with ``extra=``; a JSON line carries each one a record has.
EXTRA_FIELDS = ("fund", "partition", "offset", "topic")

_JSON_SCALARS = (str, int, float, bool, type(None))
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1  # the integers the codec writes as numbers


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: tracebacks and newlines stay inside its strings."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname,
            "logger": record.name,
            # after the logger's filters ran, so what they rewrote (the SASL bytes) is what is shown
            "message": record.getMessage(),
        }
        for name in EXTRA_FIELDS:
            if name in record.__dict__:
                document[name] = _plain(record.__dict__[name])
        if record.exc_info and record.exc_info[0] is not None:
            document["exc_info"] = record.exc_text or self.formatException(record.exc_info)
        elif record.exc_text:
            document["exc_info"] = record.exc_text
        if record.stack_info:
            document["stack_info"] = self.formatStack(record.stack_info)
        try:
            return codec.dumps(document).decode()
        except TypeError:  # a string the codec refuses (a lone surrogate)
            return codec.dumps({key: _printable(value) for key, value in document.items()}).decode()


def _plain(value: object) -> object:
    """A value the codec can write: JSON scalars as they are, anything else as its ``str``."""
    if not isinstance(value, _JSON_SCALARS) or (
        isinstance(value, int) and not _INT64_MIN <= value <= _UINT64_MAX
    ):
        return str(value)
    return value


def _printable(value: object) -> object:
    return value.encode("utf-8", "backslashreplace").decode() if isinstance(value, str) else value


class _LogHandler(logging.StreamHandler[TextIO]):
    """The handler ``configure_logging`` installs; a record that cannot be formatted (bad arguments)
    becomes one more line in the same format rather than logging's multi-line report."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        if not isinstance(self.formatter, JsonFormatter):
            super().handleError(record)
            return
        error = sys.exc_info()[1]
        substitute = logging.makeLogRecord(
            {
                "name": record.name,
                "levelno": logging.ERROR,
                "levelname": "ERROR",
                "created": record.created,
                "msg": "cannot format a log record (%s, arguments %s): %r",
                "args": (_text(record.msg), _text(record.args), error),
            }
        )
        try:
            self.stream.write(self.formatter.format(substitute) + self.terminator)
            self.flush()
        except Exception:
            super().handleError(record)


def _text(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__} without a repr>"


def configure_logging(level: str, log_format: str, stream: TextIO | None = None) -> None:
    """Send every logger's records through one handler on the root logger, on ``stream`` (stderr).

    ``log_format`` is ``text`` (``TEXT_FORMAT``) or ``json`` (``JsonFormatter``); calling it again
    replaces the handler it installed before. In json mode Python's warnings are logged too (logger
    ``py.warnings``), so that nothing else writes a line to stderr that is not JSON.
    """
    if log_format == "json":
        formatter: logging.Formatter = JsonFormatter()
    elif log_format == "text":
        formatter = logging.Formatter(TEXT_FORMAT)
    else:
        raise ValueError(f"log format {log_format!r} is neither text nor json")
    root = logging.getLogger()
    for installed in [handler for handler in root.handlers if isinstance(handler, _LogHandler)]:
        root.removeHandler(installed)
        installed.close()
    handler = _LogHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(log_format == "json")
