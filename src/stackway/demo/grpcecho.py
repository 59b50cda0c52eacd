"""A gRPC echo backend that answers like the Gateway API conformance suite's echo-basic in gRPC mode.

GRPCRoute conformance decides where a call went by reading the answer: which pod and namespace served it,
and which fully qualified method reached it. Method matches in upstream's manifests name
`gateway_api_conformance.echo_basic.grpcecho.GrpcEcho`, so the service here has that exact name, and its
messages the same fields (`proto/grpcecho.proto`): a client written for upstream's server works against this
one and the other way round.

`Echo` and `EchoTwo` answer with the call's method, its metadata and the serving pod's identity; `EchoThree`
is declared in the proto but deliberately not served, so calling it ends UNIMPLEMENTED, as upstream's does.

The service is registered with grpc's generic handlers around the generated message classes, rather than
generated servicer stubs, to keep a typed API and a single generated module. Python's grpc server does not
expose a call's `:authority`, so `Assertions.authority` stays empty; the metadata (`headers`) is complete.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from stackway.demo.echo import EchoIdentity
from stackway.demo.proto.grpcecho_pb2 import Assertions, Context, EchoRequest, EchoResponse, Header

__all__ = [
    "SERVED_METHODS",
    "SERVICE",
    "EchoRequest",
    "EchoResponse",
    "GrpcEchoServer",
    "call_echo",
    "full_method",
    "start_grpc_echo",
]

#: The fully qualified service name, from the proto's package and service.
SERVICE = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho"
#: Methods that answer; every other method of the service (EchoThree) ends UNIMPLEMENTED.
SERVED_METHODS = ("Echo", "EchoTwo")

#: Called after each answer with the method name and the response, e.g. to keep a log of who served what.
AnswerHook = Callable[[str, EchoResponse], None]


def full_method(method: str) -> str:
    """`/package.Service/Method`, the HTTP/2 path of a call and what GRPCRoute method matches compare."""
    return f"/{SERVICE}/{method}"


def _text(value: str | bytes) -> str:
    """Metadata values are str, or bytes for `-bin` keys; the echo carries text either way."""
    return value if isinstance(value, str) else value.hex()


@dataclass(eq=False)
class GrpcEchoServer:
    """A running gRPC echo backend on host:port; `await close()` stops it."""

    host: str
    port: int
    identity: EchoIdentity
    on_answer: AnswerHook | None = None
    _server: grpc.aio.Server | None = None
    _context: Context = field(default_factory=Context)

    def __post_init__(self) -> None:
        self._context = Context(
            namespace=self.identity.namespace,
            ingress=self.identity.ingress,
            service_name=self.identity.service,
            pod=self.identity.pod,
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def answer(self, method: str, metadata: Sequence[tuple[str, str | bytes]]) -> EchoResponse:
        """The echo of one call: its method and metadata, and this backend's identity."""
        response = EchoResponse(
            assertions=Assertions(
                fully_qualified_method=full_method(method),
                headers=[Header(key=key, value=_text(value)) for key, value in metadata],
                context=self._context,
            ),
            request=EchoRequest(),
        )
        if self.on_answer is not None:
            self.on_answer(method, response)
        return response

    def _handler(self, method: str) -> grpc.RpcMethodHandler:
        async def unary(request: EchoRequest, context: grpc.aio.ServicerContext[Any, Any]) -> EchoResponse:
            return self.answer(method, tuple(context.invocation_metadata() or ()))

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=EchoRequest.FromString,
            response_serializer=EchoResponse.SerializeToString,
        )

    async def close(self) -> None:
        """Stop at once: in-flight calls are cancelled (tests stop backends between runs, not mid-call)."""
        if self._server is not None:
            await self._server.stop(0)

    async def __aenter__(self) -> GrpcEchoServer:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


async def start_grpc_echo(
    host: str, port: int, pod: str, namespace: str, service: str = "", *, on_answer: AnswerHook | None = None
) -> GrpcEchoServer:
    """Start a plaintext (h2c) gRPC echo on host:port (port 0 picks a free one; read it back from `.port`)."""
    echo = GrpcEchoServer(host, port, EchoIdentity(pod=pod, namespace=namespace, service=service), on_answer)
    handlers = {method: echo._handler(method) for method in SERVED_METHODS}
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    echo.port = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    echo._server = server
    return echo


def call_echo(
    channel: grpc.Channel,
    method: str,
    metadata: Sequence[tuple[str, str]] = (),
    timeout: float | None = None,
) -> EchoResponse:
    """Call `method` (Echo, EchoTwo or EchoThree) of the echo service on a synchronous channel.

    Failures raise `grpc.RpcError`, whose `code()` is the call's status (UNIMPLEMENTED for EchoThree, or
    when no route matched: a gateway's 404 reaches gRPC clients as UNIMPLEMENTED).
    """
    stub = channel.unary_unary(
        full_method(method),
        request_serializer=EchoRequest.SerializeToString,
        response_deserializer=EchoResponse.FromString,
    )
    response: EchoResponse = stub(EchoRequest(), metadata=tuple(metadata), timeout=timeout)
    return response
