"""Keeping the heap in order as the number of objects grows and shrinks.

Python keeps freed objects' memory in its own arenas, and glibc keeps freed heap pages, so a control plane
that once held 10,000 routes stays as big as that after they are deleted. After a large shrink a full
collection (the translator's objects form reference cycles) and `malloc_trim` return it to the system.

The other way round, a large load leaves a heap of long-lived objects (typed resources, the translation
and build kept for incremental updates) that every full collection walks again: at 10,000 routes one takes
most of a second, stalling whichever edit it lands on. After a large growth the heap is collected once and
what survived is frozen (`gc.freeze`): later collections skip it, while reference counting still frees
those objects as usual when they are let go. A shrink unfreezes before collecting, so nothing stays
uncollectable for longer than until the next shrink.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

_libc: ctypes.CDLL | None = None
try:
    _name = ctypes.util.find_library("c")
    _libc = ctypes.CDLL(_name) if _name else None
    if _libc is not None and not hasattr(_libc, "malloc_trim"):
        _libc = None
except OSError:
    _libc = None


class ShrinkWatcher:
    """Releases memory when the number of objects falls well below the largest seen since the last release,
    and freezes the heap when it rises well above the count at the last freeze."""

    def __init__(self, ratio: float = 0.8, minimum: int = 500, growth: float = 1.25) -> None:
        self.ratio = ratio
        self.minimum = minimum
        self.growth = growth
        self._peak = 0
        self._settled = 0

    def observe(self, count: int) -> bool:
        """Call after each update with the object count; True when memory was released."""
        self._peak = max(self._peak, count)
        if self._peak >= self.minimum and count < self._peak * self.ratio:
            release()
            self._peak = self._settled = count
            return True
        if count >= self.minimum and count > self._settled * self.growth:
            settle()
            self._settled = count
        return False


def settle() -> None:
    """Collect once, then keep future collections off everything that is left."""
    gc.collect()
    gc.freeze()


def release() -> None:
    gc.unfreeze()
    gc.collect()
    if _libc is not None:
        _libc.malloc_trim(0)
    gc.freeze()
