"""A small progress bar on stderr (no dependency): shown when stderr is a terminal."""

from __future__ import annotations

import sys
import time


def wanted(progress: bool | None) -> bool:
    """`progress=None` means: show a bar when stderr is interactive."""
    if progress is None:
        return sys.stderr.isatty()
    return bool(progress)


class Bar:
    """`bar(n)` reports absolute progress `n` of `total`; redraws at most 10 times a second."""

    def __init__(self, desc: str, total: float | None, unit: str = "", scale: float = 1.0):
        self.desc, self.total, self.unit, self.scale = desc, total, unit, scale
        self.start = time.perf_counter()
        self.last_draw = 0.0
        self.n = 0.0
        self.postfix = ""  # shown after the counts (e.g. "loss 3.21")

    def __call__(self, n: float) -> None:
        self.n = n
        now = time.perf_counter()
        if now - self.last_draw >= 0.1:
            self.last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        done = self.n / self.scale
        rate = done / elapsed
        if self.total:
            frac = min(self.n / self.total, 1.0)
            width = 24
            filled = int(frac * width)
            bar = "#" * filled + "-" * (width - filled)
            text = (
                f"\r{self.desc}: {frac * 100:5.1f}% |{bar}| {done:,.1f}/{self.total / self.scale:,.1f}"
                f" {self.unit} [{elapsed:.1f}s, {rate:,.1f} {self.unit}/s]"
            )
        else:
            text = f"\r{self.desc}: {done:,.1f} {self.unit} [{elapsed:.1f}s, {rate:,.1f} {self.unit}/s]"
        if self.postfix:
            text += f" {self.postfix}"
        sys.stderr.write(text + "\x1b[K")  # clear what a longer previous line left
        sys.stderr.flush()

    def close(self) -> None:
        self._draw(time.perf_counter())
        sys.stderr.write("\n")
        sys.stderr.flush()
