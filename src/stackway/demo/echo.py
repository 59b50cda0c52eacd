"""An HTTP/1.1 echo backend that answers like the Gateway API conformance suite's `echo-basic`.

Conformance checks (and the demo) decide where a request went by reading the echo: which pod answered, in
which namespace, and what path, host and headers reached it. So the JSON fields, their casing and the way
header names are canonicalised follow echo-basic exactly (Go's `net/http`: `Header` keys in canonical MIME
form, `Host` taken out of the headers, `path` being the raw request target including the query).

It is a raw `asyncio.Protocol` with a small HTTP/1.1 parser rather than a framework: one process serves many
named backends (each its own 127.0.0.1 port and pod/namespace/service identity), and benchmarks need the
backend to be much faster than the proxy in front of it. Keep-alive and pipelining are supported; request
bodies (Content-Length or chunked) are read and discarded so connection framing stays right.

Besides the echo, the endpoints echo-basic has and tests use are served too: `/health`, `/status/NNN`
(answers with that status code), the `delay` query parameter (`?delay=500ms`), the `X-Echo-Set-Header`
request header (`Name:value,Other:value` becomes response headers), and `/ws`: a WebSocket (RFC 6455) that
sends every message back as it came, text as text and binary as binary, which is what a gateway's WebSocket
support is tested against.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from stackway.demo.websocket import WebSocketEcho, accept_key

__all__ = ["EchoIdentity", "EchoRequest", "EchoServer", "canonical_header_key", "parse_go_duration", "start_echo"]

MAX_HEADER_BYTES = 64 * 1024
_TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_STATUS_PATH = re.compile(r"^/status/(\d\d\d)$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_canonical_cache: dict[str, str] = {}


def canonical_header_key(name: str) -> str:
    """Go's `textproto.CanonicalMIMEHeaderKey`: `x-header-set` → `X-Header-Set`.

    Conformance expectations compare header names the way echo-basic reports them, so this must match Go:
    a name containing a byte that is not a token character is returned unchanged.
    """
    cached = _canonical_cache.get(name)
    if cached is not None:
        return cached
    raw = name.encode("latin-1", "replace")
    if not raw or any(b not in _TOKEN_CHARS for b in raw):
        result = name
    else:
        out = []
        upper = True
        for ch in name:
            if upper and "a" <= ch <= "z":
                out.append(ch.upper())
            elif not upper and "A" <= ch <= "Z":
                out.append(ch.lower())
            else:
                out.append(ch)
            upper = ch == "-"
        result = "".join(out)
    if len(_canonical_cache) < 4096:
        _canonical_cache[name] = result
    return result


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string (`1s`, `500ms`, `1m30s`), as echo-basic's `?delay=` accepts."""
    if text in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"invalid duration {text!r}")
    return total


@dataclass(frozen=True)
class EchoIdentity:
    """Who this backend claims to be in every echo: what echo-basic reads from its Pod's environment."""

    pod: str
    namespace: str
    service: str = ""
    ingress: str = ""


_date_cache: tuple[int, bytes] = (0, b"")


def _http_date() -> bytes:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode())
    return _date_cache[1]


