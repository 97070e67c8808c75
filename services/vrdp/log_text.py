"""Log lines that a client cannot forge: control characters in a message (user names, domains,
client names and anything else a client sends) are escaped, and absurd lengths are cut, so one log
record is always one line of readable text. Tracebacks, which are ours, stay multi-line."""

from __future__ import annotations

import logging
import re

MAX_MESSAGE = 2000            # characters of one log message; an RDP user name is at most 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, limit: int = MAX_MESSAGE) -> str:
    """text with control characters (and bidirectional overrides) escaped, cut to limit."""
    text = _CONTROL.sub(_escape, text)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit} more characters)"
    return text


class PrintableFormatter(logging.Formatter):
    """A Formatter whose messages go through printable()."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


def configure(level: str) -> None:
    """The RDP server's logging: stderr (supervisor's log file), one line per record."""
    handler = logging.StreamHandler()
    handler.setFormatter(PrintableFormatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
