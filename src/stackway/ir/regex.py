"""Regular expressions as Envoy sees them: RE2 syntax, checked with RE2 itself.

Python's `re` accepts things RE2 refuses (backreferences, lookarounds) and the reverse; checking with the
engine Envoy uses means a user's bad pattern becomes a route condition instead of an Envoy NACK.
"""

from __future__ import annotations

import re2  # type: ignore[import-not-found,unused-ignore]

#: Envoy refuses patterns whose compiled RE2 program is bigger than this (runtime key
#: re2.max_program_size.error_level, default 100) and NACKs the whole RouteConfiguration.
MAX_PROGRAM_SIZE = 100


def regex_problem(pattern: str) -> str | None:
    """None when Envoy will accept the pattern, else why not."""
    try:
        compiled = re2.compile(pattern)
    except re2.error as exc:
        return str(exc) or "invalid pattern"
    if compiled.programsize > MAX_PROGRAM_SIZE:
        return f"too complex for Envoy (RE2 program size {compiled.programsize} > {MAX_PROGRAM_SIZE})"
    return None
