"""Gateway API v1.6.1 TLSRoute listener conformance tests, in both modes: which listeners a TLSRoute may attach
to, the status of TLS listeners in each mode, and Terminate and Passthrough listeners sharing one port.

Requests, expectations and status assertions follow upstream's `conformance/tests/tlsroute-*.go`. The TLS
backends and the request helpers are `test_tlsroute`'s.

stackway supports TLSRoute termination and mixed Terminate/Passthrough listeners on one port, so upstream's
TLSRouteListenerTerminateNotSupported and TLSRouteListenerMixedTerminationNotSupported return without checking
anything for it. Rather than count a check that never ran, their tests here assert the supported side on the
same manifests: the listeners those tests would have rejected are Accepted and serve TLSRoutes.
"""

from __future__ import annotations

import pytest

from tests.conformance.client import Request, Target, send
from tests.conformance.harness import MODES, Conformance
from tests.conformance.manifests import GATEWAY_GROUP
from tests.conformance.status import Cond, ExpectedListener, find_object
from tests.conformance.test_tlsroute import (
    INFRA,
    TLS_ROUTE,
    expect_tls_response,
    resolved,
    route_accepted,
    tls_env,
)

__all__ = ["tls_env"]  # the fixture, imported for pytest

pytestmark = [pytest.mark.envoy, pytest.mark.parametrize("conformance", MODES, indirect=True)]

TLS_ROUTE_KINDS = [(GATEWAY_GROUP, TLS_ROUTE)]
ACCEPTED = Cond("Accepted", "True", "Accepted")


def backend_sni(target: Target, sni: str) -> str:
    """The SNI the backend's own TLS handshake saw for a request sent with `sni` ("": it spoke plaintext),
    which tells a terminated stream from a passed-through one (upstream's BackendIsTLS and Hostname)."""
    captured = send(target, Request(path="/", host=sni), sni=sni)
    assert captured.echo is not None, f"SNI {sni}: no echo from a backend: {captured.summary()}"
    return str(captured.echo.get("sni", ""))


def test_tlsroute_invalid_no_matching_listener(conformance: Conformance) -> None:
    """TLSRouteInvalidNoMatchingListener: HTTP and HTTPS listeners do not take TLSRoutes (NotAllowedByListeners),
    and a sectionName no listener has is NoMatchingParent; none of the routes gets an accepted parent."""
    passthrough_only = (INFRA, "gateway-tlsroute-tls-passthrough-only")
    http_only = (INFRA, "gateway-tlsroute-http-only")
    https_only = (INFRA, "gateway-tlsroute-https-only")
    to_http = (INFRA, "tlsroute-not-allowed-protocol-http")
    to_https = (INFRA, "tlsroute-not-allowed-protocol-https")
    no_section = (INFRA, "tlsroute-no-matching-section-name")
    not_allowed = Cond("Accepted", "False", "NotAllowedByListeners")
    with conformance.applied("tlsroute-invalid-no-matching-listener"):
        status = conformance.status
        status.route_condition(*to_http, http_only, not_allowed, kind=TLS_ROUTE)
        status.route_condition(*to_https, https_only, not_allowed, kind=TLS_ROUTE)
        status.route_condition(
            *no_section, passthrough_only, Cond("Accepted", "False", "NoMatchingParent"), kind=TLS_ROUTE
        )
        for route in (to_http, to_https, no_section):
            status.route_no_accepted_parents(*route, kind=TLS_ROUTE)
        status.gateway_zero_routes(*http_only)
        status.gateway_zero_routes(*https_only)


def test_tlsroute_listener_passthrough_supported_kinds(conformance: Conformance) -> None:
    """TLSRouteListenerPassthroughSupportedKinds: of the kinds TCPRoute and TLSRoute, a Passthrough listener
    supports only TLSRoute, and says so with ResolvedRefs=False/InvalidRouteKinds."""
    gateway = (INFRA, "gateway-tlsroute-passthrough-supported-kind")
    want = [Cond("ResolvedRefs", "False", "InvalidRouteKinds")]
    with conformance.applied("tlsroute-listener-passthrough-supported-kinds"):
        conformance.status.gateway_listeners(*gateway, [ExpectedListener("tls-passthrough", 0, want, TLS_ROUTE_KINDS)])
        found = find_object(conformance.status.fetch(), "Gateway", *gateway)
        assert found is not None
        kinds = [k.get("kind") for k in found["status"]["listeners"][0].get("supportedKinds") or []]
        assert kinds == [TLS_ROUTE], f"supportedKinds {kinds}: only TLSRoute is supported"