@dataclass
class EchoRequest:
    """A request as the echo reports it: what echo-basic reads from Go's `http.Request`."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    sni: str = ""  # the server name the client's TLS handshake asked for ("" over plaintext)
    peer_certificate: str = ""  # the client's certificate (PEM), when it presented one


class _EchoProtocol(asyncio.Protocol):
    """One client connection: parses pipelined HTTP/1.x requests from a buffer and answers them in order."""

    def __init__(self, server: EchoServer) -> None:
        self._server = server
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._pending: EchoRequest | None = None  # headers parsed, body still arriving
        self._body_left = 0
        self._chunked = False
        self._waiting = False  # a delayed response is outstanding; keep later requests queued
        self._closing = False
        self._sni = ""
        self._peer_certificate = ""
        self._websocket: WebSocketEcho | None = None  # set once a /ws handshake switched the connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        tls = transport.get_extra_info("ssl_object")
        self._sni = getattr(tls, _SNI_ATTRIBUTE, None) or ""
        peer = tls.getpeercert(binary_form=True) if tls is not None else None
        self._peer_certificate = ssl.DER_cert_to_PEM_cert(peer) if peer else ""
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Without this, Envoy's upstream connections see ~40 ms delayed-ACK/Nagle stalls.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        self._transport = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._process()

    def _process(self) -> None:
        if self._websocket is not None:
            self._websocket.receive(self._buf)
            return
        while not self._waiting and not self._closing and self._transport is not None:
            if self._pending is None:
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buf) > MAX_HEADER_BYTES:
                        self._fail(431)
                    return
                head = bytes(self._buf[:end])
                del self._buf[: end + 4]
                request = self._parse_head(head)
                if request is None:
                    self._fail(400)
                    return
                self._pending = request
            if not self._consume_body():
                return
            request, self._pending = self._pending, None
            assert request is not None
            self._dispatch(request)
            if self._websocket is not None:  # the bytes after the handshake are WebSocket frames
                self._websocket.receive(self._buf)
                return

    def _parse_head(self, head: bytes) -> EchoRequest | None:
        try:
            text = head.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            return None
        lines = text.split("\r\n")
        while lines and not lines[0]:
            lines.pop(0)  # tolerate stray CRLF between pipelined requests (RFC 9112 §2.2)
        if not lines:
            return None
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return None
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                return None
            headers.append((name, value.strip(" \t")))
        self._chunked = False
        self._body_left = 0
        for name, value in headers:
            lname = name.lower()
            if lname == "transfer-encoding" and value.lower().endswith("chunked"):
                self._chunked = True
            elif lname == "content-length":
                if not value.isdigit():
                    return None
                self._body_left = int(value)
        return EchoRequest(parts[0], parts[1], parts[2], headers, self._sni, self._peer_certificate)

    def _consume_body(self) -> bool:
        """Drop the body of the pending request from the buffer; False while more bytes are needed."""
        if self._chunked:
            while True:
                if self._body_left > 0:  # inside a chunk's data (+ its trailing CRLF)
                    take = min(self._body_left, len(self._buf))
                    del self._buf[:take]
                    self._body_left -= take
                    if self._body_left:
                        return False
                line_end = self._buf.find(b"\r\n")
                if line_end < 0:
                    return False
                size_text = bytes(self._buf[:line_end]).split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    self._fail(400)
                    return False
                if size == 0:
                    trailer_end = self._buf.find(b"\r\n\r\n", line_end)
                    if trailer_end == line_end:  # no trailers: "0\r\n\r\n"
                        del self._buf[: line_end + 4]
                        return True
                    if trailer_end < 0:
                        return False
                    del self._buf[: trailer_end + 4]
                    return True
                del self._buf[: line_end + 2]
                self._body_left = size + 2
        take = min(self._body_left, len(self._buf))
        del self._buf[:take]
        self._body_left -= take
        return self._body_left == 0

    def _keep_alive(self, request: EchoRequest) -> bool:
        connection = ""
        for name, value in request.headers:
            if name.lower() == "connection":
                connection = value.lower()
        if request.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection

    def _dispatch(self, request: EchoRequest) -> None:
        delay = 0.0
        query = urlsplit(request.target).query
        if "delay=" in query:
            values = parse_qs(query).get("delay")
            if values:
                try:
                    delay = parse_go_duration(values[0])
                except ValueError as exc:
                    self._write(request, 500, _json({"message": str(exc)}), [])
                    return
        if delay > 0:
            self._waiting = True
            asyncio.get_running_loop().call_later(delay, self._respond_later, request)
            return
        self._respond(request)

    def _respond_later(self, request: EchoRequest) -> None:
        self._waiting = False
        if self._transport is None:
            return
        self._respond(request)
        self._process()

    def _respond(self, request: EchoRequest) -> None:
        path = request.target.replace("//", "/") if request.target.startswith("/") else request.target
        route = path.split("?", 1)[0]
        if route == "/health":
            self._write(request, 200, b"OK", [], content_type=None)
            return
        if route.startswith("/status/"):
            m = _STATUS_PATH.match(request.target)
            self._write(request, int(m.group(1)) if m else 400, b"", [], content_type=None)
            return
        failure = self._server.simulated_failure(request.target)
        if failure is not None:
            self._write(request, failure, b"", [], content_type=None)
            return
        if route == "/ws" and _header(request, "upgrade").lower() == "websocket":
            self._accept_websocket(request)
            return
        self._write(request, 200, self._server.echo_body(request), _echo_set_headers(request.headers))

    def _accept_websocket(self, request: EchoRequest) -> None:
        """Answer a WebSocket handshake with 101 and echo the connection's messages from then on.

        The handshake is still echoed through `echo_body`, though a 101 has no body to carry it: whoever
        observes `echo_body` (the conformance harness's request log) so learns which pod took the WebSocket.
        """
        key = _header(request, "sec-websocket-key")
        tokens = {t.strip().lower() for t in _header(request, "connection").split(",")}
        if request.method != "GET" or "upgrade" not in tokens or not key:
            self._write(request, 400, b"", [], content_type=None)
            return
        if _header(request, "sec-websocket-version") != "13":
            self._write(request, 426, b"", [("Sec-WebSocket-Version", "13")], content_type=None)
            return
        transport = self._transport
        assert transport is not None
        self._server.echo_body(request)
        accept = accept_key(key)
        transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        self._websocket = WebSocketEcho(transport)

    def _write(
        self,
        request: EchoRequest,
        status: int,
        body: bytes,
        extra: list[tuple[str, str]],
        content_type: str | None = "application/json",
    ) -> None:
        transport = self._transport
        if transport is None:
            return
        keep_alive = self._keep_alive(request)
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Status"
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines.extend(f"{name}: {value}" for name, value in extra)
        if content_type:
            lines.append(f"Content-Type: {content_type}")
            lines.append("X-Content-Type-Options: nosniff")
        lines.append(f"Content-Length: {len(body)}")
        if not keep_alive:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\nDate: ").encode("latin-1") + _http_date() + b"\r\n\r\n"
        transport.write(head if request.method == "HEAD" else head + body)
        if not keep_alive:
            self._closing = True
            transport.close()

    def _fail(self, status: int) -> None:
        self._closing = True
        if self._transport is not None:
            reason = HTTPStatus(status).phrase
            self._transport.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            self._transport.close()


def _header(request: EchoRequest, name: str) -> str:
    """The first value of header `name` (lower case), or ""."""
    return next((value for key, value in request.headers if key.lower() == name), "")


def _echo_set_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Response headers asked for with `X-Echo-Set-Header: Name:value,Other:value` (echo-basic semantics)."""
    out: dict[str, str] = {}
    for name, value in headers:
        if name.lower() != "x-echo-set-header":
            continue
        for item in value.split(","):
            key, _, val = item.strip().partition(":")
            if not key:
                continue
            out[key] = val if key not in out else out[key] + "," + val.strip()
    return list(out.items())


def _json(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


@dataclass(eq=False)
class EchoServer:
    """A running echo backend; `await close()` stops it."""

    host: str
    port: int
    identity: EchoIdentity
    _server: asyncio.Server | None = None
    _connections: set[_EchoProtocol] = field(default_factory=set)
    _identity_fields: dict[str, str] = field(default_factory=dict)
    #: Requests seen per `uuid` query value, for the retry simulation.
    _attempts: dict[str, int] = field(default_factory=dict)

    def simulated_failure(self, target: str) -> int | None:
        """echo-basic's retry simulation: `?responseCode=C&succeedAfter=N&uuid=U` answers C to the first N
        requests carrying U, then succeeds; a gateway that retries turns the failures into a success."""
        query = urlsplit(target).query
        if "responseCode=" not in query:
            return None
        params = parse_qs(query)
        try:
            code = int(params["responseCode"][0])
            succeed_after = int(params.get("succeedAfter", ["0"])[0])
        except (KeyError, ValueError):
            return None
        key = params.get("uuid", [""])[0]
        seen = self._attempts.get(key, 0) + 1
        self._attempts[key] = seen
        return code if seen <= succeed_after else None

    def __post_init__(self) -> None:
        self._identity_fields = {
            "namespace": self.identity.namespace,
            "ingress": self.identity.ingress,
            "service": self.identity.service,
            "pod": self.identity.pod,
        }

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def echo_body(self, request: EchoRequest) -> bytes:
        host = ""
        headers: dict[str, list[str]] = {}
        for name, value in request.headers:
            key = canonical_header_key(name)
            if key == "Host":
                host = host or value  # Go moves Host out of the header map into Request.Host
                continue
            if key == "Transfer-Encoding":
                continue  # Go consumes it while reading the body
            headers.setdefault(key, []).append(value)
        if request.target.startswith(("http://", "https://")):
            host = urlsplit(request.target).netloc or host
        echo: dict[str, Any] = {
            "path": request.target,
            "host": host,
            "method": request.method,
            "proto": request.version,
            "headers": headers,
            **self._identity_fields,
            "sni": request.sni,
        }
        if request.peer_certificate:  # echo-basic's TLS details: here only what tests read, the client's cert
            echo["tls"] = {"peerCertificates": [request.peer_certificate]}
        return _json(echo)

    async def close(self) -> None:
        """Stop listening, drop open connections (keep-alive ones would never end) and wait until done."""
        for conn in list(self._connections):
            conn.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> EchoServer:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


#: Where the SNI callback leaves the server name on a connection's SSLObject: on the server side Python's
#: `SSLObject.server_hostname` stays None, and the echo reports the name (`sni`) as echo-basic does.
_SNI_ATTRIBUTE = "_stackway_sni"


def _record_sni(context: ssl.SSLContext) -> None:
    """Make `context` note each handshake's server name on its SSLObject (keeping any callback it had)."""
    previous = context.sni_callback

    def callback(obj: ssl.SSLObject, name: str, ctx: ssl.SSLContext) -> int | None:  # name: None without SNI
        setattr(obj, _SNI_ATTRIBUTE, name or "")
        return previous(obj, name, ctx) if previous is not None else None

    context.sni_callback = callback


async def start_echo(
    host: str, port: int, pod: str, namespace: str, service: str = "", *, tls: ssl.SSLContext | None = None
) -> EchoServer:
    """Start an echo backend on host:port (port 0 picks a free one; read it back from `.port`).

    With `tls`, it speaks HTTPS: the backend of TLS passthrough and upstream-TLS tests; the echo then names
    the SNI the client sent, and the client's certificate when the context asked for one."""
    server = EchoServer(host=host, port=port, identity=EchoIdentity(pod=pod, namespace=namespace, service=service))
    if tls is not None:
        _record_sni(tls)
    factory: Callable[[], asyncio.Protocol] = lambda: _EchoProtocol(server)  # noqa: E731
    loop = asyncio.get_running_loop()
    server._server = await loop.create_server(factory, host, port, reuse_address=True, backlog=1024, ssl=tls)
    sockets = server._server.sockets
    if sockets:
        server.port = sockets[0].getsockname()[1]
    return server
