"""US-layout text to PC set-1 scancodes (what an RDP client sends for typed text), for tests."""

from __future__ import annotations

_ROWS = {
    0x02: "1!", 0x03: "2@", 0x04: "3#", 0x05: "4$", 0x06: "5%", 0x07: "6^", 0x08: "7&", 0x09: "8*",
    0x0A: "9(", 0x0B: "0)", 0x0C: "-_", 0x0D: "=+", 0x1A: "[{", 0x1B: "]}", 0x27: ";:", 0x28: "'\"",
    0x29: "`~", 0x2B: "\\|", 0x33: ",<", 0x34: ".>", 0x35: "/?", 0x39: "  ",
}
_LETTERS = dict(zip("qwertyuiop", range(0x10, 0x1A))) | dict(zip("asdfghjkl", range(0x1E, 0x27))) \
    | dict(zip("zxcvbnm", range(0x2C, 0x33)))
SHIFT, ENTER = 0x2A, 0x1C

KEYMAP: dict[str, tuple[int, bool]] = {"\n": (ENTER, False)}
for code, pair in _ROWS.items():
    KEYMAP[pair[0]] = (code, False)
    KEYMAP.setdefault(pair[1], (code, True))
for letter, code in _LETTERS.items():
    KEYMAP[letter] = (code, False)
    KEYMAP[letter.upper()] = (code, True)


def scancodes(text: str) -> list[tuple[int, bool, bool]]:
    """(code, extended, pressed) events typing `text`, with Shift where needed."""
    events = []
    for char in text:
        code, shifted = KEYMAP[char]
        if shifted:
            events.append((SHIFT, False, True))
        events += [(code, False, True), (code, False, False)]
        if shifted:
            events.append((SHIFT, False, False))
    return events