def test_tlsroute_listener_terminate_supported_kinds(conformance: Conformance) -> None:
    """TLSRouteListenerTerminateSupportedKinds: a TLS listener in mode Terminate is Accepted and supports
    TLSRoute."""
    gateway = (INFRA, "gateway-tlsroute-terminate-supported")
    with conformance.applied("tlsroute-listener-terminate-supported-kinds"):
        conformance.status.gateway_listeners(
            *gateway, [ExpectedListener("tls-terminate", 0, [ACCEPTED], TLS_ROUTE_KINDS)]
        )


def test_tlsroute_listener_terminate_not_supported(conformance: Conformance) -> None:
    """TLSRouteListenerTerminateNotSupported, for an implementation that supports termination: upstream checks
    nothing then, so this asserts that the listener it would reject (UnsupportedValue) is Accepted instead."""
    gateway = (INFRA, "gateway-tlsroute-terminate-unsupported")
    with conformance.applied("tlsroute-listener-terminate-not-supported"):
        conformance.status.gateway_listeners(
            *gateway, [ExpectedListener("tls-terminate", 0, [ACCEPTED], TLS_ROUTE_KINDS)]
        )


def test_tlsroute_listener_mixed_termination_not_supported(conformance: Conformance) -> None:
    """TLSRouteListenerMixedTerminationNotSupported, for an implementation that supports mixed termination:
    upstream checks nothing then, so this asserts that the Terminate and Passthrough listeners sharing port
    8443 are both Accepted rather than in ProtocolConflict."""
    gateway = (INFRA, "gateway-tlsroute-mixed-termination-not-supported")
    with conformance.applied("tlsroute-listener-mixed-termination-not-supported"):
        conformance.status.gateway_listeners(
            *gateway,
            [
                ExpectedListener("tls-terminate", 0, [ACCEPTED], TLS_ROUTE_KINDS),
                ExpectedListener("tls-passthrough", 0, [ACCEPTED], TLS_ROUTE_KINDS),
            ],
        )


def test_tlsroute_mixed_termination_same_namespace(tls_env: Conformance) -> None:
    """TLSRouteMixedTerminationSameNamespace: on one port, SNI tls.example.com is terminated by the Gateway
    (its own certificate) and reaches tcp-backend's plain port, while SNI abc.example.com is passed through to
    tcp-backend's TLS port (the backend's certificate)."""
    gateway = (INFRA, "gateway-tlsroute-mixed-termination")
    terminate = (INFRA, "gateway-conformance-mixed-terminateroute")
    passthrough = (INFRA, "gateway-conformance-mixed-passthroughroute")
    with tls_env.applied("tlsroute-mixed-termination-same-namespace"):
        route_accepted(tls_env, gateway, passthrough)
        tls_env.status.gateway_listeners(
            *gateway,
            [
                ExpectedListener("tls-terminate", 1, [ACCEPTED], TLS_ROUTE_KINDS),
                ExpectedListener("tls-passthrough", 1, [ACCEPTED], TLS_ROUTE_KINDS),
            ],
        )
        route_accepted(tls_env, gateway, terminate)
        resolved(tls_env, gateway, terminate, passthrough)
        address = tls_env.book.address(*gateway)
        gateway_cert = tls_env.tls_pair(INFRA, "tls-terminate-checks-certificate").cert_pem
        terminated = Target(address, 8883, "https", gateway_cert)
        expect_tls_response(terminated, "tls.example.com", "tcp-backend")
        assert backend_sni(terminated, "tls.example.com") == "", "the terminated stream reached a TLS port"
        backend_cert = tls_env.tls_pair(INFRA, "tls-passthrough-checks-certificate").cert_pem
        passed_through = Target(address, 8883, "https", backend_cert)
        expect_tls_response(passed_through, "abc.example.com", "tcp-backend")
        assert backend_sni(passed_through, "abc.example.com") == "abc.example.com"
