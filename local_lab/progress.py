"""One line per event, each stamped with the time since the lab started."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, planned_seconds: float, stream=None):
        self.started = time.monotonic()
        self.planned_seconds = planned_seconds
        self.stream = stream or sys.stdout

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, message: str) -> None:
        minutes, seconds = divmod(int(self.elapsed()), 60)
        print(f"[{minutes:3d}:{seconds:02d}] {message}", file=self.stream, flush=True)

    def step(self, where: str, index: int, total: int, planned: float) -> None:
        self.say(f"{where} step {index}/{total}: started (planned <= {planned:.0f} s)")
