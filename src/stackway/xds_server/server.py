"""The ADS gRPC service (SotW and Delta on one port) and the grpc.aio server that hosts it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import structlog
from envoy.service.discovery.v3 import ads_pb2_grpc
from google.protobuf.message import Message

from stackway.xds_server.cache import SnapshotCache
from stackway.xds_server.delta import DeltaStream
from stackway.xds_server.sotw import SotwStream
from stackway.xds_server.stream import Stream

log = structlog.get_logger("stackway.xds")

#: Envoy pings its xDS connection (bootstrap: every 30 s); gRPC's default would answer with GOAWAY
#: "too_many_pings" after a few of those.
SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", -1),
]


class AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, cache: SnapshotCache) -> None:
        self.cache = cache

    async def StreamAggregatedResources(self, request_iterator: Any, context: Any) -> AsyncIterator[Message]:
        # grpc.aio serves a handler as a response stream only if it is itself an async generator function.
        async for response in self._serve(SotwStream(self.cache, _peer(context)), request_iterator):
            yield response

    async def DeltaAggregatedResources(self, request_iterator: Any, context: Any) -> AsyncIterator[Message]:
        async for response in self._serve(DeltaStream(self.cache, _peer(context)), request_iterator):
            yield response

    async def _serve(self, stream: Stream, requests: AsyncIterator[Any]) -> AsyncIterator[Message]:
        """Requests are read by a task of their own so that pushes can go out while Envoy is silent."""

        async def reader() -> None:
            try:
                async for request in requests:
                    stream.on_request(request)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug here must not leave Envoy on a half-served stream: end it, Envoy reconnects.
                log.exception("ADS stream failed", node=stream.node_id, stream=stream.kind)
            finally:
                stream.out.put_nowait(None)

        self.cache.register(stream)
        tasks = [asyncio.create_task(reader()), asyncio.create_task(stream.run_pusher())]
        try:
            while (response := await stream.out.get()) is not None:
                yield response
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self.cache.unregister(stream)


def _peer(context: Any) -> str:
    with contextlib.suppress(Exception):
        return str(context.peer())
    return ""


@dataclass(frozen=True)
class ServerTls:
    """PEM files for mutual TLS: the server's certificate and key, and the CA that client (Envoy) certificates
    must chain to. xDS carries every route and secret a gateway has, so with TLS on, a client without a valid
    certificate is refused during the handshake and never reaches the ADS handler."""

    cert_file: Path | str
    key_file: Path | str
    client_ca_file: Path | str

    def credentials(self) -> grpc.ServerCredentials:
        """Read at server start: a rotated certificate takes effect on the next start."""
        return grpc.ssl_server_credentials(
            [(Path(self.key_file).read_bytes(), Path(self.cert_file).read_bytes())],
            root_certificates=Path(self.client_ca_file).read_bytes(),
            require_client_auth=True,
        )


class XdsServer:
    """ADS on `host:port` (port 0 picks a free one; `port` tells which after start). Plaintext unless `tls`
    is given, in which case every client must present a certificate signed by `tls.client_ca_file`."""

    def __init__(
        self, cache: SnapshotCache, host: str = "127.0.0.1", port: int = 18000, *, tls: ServerTls | None = None
    ) -> None:
        self.cache = cache
        self.host = host
        self.port = port
        self.tls = tls
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server(options=SERVER_OPTIONS)
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(AdsServicer(self.cache), server)
        if self.tls is None:
            self.port = server.add_insecure_port(self.address)
        else:
            self.port = server.add_secure_port(self.address, self.tls.credentials())
        await server.start()
        self._server = server
        log.info("xDS server listening", address=self.address, mtls=self.tls is not None)

    async def stop(self, grace: float | None = 1.0) -> None:
        """Envoy keeps serving its last config while the server is away and reconnects by itself."""
        if self._server is None:
            return
        server, self._server = self._server, None
        await server.stop(grace)
        log.info("xDS server stopped", address=self.address)
