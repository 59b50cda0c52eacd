"""A listener's tls.options (implementation-specific key/value pairs) → IR TLS parameters.

Every value is checked here, before it reaches Envoy: Envoy rejects a listener update with an unknown
cipher or a bad version outright (a NACK), and the rejection would hold back every other change in the
same update. A listener whose options are not understood is not accepted instead, and only it stops
serving; its status names the option.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from stackway.ir import model as ir

PREFIX = "stackway.dev/"
MIN_VERSION = PREFIX + "tls-min-version"
MAX_VERSION = PREFIX + "tls-max-version"
CIPHER_SUITES = PREFIX + "cipher-suites"
ALPN = PREFIX + "alpn"
KEYS = (MIN_VERSION, MAX_VERSION, CIPHER_SUITES, ALPN)

VERSIONS = ("1.0", "1.1", "1.2", "1.3")

#: The cipher names Envoy's TLS (BoringSSL) accepts for TLS 1.0-1.2 (TLS 1.3's suites are not configurable).
CIPHERS = frozenset(
    {
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-PSK-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-PSK-AES128-CBC-SHA",
        "ECDHE-ECDSA-AES256-SHA",
        "ECDHE-RSA-AES256-SHA",
        "ECDHE-PSK-AES256-CBC-SHA",
        "AES128-GCM-SHA256",
        "AES256-GCM-SHA384",
        "AES128-SHA",
        "PSK-AES128-CBC-SHA",
        "AES256-SHA",
        "PSK-AES256-CBC-SHA",
        "DES-CBC3-SHA",
    }
)


@dataclass(frozen=True)
class OptionProblem:
    """Why an option is not usable: `key` is the option, `message` says it for the listener's status."""

    key: str
    message: str


def tls_parameters(options: Mapping[str, str]) -> ir.TLSParameters | OptionProblem | None:
    """The TLS parameters `options` ask for (None when they ask for nothing), or the first problem, in the
    order of the keys (so that the status names the same option every time)."""
    for key in sorted(options):
        if key not in KEYS:
            return OptionProblem(key, f"tls.options: {key!r} is not supported (supported: {', '.join(KEYS)})")
    values = {key: options[key].strip() for key in options}
    for key in (MIN_VERSION, MAX_VERSION):
        if key in values and values[key] not in VERSIONS:
            return OptionProblem(key, f"tls.options: {key} must be one of {', '.join(VERSIONS)}, not {values[key]!r}")
    low, high = values.get(MIN_VERSION, ""), values.get(MAX_VERSION, "")
    if low and high and VERSIONS.index(low) > VERSIONS.index(high):
        return OptionProblem(MIN_VERSION, f"tls.options: {MIN_VERSION} {low} is above {MAX_VERSION} {high}")
    ciphers = _list(values.get(CIPHER_SUITES))
    if CIPHER_SUITES in values:
        unknown = [name for name in ciphers if name not in CIPHERS]
        if unknown or not ciphers:
            if not unknown:
                what = "no cipher named"
            elif unknown[0].startswith("TLS_"):  # Envoy takes these names, and then does nothing with them
                what = f"{unknown[0]!r} is a TLS 1.3 suite, which cannot be configured"
            else:
                what = f"unknown cipher {unknown[0]!r}"
            return OptionProblem(CIPHER_SUITES, f"tls.options: {CIPHER_SUITES}: {what} (Envoy names, TLS 1.0-1.2)")
    alpn = _list(values.get(ALPN))
    if ALPN in values:
        bad = [p for p in alpn if len(p.encode()) > 255 or not p.isascii() or not p.isprintable()]
        if bad or not alpn:
            what = f"{bad[0]!r} is not an ALPN protocol name" if bad else "no protocol named"
            return OptionProblem(ALPN, f"tls.options: {ALPN}: {what}")
    if not values:
        return None
    return ir.TLSParameters(min_version=low, max_version=high, cipher_suites=ciphers, alpn=alpn)


def _list(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())
