"""Progress of a long loop, for a person at a terminal and for a log file alike (the one place).

``Progress(total, desc)`` shows a tqdm bar when its stream (stderr by default) is a terminal.
When it is not -- output redirected to a file, a cluster job's log -- a bar would be noise or
nothing at all, so it prints one plain line at most every ``INTERVAL`` seconds instead::

    certify.tsv: 120/500 inputs (24%), 3.1 inputs/s, ETA 0:02:03, 6,200 samples/s

``enabled=False`` (the CLI's ``--quiet``, the library's ``progress=False``) prints nothing.
The logged runner (certify, predict, attack, certificate checks) uses it; so can training
(``write`` prints a line without breaking the bar).
"""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm

INTERVAL = 30.0  # seconds at least between two progress lines when the stream is not a terminal
_now = time.monotonic  # the clock (a test may replace it)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """Progress through ``total`` items (``unit``), named ``desc``: a tqdm bar on a terminal, else
    a line to ``stream`` at most every ``interval`` seconds (default: the module's ``INTERVAL``)
    with done/total, the rate and the time left; nothing when ``enabled`` is false. A context
    manager; ``update(n, note)`` counts ``n`` more items done (``note``: extra text, e.g. the
    samples/s, shown until the next note)."""

    def __init__(self, total: int, desc: str = "", unit: str = "input", enabled: bool = True,
                 stream: TextIO | None = None, interval: float | None = None, leave: bool = True):
        self.total, self.desc, self.unit, self.enabled = int(total), desc, unit, bool(enabled)
        self.stream = sys.stderr if stream is None else stream
        self.interval = INTERVAL if interval is None else float(interval)
        self.done, self.note = 0, ""
        self.start = self._last = _now()
        self.bar = None
        if self.enabled and _is_terminal(self.stream):
            self.bar = tqdm(total=self.total, desc=desc or None, unit=unit, dynamic_ncols=True, file=self.stream,
                            leave=leave)

    def update(self, n: int = 1, note: str | None = None) -> None:
        self.done += n
        if note is not None:
            self.note = note
        if self.bar is not None:
            self.bar.update(n)
            if note:
                self.bar.set_postfix_str(note)
        elif self.enabled:
            now = _now()
            if now - self._last >= self.interval:
                self._last = now
                self._print(self.line(now))

    def line(self, now: float | None = None) -> str:
        """The progress line: ``desc: done/total units (pct), rate units/s, ETA h:mm:ss[, note]``."""
        elapsed = (_now() if now is None else now) - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = max(self.total - self.done, 0)
        eta = _clock(left / rate) if rate > 0 else "?"
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total > 0 else ""
        text = f"{self.done}/{self.total} {self.unit}s{pct}, {rate:.3g} {self.unit}s/s, ETA {eta}"
        if self.note:
            text += f", {self.note}"
        return f"{self.desc}: {text}" if self.desc else text

    def write(self, message: str) -> None:
        """Print ``message`` as its own line (above the bar on a terminal), unless disabled."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            self._print(message)

    def _print(self, message: str) -> None:
        self.stream.write(message + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["INTERVAL", "Progress"]
