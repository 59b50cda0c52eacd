"""Which keys of a mapping now hold another object than before, found in C loops where possible.

Incremental updates compare every entry of a large mapping (10,000 routes or statuses) with the previous
version to find the few that changed. A Python loop doing dictionary lookups costs about a microsecond per
entry, mostly in hashing keys (ObjectKey's hash is a Python method). When both mappings hold the same keys
in the same order, as successive versions copied from one another do, the values can be compared pairwise
instead: `map(operator.is_not, ...)` and `itertools.compress` run the whole comparison in C.
"""

from __future__ import annotations

import operator
from collections.abc import Hashable, Mapping
from itertools import compress
from typing import Any, TypeVar

K = TypeVar("K", bound=Hashable)


def replaced_keys(now: Mapping[K, Any], before: Mapping[K, Any]) -> list[K]:
    """Keys of `now` whose value is not the very object `before` holds under that key (new keys included)."""
    if len(now) == len(before) and list(now) == list(before):
        return list(compress(now, map(operator.is_not, now.values(), before.values())))
    return [k for k, value in now.items() if before.get(k) is not value]
