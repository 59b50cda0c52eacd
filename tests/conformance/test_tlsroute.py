"""Gateway API v1.6.1 TLSRoute conformance tests, one per upstream test, in both modes: through a real
`stackway up`, and through `stackway serve` with its Envoy against the (fake) Kubernetes API.

Requests, expectations and status assertions follow upstream's `conformance/tests/tlsroute-*.go`.

The base manifests' TLS backends (`tls-backend`, `tls-backend-2` and `tcp-backend`) are echo-basic serving
HTTPS with a Secret of the suite, which the harness's plain echo pods do not stand in for. This module starts
them itself, each HTTPS backend with the certificate its Deployment mounts, and gives their Services the
EndpointSlices a cluster would. A passthrough request then proves two things: the handshake presents that
backend's certificate (the Gateway did not terminate), and the request inside reaches the expected pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stackway.demo.echo import EchoServer, start_echo
from tests.conformance.client import Case, Expect, Request, Target, eventually
from tests.conformance.harness import MODES, Conformance
from tests.conformance.manifests import Doc, TLSPair, pod_name
from tests.conformance.status import Cond

pytestmark = [pytest.mark.envoy, pytest.mark.parametrize("conformance", MODES, indirect=True)]

INFRA = "gateway-conformance-infra"
APP = "gateway-conformance-app-backend"
TLS_ROUTE = "TLSRoute"
REQUEST_TIMEOUT = 60.0
HANDSHAKE_TIMEOUT = 5.0


@dataclass(frozen=True)
class TLSBackend:
    """A Deployment of the base manifests that serves TLS: which Secret it mounts, and its Service's ports.

    `ports` maps a Service port name to whether that port speaks TLS (tcp-backend has a plain and a TLS one).
    """

    namespace: str
    deployment: str
    replicas: int
    secret: str
    ports: tuple[tuple[str, bool], ...]


TLS_BACKENDS = (
    TLSBackend(INFRA, "tls-backend", 1, "tls-checks-certificate", (("", True),)),
    TLSBackend(INFRA, "tls-backend-2", 1, "tls-checks-certificate", (("", True),)),
    TLSBackend(APP, "tls-backend", 1, "tls-passthrough-checks-certificate", (("", True),)),
    TLSBackend(
        INFRA,
        "tcp-backend",
        2,
        "tls-passthrough-checks-certificate",
        (("echo-tcp-plain", False), ("echo-tcp-tls", True)),
    ),
)


def server_context(pair: TLSPair) -> ssl.SSLContext:
    """What echo-basic does with TLS_SERVER_CERT/TLS_SERVER_PRIVKEY: serve that certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as directory:
        cert, key = Path(directory, "crt"), Path(directory, "key")
        cert.write_bytes(pair.cert_pem)
        key.write_bytes(pair.key_pem)
        context.load_cert_chain(cert, key)
    return context


