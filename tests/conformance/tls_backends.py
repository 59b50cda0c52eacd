"""TLS-serving echo pods for the tests that need them, and the EndpointSlices that link Services to them.

The harness does not emulate echo-basic Deployments that serve TLS only (`TLS_SERVER_CERT`): no HTTP test
sends them traffic, and their certificates come from Secrets the suite signs. The upstream-TLS tests
(BackendTLSPolicy, the Gateway's backend client certificate) start them here instead: each pod is an echo
backend speaking HTTPS with the certificate of the Secret its Deployment mounts, reporting the SNI it was
asked for, and optionally requiring a client certificate from a CA (`TLS_CLIENT_CACERTS`). The test's own
Services that select those pods get one EndpointSlice per pod, as the harness does for the HTTP echoes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from stackway.demo.echo import EchoServer, start_echo
from tests.conformance import manifests as m
from tests.conformance.harness import Conformance, RequestLog
from tests.conformance.pki import TLSPair


@dataclass(frozen=True)
class TLSDeployment:
    """An echo-basic Deployment serving TLS: its Secret, and the CA ConfigMap it verifies clients against."""

    namespace: str
    name: str
    secret: str
    replicas: int = 1
    client_ca: str | None = None


#: The base manifests' TLS backend that BackendTLSPolicy tests' Services select (`app: tls-backend`).
TLS_BACKEND = TLSDeployment(m.INFRA_NS, "tls-backend", "tls-checks-certificate")


def server_context(pair: TLSPair, client_ca_pem: bytes | None = None) -> ssl.SSLContext:
    """What echo-basic does with TLS_SERVER_CERT/TLS_SERVER_PRIVKEY (and TLS_CLIENT_CACERTS, which makes a
    client certificate from that CA mandatory)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as directory:
        cert, key = Path(directory, "crt"), Path(directory, "key")
        cert.write_bytes(pair.cert_pem)
        key.write_bytes(pair.key_pem)
        context.load_cert_chain(cert, key)
    if client_ca_pem is not None:
        context.load_verify_locations(cadata=client_ca_pem.decode())
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class TLSEchoPool:
    """TLS echo pods on an event loop of their own thread; what they answered goes to `log`."""

    def __init__(self, env: Conformance) -> None:
        self.env = env
        self.log = RequestLog()
        self.pods: list[m.EchoPod] = []
        self.ports: dict[str, int] = {}
        self._servers: list[EchoServer] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tls-echo-pods", daemon=True)
        self._thread.start()

    def start(self, deployment: TLSDeployment) -> list[m.EchoPod]:
        """Start the Deployment's pods with its Secret's certificate; returns them."""
        client_ca = self.env.ca(deployment.namespace, deployment.client_ca).cert_pem if deployment.client_ca else None
        context = server_context(self.env.tls_pair(deployment.namespace, deployment.secret), client_ca)
        started = []
        for replica in range(deployment.replicas):
            pod = m.EchoPod(
                deployment.namespace,
                deployment.name,
                m.pod_name(deployment.namespace, deployment.name, replica),
                (("app", deployment.name),),
            )
            coro = start_echo("127.0.0.1", 0, pod.pod, pod.namespace, pod.deployment, tls=context)
            server = asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)
            self.log.attach(server, pod)
            self._servers.append(server)
            self.ports[pod.pod] = server.port
            self.pods.append(pod)
            started.append(pod)
        return started

    def slices(self, docs: Iterable[m.Doc]) -> list[m.Doc]:
        """EndpointSlices for the Services in `docs` that select these pods."""
        return m.endpoint_slices(docs, self.pods, self.ports)

    def close(self) -> None:
        async def close_all() -> None:
            await asyncio.gather(*(s.close() for s in self._servers), return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@contextlib.contextmanager
def tls_pods(env: Conformance, *deployments: TLSDeployment) -> Iterator[TLSEchoPool]:
    """The pool with `deployments` running, closed afterwards."""
    pool = TLSEchoPool(env)
    try:
        for deployment in deployments:
            pool.start(deployment)
        yield pool
    finally:
        pool.close()


@contextlib.contextmanager
def with_slices(env: Conformance, pool: TLSEchoPool, manifest: str) -> Iterator[None]:
    """Serve EndpointSlices linking the Services of upstream manifest `manifest` to the pool's pods."""
    assert env.backend is not None
    name = f"{manifest}-tls-endpoints"
    env.backend.apply(name, pool.slices(env.test_manifests(manifest)))
    try:
        yield
    finally:
        env.backend.remove(name)
