"""A small hand-written progress bar for training loops, written to stderr."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``bar(done, loss)`` redraws ``[#####-----]  5000/10000  loss 0.2512``.

    On a terminal the line is redrawn in place (at most every ``min_interval`` seconds);
    elsewhere (a log file, a pipe) one line is written at every 10% of the run, so logs stay
    short.  Call :meth:`close` at the end.
    """

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30,
                 min_interval: float = 0.1):
        self.total, self.width, self.min_interval = total, width, min_interval
        self.stream = sys.stderr if stream is None else stream
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_time = 0.0
        self._last_decile = -1
        self._last_line = ""

    def _line(self, done: int, loss: float) -> str:
        filled = int(self.width * done / self.total)
        return (f"[{'#' * filled}{'-' * (self.width - filled)}] "
                f"{done:>{len(str(self.total))}}/{self.total}  loss {loss:.6g}")

    def __call__(self, done: int, loss: float) -> None:
        now = time.monotonic()
        if self.tty:
            if done == self.total or now - self._last_time >= self.min_interval:
                self._last_line = self._line(done, loss)
                self.stream.write("\r" + self._last_line)
                self.stream.flush()
                self._last_time = now
        else:
            decile = 10 * done // self.total
            if decile > self._last_decile:
                self._last_decile = decile
                self.stream.write(self._line(done, loss) + "\n")
                self.stream.flush()

    def close(self) -> None:
        if self.tty and self._last_line:
            self.stream.write("\n")
            self.stream.flush()
