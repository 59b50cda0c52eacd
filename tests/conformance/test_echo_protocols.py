"""The echo backends' WebSocket and h2c sides, and how the harness links Services to them, without stackway
or Envoy: when a conformance test of these protocols fails, these say whether the backend is to blame."""

from __future__ import annotations

import asyncio
import base64
import http.client
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from stackway.demo.websocket import MAX_MESSAGE, accept_key, read_frame
from tests.conformance import manifests as m
from tests.conformance.client import Request, Target, send
from tests.conformance.h2c import HTTP2, send_h2c
from tests.conformance.harness import EchoPool

POD = m.EchoPod(m.INFRA_NS, "infra-backend-v1", "infra-backend-v1-abc123def-proto1", ())


@pytest.fixture(scope="module")
def echo_pool() -> Iterator[EchoPool]:
    pool = EchoPool()
    pool.start([POD])
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def base_docs() -> list[m.Doc]:
    path: Path = m.conformance_dir() / "base" / "manifests.yaml"
    if not path.is_file():
        pytest.skip(f"upstream conformance manifests not found at {path.parent.parent} (set {m.ENV_DIR})")
    return m.load_documents(path)


def _websocket_round_trip(port: int, messages: list[str | bytes]) -> list[str | bytes]:
    """Open ws://127.0.0.1:port/ws with aiohttp's client, send `messages` one by one, return the replies."""

    async def run() -> list[str | bytes]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"http://127.0.0.1:{port}/ws", timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws,
        ):
            replies: list[str | bytes] = []
            for message in messages:
                if isinstance(message, str):
                    await ws.send_str(message)
                else:
                    await ws.send_bytes(message)
                reply = await ws.receive(timeout=5)
                assert reply.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), reply
                replies.append(reply.data)
            return replies

    return asyncio.run(run())


def test_websocket_echoes_text_and_binary_messages(echo_pool: EchoPool) -> None:
    port = echo_pool.ports()[POD.pod]
    since = time.monotonic()
    big = os.urandom(70_000)  # a 64-bit length field
    replies = _websocket_round_trip(port, ["Websocket Support!", bytes(range(1, 8)), "x" * 300, big])
    assert replies == ["Websocket Support!", bytes(range(1, 8)), "x" * 300, big]
    # the handshake is in the request log, so a test can tell which pod took the WebSocket
    [entry] = echo_pool.log.received(m.INFRA_NS, "infra-backend-v1", "/ws", since)
    assert entry.pod == POD.pod


def _raw_handshake(port: int, extra: bytes = b"") -> tuple[socket.socket, bytes]:
    key = base64.b64encode(os.urandom(16)).decode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
        + f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        + extra
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert f"Sec-WebSocket-Accept: {accept_key(key)}".encode() in head
    return sock, head


def _client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + mask + masked


def _server_frames(sock: socket.socket, count: int) -> list[tuple[bool, int, bool, bytes]]:
    buf = bytearray()
    frames: list[tuple[bool, int, bool, bytes]] = []
    while len(frames) < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {frames}"
        buf += chunk
        while (frame := read_frame(buf)) is not None:
            frames.append(frame)
    return frames


def test_websocket_fragments_pings_and_close(echo_pool: EchoPool) -> None:
    """Frames that arrive with the handshake count; fragments become one message; pings get pongs with the
    same payload; a close is answered with the client's code and the connection ends."""
    port = echo_pool.ports()[POD.pod]
    early = _client_frame(0x1, b"first")
    sock, _ = _raw_handshake(port, early)
    with sock:
        sock.sendall(_client_frame(0x2, b"ab", fin=False) + _client_frame(0x9, b"ping?") + _client_frame(0x0, b"cd"))
        frames = _server_frames(sock, 3)
        assert frames == [(True, 0x1, False, b"first"), (True, 0xA, False, b"ping?"), (True, 0x2, False, b"abcd")]
        sock.sendall(_client_frame(0x8, (4000).to_bytes(2, "big")))
        assert _server_frames(sock, 1) == [(True, 0x8, False, (4000).to_bytes(2, "big"))]
        assert sock.recv(1) == b""


