"""Progress of long loops: a tqdm bar in a terminal, bounded log lines anywhere else.

A KFP pod, CI or `seppo train | cat` has no terminal, where tqdm stays silent; there each loop logs
`desc: n/total units (pct%), rate unit/s, ETA t, key=value` through `logging` every `every_fraction`
of the total or every `every_seconds`, whichever comes first, plus one final line on close.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Generic, TextIO, TypeVar

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Progress(Generic[T]):
    """Counts work done; iterate it (wrapping `iterable`) or call `update(n)`; `close()` at the end."""

    def __init__(
        self,
        iterable: Iterable[T] | None = None,
        *,
        desc: str,
        unit: str,
        total: int | None = None,
        stream: TextIO | None = None,
        every_fraction: float = 0.1,
        every_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        disable: bool = False,
    ) -> None:
        stream = sys.stderr if stream is None else stream
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.desc, self.unit, self.total = iterable, desc, unit, total
        self.every_fraction, self.every_seconds, self.clock = every_fraction, every_seconds, clock
        self.n, self.disable, self.closed = 0, disable, False
        self.postfix: dict[str, object] = {}
        self.logged_n: int | None = None
        self.bar = None if disable or not _isatty(stream) else tqdm(total=total, desc=desc, unit=unit, file=stream)
        self.start = self.last_log = clock()

    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError("Progress has no iterable to iterate; call update(n) instead")
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __enter__(self) -> Progress[T]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def set_description(self, desc: str) -> None:
        self.desc = desc
        if self.bar is not None:
            self.bar.set_description(desc)

    def set_postfix(self, **values: object) -> None:
        self.postfix = values
        if self.bar is not None:
            self.bar.set_postfix(values)

    def update(self, n: int = 1) -> None:
        before, self.n = self.n, self.n + n
        if self.bar is not None:
            self.bar.update(n)
        elif not self.disable and self._due(before):
            self._log()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        elif not self.disable and self.logged_n != self.n:
            self._log()

    def _due(self, before: int) -> bool:
        if self.clock() - self.last_log >= self.every_seconds:
            return True
        if not self.total:
            return False
        step = self.total * self.every_fraction
        return math.floor(self.n / step) > math.floor(before / step)

    def _log(self) -> None:
        now = self.clock()
        self.last_log, self.logged_n = now, self.n
        logger.info("%s", self.line(now - self.start))

    def line(self, elapsed: float) -> str:
        """`desc: n/total units (pct%), rate unit/s, ETA t, key=value` (`n units` without a total)."""
        units = self.unit if self.unit.endswith("s") else self.unit + "s"
        rate = self.n / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.n}/{self.total} {units} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n} {units}"]
        parts.append(f"{rate:.0f} {self.unit}/s" if rate >= 100 else f"{rate:.3g} {self.unit}/s")
        if self.total and self.n >= self.total:
            parts.append(f"took {_duration(elapsed)}")
        elif self.total and rate > 0:
            parts.append(f"ETA {_duration((self.total - self.n) / rate)}")
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        return f"{self.desc}: " + ", ".join(parts)


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"