class TLSBackendPool:
    """The TLS-serving echo pods on an event loop of their own thread, and the EndpointSlices that find them."""

    def __init__(self, env: Conformance) -> None:
        self.env = env
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tls-echo-backends", daemon=True)
        self._thread.start()
        self.servers: list[EchoServer] = []

    def _start(self, pod: str, backend: TLSBackend, tls: ssl.SSLContext | None) -> int:
        coro = start_echo("127.0.0.1", 0, pod, backend.namespace, backend.deployment, tls=tls)
        server = asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)
        self.servers.append(server)
        return server.port

    def start(self) -> list[Doc]:
        """Start every pod; returns the EndpointSlices of their Services (one per pod, as the harness does)."""
        slices: list[Doc] = []
        for backend in TLS_BACKENDS:
            context = server_context(self.env.tls_pair(backend.namespace, backend.secret))
            for replica in range(backend.replicas):
                pod = pod_name(backend.namespace, backend.deployment, replica)
                ports = [(name, self._start(pod, backend, context if tls else None)) for name, tls in backend.ports]
                slices.append(
                    {
                        "apiVersion": "discovery.k8s.io/v1",
                        "kind": "EndpointSlice",
                        "metadata": {
                            "name": f"{backend.deployment}-tls-{pod.rsplit('-', 1)[-1]}",
                            "namespace": backend.namespace,
                            "labels": {"kubernetes.io/service-name": backend.deployment},
                        },
                        "addressType": "IPv4",
                        "endpoints": [
                            {
                                "addresses": ["127.0.0.1"],
                                "conditions": {"ready": True, "serving": True, "terminating": False},
                                "targetRef": {"kind": "Pod", "namespace": backend.namespace, "name": pod},
                            }
                        ],
                        "ports": [{"name": name, "protocol": "TCP", "port": port} for name, port in ports],
                    }
                )
        return slices

    def close(self) -> None:
        async def close_all() -> None:
            await asyncio.gather(*(s.close() for s in self.servers), return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture
def tls_env(conformance: Conformance) -> Iterator[Conformance]:
    """The conformance environment with the TLS backends running and their EndpointSlices served."""
    assert conformance.backend is not None
    pool = TLSBackendPool(conformance)
    try:
        conformance.backend.apply("tls-backends", pool.start())
        yield conformance
    finally:
        conformance.backend.remove("tls-backends")
        pool.close()


# ---------------------------------------------------------------------------------------------------------
# Requests


def handshake(address: str, port: int, sni: str, ca_pem: bytes | None = None) -> bytes:
    """One TLS handshake with `sni`; the DER certificate the other end presented (verified against `ca_pem`)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    if ca_pem is None:
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cadata=ca_pem.decode())
    with (
        socket.create_connection((address, port), timeout=HANDSHAKE_TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=sni) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def pem_to_der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode())


def expect_tls_response(
    target: Target, sni: str, backend: str, namespace: str = INFRA, cert_pem: bytes | None = None
) -> None:
    """Upstream's MakeTLSRequestAndExpectEventuallyConsistentResponse: an HTTPS request with `sni` (and Host)
    reaches a pod of `backend`, over a handshake that presents `cert_pem` (default: the target's CA itself)."""
    case = Case(Request(path="/", host=sni), Expect(backend=backend, namespace=namespace))
    error = eventually(target, case, sni=sni, timeout=REQUEST_TIMEOUT)
    assert error is None, error
    presented = handshake(target.address, target.port, sni, target.ca_pem)
    wanted = cert_pem if cert_pem is not None else target.ca_pem
    assert wanted is not None
    assert presented == pem_to_der(wanted), f"SNI {sni}: the handshake presented another certificate"


def expect_connection_refused(address: str, port: int, sni: str, timeout: float = REQUEST_TIMEOUT) -> None:
    """Upstream's MakeTLSRequestAndExpectEventuallyConnectionReset: the handshake with `sni` fails, and keeps
    failing (three times in a row)."""
    deadline = time.monotonic() + timeout
    failures, last = 0, "no attempt yet"
    while failures < 3:
        try:
            handshake(address, port, sni)
        except OSError:  # reset, EOF or an SSL alert: no backend answered
            failures += 1
            continue
        else:
            failures, last = 0, "the handshake succeeded"
        if time.monotonic() > deadline:
            raise AssertionError(f"SNI {sni} to {address}:{port}: not refused within {timeout:.0f}s: {last}")
        time.sleep(0.5)
    assert failures == 3


def route_accepted(env: Conformance, gateway: tuple[str, str], *routes: tuple[str, str]) -> None:
    """GatewayAndTLSRoutesMustBeAccepted."""
    env.status.gateway_and_routes_accepted(gateway, env.book.address(*gateway), routes, kind=TLS_ROUTE)


def resolved(env: Conformance, gateway: tuple[str, str], *routes: tuple[str, str]) -> None:
    """TLSRouteMustHaveResolvedRefsConditionsTrue, for each route."""
    for route in routes:
        env.status.route_resolved_refs(*route, gateway, kind=TLS_ROUTE)


# ---------------------------------------------------------------------------------------------------------
# Tests


def test_tlsroute_simple_same_namespace(tls_env: Conformance) -> None:
    """TLSRouteSimpleSameNamespace: the route's only hostname, passed through to tcp-backend's TLS port."""
    gateway = (INFRA, "gateway-tlsroute")
    route = (INFRA, "gateway-conformance-infra-test")
    with tls_env.applied("tlsroute-simple-same-namespace"):
        route_accepted(tls_env, gateway, route)
        cert = tls_env.tls_pair(INFRA, "tls-passthrough-checks-certificate").cert_pem
        target = Target(tls_env.book.address(*gateway), 443, "https", cert)
        expect_tls_response(target, "abc.example.com", "tcp-backend")


HOSTNAME_INTERSECTION = (
    # gateway, its routes, an SNI that must reach backend 2 (None: none does), the SNI that must be reset
    ("gw-tlsroute-exact-hostname-x-1", ("tlsroute-more-specific-wc-hostname-x-1",), None, "non.matching.com"),
    (
        "gw-tlsroute-more-specific-wc-hostname-x-2",
        ("tlsroute-exact-hostname-x-2", "tlsroute-less-specific-wc-hostname-x-2"),
        "other.example.com",
        "non.matching.com",
    ),
    (
        "gw-tlsroute-less-specific-wc-hostname-x-3",
        ("tlsroute-exact-hostname-x-3", "tlsroute-more-specific-wc-hostname-x-3"),
        "other.example.com",
        "non.matching.com",
    ),
    (
        "gw-tlsroute-empty-hostname-x-4",
        ("tlsroute-exact-hostname-x-4", "tlsroute-less-specific-wc-hostname-x-4"),
        "other.example.com",
        "non.matching.org",
    ),
)


def test_tlsroute_hostname_intersection(tls_env: Conformance) -> None:
    """TLSRouteHostnameIntersection: routes attach where hostnames intersect, and serve only the intersection."""
    pair = tls_env.tls_pair(INFRA, "tls-checks-certificate")  # signed by the suite's CA
    failures: list[str] = []
    with tls_env.applied("tlsroute-hostname-intersection"):
        for gw_name, route_names, other_sni, reset_sni in HOSTNAME_INTERSECTION:
            gateway = (INFRA, gw_name)
            routes = [(INFRA, r) for r in route_names]
            try:
                route_accepted(tls_env, gateway, *routes)
                resolved(tls_env, gateway, *routes)
                target = Target(tls_env.book.address(*gateway), 443, "https", pair.trust_pem)
                expect_tls_response(target, "abc.example.com", "tls-backend", cert_pem=pair.cert_pem)
                if other_sni is not None:
                    expect_tls_response(target, other_sni, "tls-backend-2", cert_pem=pair.cert_pem)
                expect_connection_refused(target.address, target.port, reset_sni)
            except AssertionError as exc:
                failures.append(f"[{gw_name}] {exc}")
    assert not failures, "\n".join(failures)


def test_tlsroute_invalid_backendref_nonexistent(tls_env: Conformance) -> None:
    """TLSRouteInvalidBackendRefNonexistent: Accepted, but ResolvedRefs=False/BackendNotFound."""
    gateway = (INFRA, "gateway-tlsroute-invalid-backend-ref-nonexistent")
    route = (INFRA, "invalid-backend-ref-nonexistent")
    with tls_env.applied("tlsroute-invalid-backendref-nonexistent"):
        route_accepted(tls_env, gateway, route)
        tls_env.status.route_condition(
            *route, gateway, Cond("ResolvedRefs", "False", "BackendNotFound"), kind=TLS_ROUTE
        )


def test_tlsroute_invalid_backendref_unknown_kind(tls_env: Conformance) -> None:
    """TLSRouteInvalidBackendRefUnknownKind: Accepted, but ResolvedRefs=False/InvalidKind."""
    gateway = (INFRA, "gateway-tlsroute-invalid-backend-ref-unknown-kind")
    route = (INFRA, "invalid-backend-ref-unknown-kind")
    with tls_env.applied("tlsroute-invalid-backendref-unknown-kind"):
        route_accepted(tls_env, gateway, route)
        tls_env.status.route_condition(*route, gateway, Cond("ResolvedRefs", "False", "InvalidKind"), kind=TLS_ROUTE)


def test_tlsroute_invalid_no_matching_listener_hostname(tls_env: Conformance) -> None:
    """TLSRouteInvalidNoMatchingListenerHostname: Accepted=False/NoMatchingListenerHostname, nothing attached."""
    exact = (INFRA, "gateway-tls-exact-hostname")
    wildcard = (INFRA, "gateway-tls-wildcard-hostname")
    route1 = (INFRA, "tlsroute-hostname-mismatch-1")
    route2 = (INFRA, "tlsroute-hostname-mismatch-2")
    want = Cond("Accepted", "False", "NoMatchingListenerHostname")
    with tls_env.applied("tlsroute-invalid-no-matching-listener-hostname"):
        tls_env.status.route_condition(*route1, exact, want, kind=TLS_ROUTE)
        tls_env.status.route_condition(*route2, wildcard, want, kind=TLS_ROUTE)
        tls_env.status.route_no_accepted_parents(*route1, kind=TLS_ROUTE)
        tls_env.status.route_no_accepted_parents(*route2, kind=TLS_ROUTE)
        tls_env.status.gateway_zero_routes(*exact)
        tls_env.status.gateway_zero_routes(*wildcard)


def test_tlsroute_invalid_reference_grant(tls_env: Conformance) -> None:
    """TLSRouteInvalidReferenceGrant: no ReferenceGrant covers the Service, so ResolvedRefs=False/RefNotPermitted."""
    gateway = (INFRA, "gateway-tlsroute-referencegrant")
    route = (INFRA, "gateway-conformance-infra-test")
    with tls_env.applied("tlsroute-invalid-reference-grant"):
        route_accepted(tls_env, gateway, route)
        tls_env.status.route_condition(
            *route, gateway, Cond("ResolvedRefs", "False", "RefNotPermitted"), kind=TLS_ROUTE
        )
        # and the Service in the other namespace is not reached through it
        expect_connection_refused(tls_env.book.address(*gateway), 443, "abc.example.com")


def test_tlsroute_terminate_simple_same_namespace(tls_env: Conformance) -> None:
    """TLSRouteTerminateSimpleSameNamespace: the Gateway terminates TLS with its own certificate and forwards
    the plain stream to tcp-backend's plain port."""
    gateway = (INFRA, "gateway-tlsroute-terminate")
    route = (INFRA, "tlsroute-terminated-test")
    with tls_env.applied("tlsroute-terminate-simple-same-namespace"):
        route_accepted(tls_env, gateway, route)
        resolved(tls_env, gateway, route)
        cert = tls_env.tls_pair(INFRA, "tls-terminate-checks-certificate").cert_pem
        target = Target(tls_env.book.address(*gateway), 8443, "https", cert)
        expect_tls_response(target, "tls.example.com", "tcp-backend")