def test_websocket_refuses_unmasked_frames_and_bad_handshakes(echo_pool: EchoPool) -> None:
    port = echo_pool.ports()[POD.pod]
    sock, _ = _raw_handshake(port)
    with sock:
        sock.sendall(bytes([0x81, 2]) + b"hi")  # a client frame without a mask
        assert _server_frames(sock, 1) == [(True, 0x8, False, (1002).to_bytes(2, "big"))]
    target = Target("127.0.0.1", port)
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "a2V5"}
    unversioned = send(target, Request("/ws", headers=upgrade))
    assert unversioned.status == 426  # no Sec-WebSocket-Version: 13
    assert unversioned.header_values("Sec-WebSocket-Version") == ["13"]
    keyless = send(target, Request("/ws", headers={"Upgrade": "websocket", "Sec-WebSocket-Version": "13"}))
    assert keyless.status == 400
    elsewhere = send(target, Request("/chat", headers={**upgrade, "Sec-WebSocket-Version": "13"}))
    assert elsewhere.status == 200  # only /ws is a WebSocket; elsewhere an upgrade request is just echoed
    assert elsewhere.echo is not None
    assert elsewhere.echo["path"] == "/chat"


def test_websocket_frame_reader_waits_for_whole_frames() -> None:
    frame = _client_frame(0x1, b"hello")
    buf = bytearray(frame[:-1])
    assert read_frame(buf) is None
    assert bytes(buf) == frame[:-1]  # nothing taken off an incomplete frame
    buf += frame[-1:] + b"\x81"
    assert read_frame(buf) == (True, 0x1, True, b"hello")
    assert bytes(buf) == b"\x81"
    assert MAX_MESSAGE >= 1 << 20


def test_h2c_listener_echoes_over_http2_and_is_logged(echo_pool: EchoPool) -> None:
    port = echo_pool.h2c_ports()[POD.pod]
    since = time.monotonic()
    captured = send_h2c(Target("127.0.0.1", port), Request("/h2c?x=1", host="example.com", headers={"X-Foo": "1"}))
    assert captured.status == 200
    assert captured.echo is not None
    assert captured.echo["proto"] == HTTP2
    assert captured.echo["path"] == "/h2c?x=1"
    assert captured.echo["host"] == "example.com"
    assert captured.echo["method"] == "GET"
    assert captured.echo["headers"]["X-Foo"] == ["1"]
    assert captured.echo["pod"] == POD.pod
    assert [e.pod for e in echo_pool.log.received(m.INFRA_NS, "infra-backend-v1", "/h2c?x=1", since)] == [POD.pod]


def test_h2c_listener_speaks_only_http2_and_the_client_only_to_it(echo_pool: EchoPool) -> None:
    """An HTTP/1.1 request to the h2c port fails, and so does h2c to the HTTP/1.1 port: a gateway that got
    the protocol wrong cannot pass for one that got it right."""
    h2c, http1 = echo_pool.h2c_ports()[POD.pod], echo_pool.ports()[POD.pod]
    with pytest.raises((OSError, http.client.HTTPException)):  # the h2c listener opens with SETTINGS
        send(Target("127.0.0.1", h2c), Request("/"))
    with pytest.raises(ConnectionError):
        send_h2c(Target("127.0.0.1", http1), Request("/"))


def test_service_ports_targeting_3001_reach_the_h2c_listener(base_docs: list[m.Doc]) -> None:
    pods = m.echo_pods(base_docs)
    ports = {p.pod: 40000 + i for i, p in enumerate(pods)}
    h2c = {p.pod: 50000 + i for i, p in enumerate(pods) if p.protocol == m.HTTP}
    slices = m.endpoint_slices(base_docs, pods, ports, h2c)
    infra_v1 = [s for s in slices if s["metadata"]["labels"]["kubernetes.io/service-name"] == "infra-backend-v1"]
    assert len(infra_v1) == 2
    for s in infra_v1:
        pod = s["endpoints"][0]["targetRef"]["name"]
        by_name = {p["name"]: p["port"] for p in s["ports"]}
        # first-port and third-port (kubernetes.io/ws) target 3000, second-port (kubernetes.io/h2c) 3001
        assert by_name == {"first-port": ports[pod], "second-port": h2c[pod], "third-port": ports[pod]}
    grpc = [s for s in slices if s["metadata"]["labels"]["kubernetes.io/service-name"] == "grpc-infra-backend-v1"]
    assert all(p["port"] == ports[s["endpoints"][0]["targetRef"]["name"]] for s in grpc for p in s["ports"])
