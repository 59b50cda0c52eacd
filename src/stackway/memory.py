"""Giving memory back after a shrink.

Python keeps freed objects' memory in its own arenas, and glibc keeps freed heap pages, so a control plane
that once held 10,000 routes stays as big as that after they are deleted. After a large shrink a full
collection (the translator's objects form reference cycles) and `malloc_trim` return it to the system.
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
    """Releases memory when the number of objects falls well below the largest seen since the last release."""

    def __init__(self, ratio: float = 0.8, minimum: int = 500) -> None:
        self.ratio = ratio
        self.minimum = minimum
        self._peak = 0

    def observe(self, count: int) -> bool:
        """Call after each update with the object count; True when memory was released."""
        self._peak = max(self._peak, count)
        if self._peak >= self.minimum and count < self._peak * self.ratio:
            release()
            self._peak = count
            return True
        return False


def release() -> None:
    gc.collect()
    if _libc is not None:
        _libc.malloc_trim(0)
