"""A small progress bar on stderr (no dependency): ``desc |#####     | 5/19 [00:03<00:08]``.

A bar made with ``parent=`` shares its parent's line instead of drawing its own, e.g.
``batch |##        | 3/10 [00:41<01:35] inpainting 5/20``, so an outer and an inner bar never overwrite
each other.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """Redraws one line on ``stream`` at most every ``interval`` s; does nothing when disabled.

    With ``parent``, the bar appends ``desc count/total`` to the parent's line (on the parent's stream, and
    only when the parent is enabled); the parent's next redraw clears it again.
    """

    def __init__(self, total: int, desc: str = "", enabled: bool = True, stream: TextIO | None = None,
                 width: int = 24, interval: float = 0.1, parent: ProgressBar | None = None) -> None:
        self.total, self.desc, self.width, self.interval = max(total, 0), desc, width, interval
        self.parent = parent
        if parent is not None:
            stream, enabled = parent.stream, enabled and parent.enabled
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.count = 0
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._line_length = 0  # characters the last draw on this line left (kept by the outermost bar)

    def update(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if self.enabled and (now - self._last_draw >= self.interval or self.count >= self.total):
            self._last_draw = now
            self._draw(now)

    def text(self, now: float) -> str:
        """The bar as it reads now (no carriage return)."""
        if self.parent is not None:
            return f"{self.parent.text(now)} {self.desc} {self.count}/{self.total}"
        elapsed = now - self._start
        frac = min(self.count / self.total, 1.0) if self.total else 1.0
        filled = int(frac * self.width)
        eta = elapsed / self.count * (self.total - self.count) if self.count else 0.0
        return (f"{self.desc} |{'#' * filled}{' ' * (self.width - filled)}| {self.count}/{self.total} "
                f"[{_clock(elapsed)}<{_clock(eta)}]")

    def _outermost(self) -> ProgressBar:
        return self if self.parent is None else self.parent._outermost()

    def _draw(self, now: float) -> None:
        text, outermost = self.text(now), self._outermost()
        line = "\r" + text.ljust(outermost._line_length)  # blanks what a longer line left
        outermost._line_length = len(text)
        self.stream.write(line)
        self.stream.flush()

    def write(self, line: str) -> None:
        """Print ``line`` on the stream above the bar (cleared first when drawn; redrawn on the next update)."""
        clear = "\r\x1b[K" if self.enabled and self._last_draw else ""
        self.stream.write(f"{clear}{line}\n")
        self.stream.flush()
        self._last_draw = 0.0

    def close(self) -> None:
        if self.enabled and self.count and self.parent is None:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
