"""Gateway API v1.6.1 HTTPRoute backend protocol conformance tests (HTTPRouteBackendProtocolH2C and
HTTPRouteBackendProtocolWebSocket), in both modes: through a real `stackway up`, and through `stackway serve`
with its Envoy against the (fake) Kubernetes API.

The routes point at ports of the base `infra-backend-v1` Service that declare an appProtocol:
`second-port` (`kubernetes.io/h2c`, targeting echo-basic's h2c listener) and `third-port` (`kubernetes.io/ws`,
the HTTP listener whose `/ws` is a WebSocket echo). The requests are upstream's: HTTP/2 with prior knowledge
to the Gateway for h2c, and a WebSocket dialled through the Gateway that must send back a text and a binary
message. Beyond upstream, the tests check that the h2c request really reached the backend over HTTP/2 (the
echo's `proto`) and that the WebSocket was taken by an infra-backend-v1 pod (the request log), since either
could otherwise pass by accident of the test set-up.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.conformance.client import Case, Expect, ExpectedRequest, Request, Target, eventually, until_consistent
from tests.conformance.h2c import HTTP2, send_h2c
from tests.conformance.harness import MODES, Conformance
from tests.conformance.test_httproute import INFRA, SAME_NS, V1, accepted

pytestmark = [pytest.mark.envoy, pytest.mark.parametrize("conformance", MODES, indirect=True)]


def test_backend_protocol_h2c(conformance: Conformance) -> None:
    """HTTPRouteBackendProtocolH2C: "http2 prior knowledge request should reach backend"."""
    with conformance.applied("httproute-backend-protocol-h2c"):
        accepted(conformance, SAME_NS, (INFRA, "backend-protocol-h2c"))
        case = Case(
            Request("/"),
            Expect(backend=V1, namespace=INFRA, expected_request=ExpectedRequest(path="/", proto=HTTP2)),
        )
        target = conformance.gateway(*SAME_NS)
        error = eventually(target, case, sender=lambda to, request, _sni: send_h2c(to, request))
        assert error is None, error


TEXT_MESSAGE = "Websocket Support!"
BINARY_MESSAGE = bytes([1, 2, 3, 4, 5, 6, 7])
WEBSOCKET_TIMEOUT = 5.0


def websocket_round_trip(target: Target, origin: str) -> str | None:
    """Upstream's attempt: dial ws://<gateway>/ws, send a text then a binary message, each must come back
    unchanged. None when it did, else what went wrong."""

    async def attempt() -> str | None:
        timeout = aiohttp.ClientWSTimeout(ws_receive=WEBSOCKET_TIMEOUT, ws_close=WEBSOCKET_TIMEOUT)
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"http://{target.default_host()}/ws", origin=origin, timeout=timeout) as ws,
        ):
            await ws.send_str(TEXT_MESSAGE)
            reply = await ws.receive(timeout=WEBSOCKET_TIMEOUT)
            if reply.type != aiohttp.WSMsgType.TEXT or reply.data != TEXT_MESSAGE:
                return f"unexpected reply to the text frame: {reply.type.name} {reply.data!r}"
            await ws.send_bytes(BINARY_MESSAGE)
            reply = await ws.receive(timeout=WEBSOCKET_TIMEOUT)
            if reply.type != aiohttp.WSMsgType.BINARY or reply.data != BINARY_MESSAGE:
                return f"unexpected reply to the binary frame: {reply.type.name} {reply.data!r}"
            return None

    try:
        return asyncio.run(attempt())
    except aiohttp.ClientError as exc:  # e.g. the handshake answered 404 or 503 while the route propagates
        return f"failed to dial: {type(exc).__name__}: {exc}"


def test_backend_protocol_websocket(conformance: Conformance) -> None:
    """HTTPRouteBackendProtocolWebSocket: "websocket connection should reach backend"."""
    with conformance.applied("httproute-backend-protocol-websocket"):
        accepted(conformance, SAME_NS, (INFRA, "backend-protocol-ws"))
        target = conformance.gateway(*SAME_NS)
        since = time.monotonic()
        origin = "ws://gateway/HTTPRouteBackendProtocolWebSocket/websocket_connection_should_reach_backend"
        error = until_consistent(lambda: websocket_round_trip(target, origin), "websocket to /ws")
        assert error is None, error
        taken_by = {e.deployment for e in conformance.echoes.log.entries(since) if e.echo.get("path") == "/ws"}
        assert taken_by == {V1}, f"the WebSocket handshakes reached {taken_by}, expected only {V1}"
