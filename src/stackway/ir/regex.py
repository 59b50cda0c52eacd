"""Regular expressions as Envoy sees them: RE2 syntax, checked with RE2 itself.

Python's `re` accepts things RE2 refuses (backreferences, lookarounds) and the reverse; checking with the
engine Envoy uses means a user's bad pattern becomes a route condition instead of an Envoy NACK.
"""

from __future__ import annotations

import re2  # type: ignore[import-not-found,unused-ignore]


def regex_problem(pattern: str) -> str | None:
    """None when RE2 compiles the pattern, else RE2's reason."""
    try:
        re2.compile(pattern)
    except re2.error as exc:
        return str(exc) or "invalid pattern"
    return None
