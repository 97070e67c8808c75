"""Log text a client cannot forge: control characters escaped, bidirectional overrides escaped,
absurd lengths cut; one record stays one line while our own tracebacks keep theirs."""

import logging
import sys

from services.vrdp.log_text import MAX_MESSAGE, PrintableFormatter, printable


def test_control_characters_are_escaped():
    assert printable("mallory\nAUTH: Access granted.") == "mallory\\x0aAUTH: Access granted."
    assert printable("\x1b[2Jred\x00\x7f\x9b") == "\\x1b[2Jred\\x00\\x7f\\x9b"
    assert printable("abc\u202edcba") == "abc\\u202edcba"
    assert printable("Zoë, 東京, C:\\Users") == "Zoë, 東京, C:\\Users"


def test_absurd_lengths_are_cut():
    text = printable("x" * (MAX_MESSAGE + 500))
    assert text == "x" * MAX_MESSAGE + "... (500 more characters)"


def test_one_record_is_one_line_and_tracebacks_stay():
    formatter = PrintableFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("headbox.vrdp", logging.INFO, __file__, 1, "AUTH: User: [%s]",
                               ("eve\r\nINFO AUTH: Access granted.",), None)
    assert formatter.format(record) == "INFO AUTH: User: [eve\\x0d\\x0aINFO AUTH: Access granted.]"
    try:
        raise ValueError("ours")
    except ValueError:
        failing = logging.LogRecord("headbox.vrdp", logging.ERROR, __file__, 1, "failed: %s", ("a\nb",),
                                    sys.exc_info())
    text = formatter.format(failing)
    assert text.startswith("ERROR failed: a\\x0ab\nTraceback (most recent call last):")
