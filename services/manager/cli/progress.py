"""VirtualBox's progress line, `0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%`, without I/O.

Feed it percentages as a job advances; it returns the text to print, each tenth printed exactly once."""

from __future__ import annotations


class ProgressLine:
    def __init__(self):
        self.printed = -10        # the last tenth printed

    def advance(self, percent: float) -> str:
        """Text for the tenths reached since the last call (never 100%: finish() prints that)."""
        reached = min(int(percent) // 10 * 10, 90)
        text = ""
        while self.printed < reached:
            self.printed += 10
            text += f"{self.printed}%..."
        return text

    def finish(self) -> str:
        """The tenths not printed yet, then 100% and the end of the line."""
        return self.advance(100) + "100%\n"

    def fail(self) -> str:
        """A failed job ends the line where it stopped, as VirtualBox does."""
        return "\n" if self.printed >= 0 else ""
