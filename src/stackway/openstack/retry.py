"""Bounded exponential backoff with jitter, shared by every OpenStack controller."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from stackway.openstack.clients.errors import OpenStackError

T = TypeVar("T")


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


def retrying(
    fn: Callable[[], T],
    *,
    deadline: float,
    backoff: Backoff | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[OpenStackError, float], None] | None = None,
) -> T:
    """Call ``fn`` until it succeeds, a non-retryable error happens, or ``deadline`` seconds have passed."""
    start = time.monotonic()
    for delay in (backoff or Backoff()).delays():
        try:
            return fn()
        except OpenStackError as err:
            if not err.retryable or time.monotonic() - start + delay > deadline:
                raise
            if on_retry is not None:
                on_retry(err, delay)
            sleep(delay)
    raise AssertionError("unreachable")
