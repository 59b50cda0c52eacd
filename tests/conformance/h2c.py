"""HTTP/2 over cleartext with prior knowledge (h2c), both ends: echo-basic's h2c listener, and a client.

echo-basic serves HTTP/1.1 on port 3000 and h2c on 3001; the base `infra-backend-v1` Service's `second-port`
(appProtocol `kubernetes.io/h2c`) targets 3001. So each HTTP echo pod also gets an h2c listener here, which
answers every request with the same echo as the pod's HTTP/1.1 listener (it is the same `EchoServer`'s
`echo_body`, so the request log records it too), `proto` being "HTTP/2.0" as Go reports it. A gateway that
spoke HTTP/1.1 to that port would get a connection error, not an echo.

The client sends one request per connection, opening with the HTTP/2 preface (upstream's
H2CPriorKnowledgeProtocol: no HTTP/1.1 Upgrade, which RFC 9113 deprecates), so a gateway listener must
recognise HTTP/2 from its first bytes. Both ends use the `h2` state machine: frames, HPACK and flow control
are a protocol library's job, not something to get subtly wrong in a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from dataclasses import dataclass, field

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import ProtocolError, StreamClosedError

from stackway.demo.echo import EchoRequest, EchoServer
from tests.conformance.client import REQUEST_TIMEOUT, Captured, Request, Target

#: What Go's HTTP/2 server reports as `Request.Proto`, and so echo-basic as `proto`.
HTTP2 = "HTTP/2.0"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _headers(raw: object) -> list[tuple[str, str]]:
    """h2's header list as text pairs (it hands over bytes or str depending on its configuration)."""
    assert isinstance(raw, list)
    return [(_text(name), _text(value)) for name, value in raw]


class _H2cEchoProtocol(asyncio.Protocol):
    """One h2c connection: every stream that ends is answered with the echo of its request."""

    def __init__(self, server: H2cEchoServer) -> None:
        self._server = server
        self._h2 = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self._transport: asyncio.Transport | None = None
        self._requests: dict[int, list[tuple[str, str]]] = {}
        self._unsent: dict[int, bytes] = {}  # response bodies waiting for flow-control window

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._server.connections.add(self)
        self._h2.initiate_connection()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._transport = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except ProtocolError:  # not HTTP/2 (an HTTP/1.1 request, say): h2 has queued a GOAWAY
            self._flush()
            self.close()
            return
        for event in events:
            if isinstance(event, RequestReceived) and event.stream_id is not None:
                self._requests[event.stream_id] = _headers(event.headers)
            elif isinstance(event, DataReceived) and event.stream_id is not None:
                self._h2.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
            elif isinstance(event, StreamEnded) and event.stream_id is not None:
                self._respond(event.stream_id)
            elif isinstance(event, WindowUpdated):
                for stream_id in list(self._unsent):
                    self._send_body(stream_id, self._unsent.pop(stream_id))
            elif isinstance(event, StreamReset) and event.stream_id is not None:
                self._requests.pop(event.stream_id, None)
                self._unsent.pop(event.stream_id, None)
            elif isinstance(event, ConnectionTerminated):
                self._flush()
                self.close()
                return
        self._flush()

    def _respond(self, stream_id: int) -> None:
        headers = self._requests.pop(stream_id, [])
        pseudo = {name: value for name, value in headers if name.startswith(":")}
        regular = [(name, value) for name, value in headers if not name.startswith(":")]
        if ":authority" in pseudo:  # Go's server makes :authority the request's Host
            regular.insert(0, ("host", pseudo[":authority"]))
        request = EchoRequest(pseudo.get(":method", ""), pseudo.get(":path", ""), HTTP2, regular)
        body = self._server.echo.echo_body(request)
        response = [
            (":status", "200"),
            ("content-type", "application/json"),
            ("x-content-type-options", "nosniff"),
            ("content-length", str(len(body))),
        ]
        with contextlib.suppress(StreamClosedError):
            self._h2.send_headers(stream_id, response)
            self._send_body(stream_id, body)

    def _send_body(self, stream_id: int, body: bytes) -> None:
        """As much of `body` as the peer's windows allow now; the rest once it grants more."""
        with contextlib.suppress(StreamClosedError):
            while body:
                size = min(len(body), self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size)
                if size <= 0:
                    self._unsent[stream_id] = body
                    return
                self._h2.send_data(stream_id, body[:size])
                body = body[size:]
            self._h2.end_stream(stream_id)

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None:
            self._transport.write(data)


@dataclass(eq=False)
class H2cEchoServer:
    """A running h2c listener answering with `echo`'s echo; `await close()` stops it."""

    echo: EchoServer
    port: int = 0
    connections: set[_H2cEchoProtocol] = field(default_factory=set)
    _server: asyncio.Server | None = None

    async def close(self) -> None:
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def start_h2c_echo(host: str, echo: EchoServer, port: int = 0) -> H2cEchoServer:
    """Serve `echo` over h2c on host:port (0: a free port, read back from `.port`)."""
    server = H2cEchoServer(echo)
    loop = asyncio.get_running_loop()
    server._server = await loop.create_server(lambda: _H2cEchoProtocol(server), host, port, reuse_address=True)
    server.port = server._server.sockets[0].getsockname()[1]
    return server


def send_h2c(target: Target, request: Request, timeout: float = REQUEST_TIMEOUT) -> Captured:
    """One request over a fresh h2c connection with prior knowledge; the answer as `client.send` gives it."""
    if target.scheme != "http":
        raise ValueError("h2c is HTTP/2 without TLS: the target must be plain http")
    h2 = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
    headers = [
        (":method", request.method),
        (":scheme", "http"),
        (":authority", request.host or target.default_host()),
        (":path", request.path),
        ("user-agent", "stackway-conformance"),
        *((name.lower(), value) for name, value in request.headers.items()),
    ]
    status, response_headers, body = 0, [], bytearray()
    with socket.create_connection((target.address, target.port), timeout=timeout) as sock:
        h2.initiate_connection()
        stream_id = h2.get_next_available_stream_id()
        h2.send_headers(stream_id, headers, end_stream=True)
        sock.sendall(h2.data_to_send())
        ended = False
        while not ended:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("the connection closed before the response ended")
            try:
                events = h2.receive_data(data)
            except ProtocolError as exc:  # e.g. an HTTP/1.1 answer to the preface
                raise ConnectionError(f"the server does not speak HTTP/2: {exc}") from exc
            for event in events:
                if isinstance(event, ResponseReceived) and event.stream_id == stream_id:
                    response_headers = _headers(event.headers)
                    status = int(dict(response_headers)[":status"])
                elif isinstance(event, DataReceived) and event.stream_id == stream_id:
                    body += event.data or b""
                    h2.acknowledge_received_data(event.flow_controlled_length or 0, stream_id)
                elif isinstance(event, StreamEnded) and event.stream_id == stream_id:
                    ended = True
                elif isinstance(event, StreamReset) and event.stream_id == stream_id:
                    raise ConnectionError(f"stream reset by the server (error code {event.error_code})")
                elif isinstance(event, ConnectionTerminated):
                    raise ConnectionError(f"the server ended the connection (GOAWAY {event.error_code})")
            sock.sendall(h2.data_to_send())
    regular = [(name, value) for name, value in response_headers if not name.startswith(":")]
    content_type = [value for name, value in regular if name == "content-type"]
    echo = json.loads(body) if content_type and content_type[0] == "application/json" else None
    return Captured(status, regular, bytes(body), echo)
