"""A small progress bar on stderr (no dependency): ``desc |#####     | 5/19 [00:03<00:08]``."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """Redraws one line on ``stream`` at most every ``interval`` s; does nothing when disabled."""

    def __init__(self, total: int, desc: str = "", enabled: bool = True, stream: TextIO | None = None,
                 width: int = 24, interval: float = 0.1) -> None:
        self.total, self.desc, self.width, self.interval = max(total, 0), desc, width, interval
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.count = 0
        self._start = time.monotonic()
        self._last_draw = 0.0

    def update(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if self.enabled and (now - self._last_draw >= self.interval or self.count >= self.total):
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = now - self._start
        frac = min(self.count / self.total, 1.0) if self.total else 1.0
        filled = int(frac * self.width)
        eta = elapsed / self.count * (self.total - self.count) if self.count else 0.0
        line = (f"\r{self.desc} |{'#' * filled}{' ' * (self.width - filled)}| {self.count}/{self.total} "
                f"[{_clock(elapsed)}<{_clock(eta)}]")
        self.stream.write(line)
        self.stream.flush()

    def write(self, line: str) -> None:
        """Print ``line`` on the stream above the bar (cleared first when drawn; redrawn on the next update)."""
        clear = "\r\x1b[K" if self.enabled and self._last_draw else ""
        self.stream.write(f"{clear}{line}\n")
        self.stream.flush()
        self._last_draw = 0.0

    def close(self) -> None:
        if self.enabled and self.count:
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
