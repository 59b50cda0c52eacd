"""Bounded exponential backoff with jitter, shared by every OpenStack controller."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delays of ``initial * factor**n`` capped at ``cap``, with full jitter in the upper half.

    Jitter keeps 50 controllers that hit the same 409 from retrying in lock-step.
    """

    initial: float = 0.2
    factor: float = 2.0
    cap: float = 5.0
    jitter: float = 0.5

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            yield delay * (1 - self.jitter * random.random())
            delay = min(delay * self.factor, self.cap)
