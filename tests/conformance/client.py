"""Requests to a Gateway and the upstream suite's expectations about them (conformance/utils/http).

A request goes to a Gateway's own loopback address with a chosen Host header (and, for HTTPS, a chosen SNI);
the answer is the status, the response headers and, when the backend is an echo, what reached the backend.
`compare` is upstream's `CompareRequest`; `eventually` is its `WaitForConsistentResponse`: the expectation
must hold for `threshold` requests in a row before a timeout, because configuration reaches Envoy
asynchronously. Redirects are never followed (upstream's tests that care set UnfollowRedirect).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

#: Upstream allows 30 s (MaxTimeToConsistency) and wants 3 consecutive successes; a local Envoy converges in
#: well under a second, and a short timeout keeps a failing run fast.
DEFAULT_TIMEOUT = float(os.environ.get("STACKWAY_CONFORMANCE_TIMEOUT", "10"))
CONSECUTIVE_SUCCESSES = 3
RETRY_DELAY = 0.25
REQUEST_TIMEOUT = 5.0
_EMPTY_BODY_LENGTH_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class Request:
    """What to send. `host` empty means the Gateway address itself, as Go's client would send.

    `backend_response_headers` are upstream's BackendSetResponseHeaders: the echo backend is asked (through
    echo-basic's `X-Echo-Set-Header`) to answer with them, so response header filters have something to act on.
    """

    path: str = "/"
    host: str = ""
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    backend_response_headers: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        extra = f" headers={dict(self.headers)}" if self.headers else ""
        return f"{self.method} {self.host or '<gateway>'}{self.path}{extra}"


@dataclass(frozen=True)
class ExpectedRequest:
    """What must reach the backend when it differs from what was sent (upstream's ExpectedRequest)."""

    path: str | None = None
    host: str = ""
    method: str = "GET"
    headers: Mapping[str, str] | None = None
    absent_headers: Sequence[str] = ()
    #: The SNI a TLS backend must have been asked for (the echo's `sni`): the gateway's upstream TLS.
    sni: str = ""
    #: The certificate (PEM) the gateway must have presented to a TLS backend that asks for one.
    client_cert: str = ""
    #: The protocol the request must have reached the backend with (the echo's `proto`, "HTTP/2.0" for h2c).
    proto: str = ""


@dataclass(frozen=True)
class Redirect:
    """Expected Location of a redirect; empty fields default like upstream's setRedirectRequestDefaults."""

    host: str = ""
    scheme: str = ""
    port: str = ""
    path: str = ""


@dataclass(frozen=True)
class Expect:
    """Upstream's ExpectedResponse, minus what these tests never use."""

    status: int = 200
    backend: str = ""
    namespace: str = ""
    expected_request: ExpectedRequest | None = None
    response_headers: Mapping[str, str] | None = None
    absent_response_headers: Sequence[str] = ()
    redirect: Redirect | None = None


@dataclass(frozen=True)
class Case:
    """One row of a test table: a request and what must come back."""

    request: Request
    expect: Expect

    def describe(self) -> str:
        target = self.expect.backend or str(self.expect.status)
        return f"{self.request.describe()} -> {target}"


@dataclass(frozen=True)
class Target:
    """Where requests go: a Gateway listener's address and port, plain or TLS (with the CA to trust)."""

    address: str
    port: int
    scheme: str = "http"
    ca_pem: bytes | None = None
    #: A client certificate (and its key) to present in the TLS handshake, for frontend validation (mTLS).
    client_cert: tuple[bytes, bytes] | None = None

    def __post_init__(self) -> None:
        if not self.address.startswith("127."):
            raise ValueError(f"conformance traffic stays on 127.0.0.0/8, not {self.address}")

    def default_host(self) -> str:
        """Go's CalculateHost: the port is left out when the scheme implies it."""
        implied = (self.scheme == "http" and self.port == 80) or (self.scheme == "https" and self.port == 443)
        return self.address if implied else f"{self.address}:{self.port}"


@dataclass
class Captured:
    """A response, and the echo of the request when the backend answered with echo-basic's JSON."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    echo: dict[str, Any] | None

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def summary(self) -> str:
        if self.echo is not None:
            return (
                f"{self.status} from pod={self.echo.get('pod')!r} ns={self.echo.get('namespace')!r} "
                f"path={self.echo.get('path')!r} host={self.echo.get('host')!r} headers={self.echo.get('headers')}"
            )
        body = self.body[:200].decode("utf-8", "replace")
        location = self.header_values("location")
        return (
            f"{self.status}" + (f" location={location[0]!r}" if location else "") + (f" body={body!r}" if body else "")
        )


class _TLSConnection(http.client.HTTPConnection):
    """HTTPS to an IP address with an independent SNI (http.client derives SNI from the host it dials)."""

    def __init__(self, address: str, port: int, context: ssl.SSLContext, sni: str, timeout: float) -> None:
        super().__init__(address, port, timeout=timeout)
        self._context = context
        self._sni = sni

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._sni or None)


def _tls_context(ca_pem: bytes | None, client_cert: tuple[bytes, bytes] | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # The certificate must chain to the Secret's certificate (so the Gateway serves the right one), but
    # hostnames are not checked: upstream's Go client accepts `*.org` for `example.org`, OpenSSL does not.
    context.check_hostname = False
    if ca_pem:
        context.load_verify_locations(cadata=ca_pem.decode())
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    if client_cert is not None:
        with tempfile.TemporaryDirectory() as directory:  # ssl loads certificates from files only
            cert, key = Path(directory, "client.crt"), Path(directory, "client.key")
            cert.write_bytes(client_cert[0])
            key.write_bytes(client_cert[1])
            context.load_cert_chain(cert, key)
    return context


def send(target: Target, request: Request, sni: str = "", timeout: float = REQUEST_TIMEOUT) -> Captured:
    """One request on a fresh connection (a reused one could keep talking to a listener being replaced)."""
    conn: http.client.HTTPConnection
    if target.scheme == "https":
        context = _tls_context(target.ca_pem, target.client_cert)
        conn = _TLSConnection(target.address, target.port, context, sni or request.host, timeout)
    else:
        conn = http.client.HTTPConnection(target.address, target.port, timeout=timeout)
    try:
        conn.putrequest(request.method, request.path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", request.host or target.default_host())
        conn.putheader("User-Agent", "stackway-conformance")
        for name, value in request.headers.items():
            conn.putheader(name, value)
        if request.backend_response_headers:
            wanted = ",".join(f"{name}:{value}" for name, value in request.backend_response_headers.items())
            conn.putheader("X-Echo-Set-Header", wanted)
        if request.method in _EMPTY_BODY_LENGTH_METHODS:
            conn.putheader("Content-Length", "0")  # Go's client announces the empty body of these methods
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
        headers = list(response.getheaders())
    finally:
        conn.close()
    echo = None
    content_type = [v for k, v in headers if k.lower() == "content-type"]
    if content_type and content_type[0] == "application/json":
        echo = json.loads(body)
    return Captured(response.status, headers, body, echo)


def _lower_headers(headers: Mapping[str, list[str]] | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, values in (headers or {}).items():
        out.setdefault(name.lower(), []).extend(values)
    return out


def _response_headers(captured: Captured) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in captured.headers:
        out.setdefault(name.lower(), []).append(value)
    return out


def compare(target: Target, request: Request, captured: Captured, expect: Expect) -> str | None:
    """Upstream's CompareRequest: None when the response meets the expectation, else what is wrong."""
    if captured.status != expect.status:
        return f"expected status {expect.status}, got {captured.summary()}"
    if captured.status == 200:
        echo = captured.echo
        if echo is None:
            return f"expected an echo from a backend, got a non-echo 200: {captured.summary()}"
        wanted = expect.expected_request or ExpectedRequest(
            path=request.path, host=request.host, method=request.method, headers=None
        )
        path = wanted.path if wanted.path is not None else request.path
        if wanted.host and wanted.host != echo.get("host"):
            return f"expected host {wanted.host!r} at the backend, got {echo.get('host')!r}"
        if path != echo.get("path"):
            return f"expected path {path!r} at the backend, got {echo.get('path')!r}"
        if wanted.method != echo.get("method"):
            return f"expected method {wanted.method!r} at the backend, got {echo.get('method')!r}"
        if wanted.sni and wanted.sni != echo.get("sni"):
            return f"expected SNI {wanted.sni!r} at the backend, got {echo.get('sni')!r}"
        if wanted.client_cert:
            presented = ((echo.get("tls") or {}).get("peerCertificates") or [""])[0]
            if not presented or ssl.PEM_cert_to_DER_cert(presented) != ssl.PEM_cert_to_DER_cert(wanted.client_cert):
                return "the backend did not get the expected client certificate" + ("" if presented else " (none)")
        if wanted.proto and wanted.proto != echo.get("proto"):
            return f"expected the request to reach the backend over {wanted.proto}, got {echo.get('proto')!r}"
        if expect.namespace != echo.get("namespace"):
            return f"expected namespace {expect.namespace!r}, got {captured.summary()}"
        got_headers = _lower_headers(echo.get("headers"))
        for name, value in (wanted.headers or {}).items():
            got = got_headers.get(name.lower())
            if got is None:
                return f"expected request header {name} to be set, backend got headers {echo.get('headers')}"
            if ",".join(got) != value:
                return f"expected request header {name}={value!r}, backend got {','.join(got)!r}"
        response_headers = _response_headers(captured)
        for name, value in (expect.response_headers or {}).items():
            got = response_headers.get(name.lower())
            if got is None:
                return f"expected response header {name} to be set, got {captured.headers}"
            if ",".join(got) != value:
                return f"expected response header {name}={value!r}, got {','.join(got)!r}"
        for name in expect.absent_response_headers:
            if name.lower() in response_headers:
                return f"expected response header {name} to be absent, got {response_headers[name.lower()]}"
        for name in wanted.absent_headers:
            if name.lower() in got_headers:
                return f"expected request header {name} to be absent at the backend, got {got_headers[name.lower()]}"
        if not str(echo.get("pod", "")).startswith(expect.backend):
            return f"expected a pod of {expect.backend!r}, got {captured.summary()}"
    elif 300 <= captured.status < 400 and expect.redirect is not None:
        locations = captured.header_values("location")
        if not locations:
            return f"expected a Location header with the {captured.status} redirect"
        got = urlsplit(locations[0])
        want = expect.redirect
        want_host = want.host or (got.hostname or "")
        want_scheme = want.scheme or target.scheme
        want_path = want.path or request.path.split("?", 1)[0]
        got_port = str(got.port) if got.port is not None else ""
        if want_host != (got.hostname or ""):
            return f"expected redirect host {want_host!r}, got Location {locations[0]!r}"
        if want.port:
            if want.port != got_port:
                return f"expected redirect port {want.port!r}, got Location {locations[0]!r}"
        elif (got.scheme == "http" and got_port not in ("", "80")) or (
            got.scheme == "https" and got_port not in ("", "443")
        ):
            return f"expected no port or the scheme's own in the redirect, got Location {locations[0]!r}"
        if want_scheme != got.scheme:
            return f"expected redirect scheme {want_scheme!r}, got Location {locations[0]!r}"
        if want_path != got.path:
            return f"expected redirect path {want_path!r}, got Location {locations[0]!r}"
    return None


def eventually(
    target: Target,
    case: Case,
    sni: str = "",
    timeout: float = DEFAULT_TIMEOUT,
    threshold: int = CONSECUTIVE_SUCCESSES,
    sender: Callable[[Target, Request, str], Captured] | None = None,
) -> str | None:
    """Upstream's WaitForConsistentResponse: None once `threshold` answers in a row match, else the last error."""
    do_send = sender or (lambda t, r, s: send(t, r, sni=s))
    return until_consistent(
        lambda: compare(target, case.request, do_send(target, case.request, sni), case.expect),
        case.describe(),
        timeout,
        threshold,
    )


def until_consistent(
    attempt: Callable[[], str | None],
    description: str,
    timeout: float = DEFAULT_TIMEOUT,
    threshold: int = CONSECUTIVE_SUCCESSES,
) -> str | None:
    """Upstream's AwaitConvergence: repeat `attempt` (None: it went as expected, else what went wrong) until
    it succeeds `threshold` times in a row; None then, else `description` with the last error at the timeout.
    A request that fails outright (refused, reset, unparsable) counts as a failed attempt."""
    deadline = time.monotonic() + timeout
    successes, attempts, last = 0, 0, "no request completed"
    while True:
        attempts += 1
        try:
            error = attempt()
        except (OSError, http.client.HTTPException, json.JSONDecodeError) as exc:
            error = f"request failed: {type(exc).__name__}: {exc}"
        if error is None:
            successes += 1
            if successes >= threshold:
                return None
            continue
        successes, last = 0, error
        if time.monotonic() + RETRY_DELAY > deadline:
            return f"{description}: after {attempts} attempts in {timeout:.0f}s: {last}"
        time.sleep(RETRY_DELAY)


def check_cases(
    target: Target, cases: Sequence[Case], sni_from_host: bool = False, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """Run every case concurrently (upstream runs them as parallel subtests) and report all failures at once."""
    with ThreadPoolExecutor(max_workers=min(16, len(cases) or 1)) as pool:
        results = list(
            pool.map(
                lambda c: eventually(target, c, sni=c.request.host if sni_from_host else "", timeout=timeout), cases
            )
        )
    failures = [r for r in results if r is not None]
    assert not failures, f"{len(failures)} of {len(cases)} request cases failed:\n  " + "\n  ".join(failures)
