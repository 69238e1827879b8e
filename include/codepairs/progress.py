"""Progress lines for long stages: items done of the total, the rate, and the time left.

A crawl of a large repository or a score of a million pairs runs for many minutes; someone watching
the Airflow task log wants to know it is alive and when it will end. A line is logged when at least
``every`` seconds have passed since the last one (a steady rhythm whatever the batch size), and once
at the end, so a short task logs one line and a long one a line every half minute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
    """Counts items done; ``total`` may be None (unknown) or an estimate that the count outgrows."""

    def __init__(
        self,
        log: logging.Logger,
        label: str,
        total: int | None,
        unit: str = "items",
        every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log, self.label, self.total, self.unit, self.every, self.clock = log, label, total, unit, every, clock
        self.done = 0
        self.started = self.last = clock()

    def advance(self, n: int) -> None:
        self.done += n
        if self.clock() - self.last >= self.every:
            self.report()

    def line(self) -> str:
        elapsed = self.clock() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total is None:
            return f"{self.label}: {self.done:,} {self.unit} done, {rate:,.0f}/s, {_duration(elapsed)} so far"
        share = f"{100 * self.done / self.total:.0f}%" if self.total else "100%"
        left = (max(self.total - self.done, 0) / rate) if rate > 0 else None
        eta = f"about {_duration(left)} left" if left is not None else "time left unknown"
        return (
            f"{self.label}: {self.done:,} of {self.total:,} {self.unit} ({share}), {rate:,.0f}/s, "
            f"{_duration(elapsed)} so far, {eta}"
        )

    def report(self) -> None:
        self.last = self.clock()
        self.log.info("%s", self.line())

    def finish(self) -> None:
        """The last line: what was done and how fast, whatever the rhythm."""
        elapsed = self.clock() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        self.log.info(
            "%s: finished, %s %s in %s (%s/s)",
            self.label,
            f"{self.done:,}",
            self.unit,
            _duration(elapsed),
            f"{rate:,.0f}",
        )
