"""Progress lines for long runs; silent in quiet mode (CI)."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class Progress:
    """Prints timestamped progress lines unless ``quiet``."""

    quiet: bool = False
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    started: float = field(default_factory=time.perf_counter)

    def say(self, message: str) -> None:
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.started
        print(f"[{format_seconds(elapsed)}] {message}", file=self.stream, flush=True)


def format_seconds(seconds: float) -> str:
    """``75.2`` -> ``'1:15'``; ``3725`` -> ``'1:02:05'``."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


VERBOSE_ENV = "BFLSIM_VERBOSE"
"""Set (to 1) by ``--verbose``: frameworks' own logs and notices are shown, not filtered."""


def verbose() -> bool:
    """True when this process (or the ``bflsim`` command that started it) runs ``--verbose``."""
    return os.environ.get(VERBOSE_ENV) == "1"
