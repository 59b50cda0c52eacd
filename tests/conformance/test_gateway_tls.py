"""Gateway API v1.6.1 Gateway TLS conformance tests, one per upstream test, in both modes: through a real
`stackway up`, and through `stackway serve` with its Envoy against the (fake) Kubernetes API.

Status assertions and requests follow upstream's `conformance/tests/gateway-*.go` for listener certificates
(Secrets across namespaces through ReferenceGrants, invalid certificate references), frontend client
certificate validation (mTLS at the listener: a default CA, a per-port CA, AllowInsecureFallback, invalid
CA references) and the Gateway's backend client certificate (spec.tls.backend). The certificates and CAs
are the suite's (see `pki`): clients present the `tls-validity-checks[-per-port]-client-certificate`
Secrets, signed by the CAs the Gateways' validation names, and the Gateway presents
`tls-checks-client-certificate` to a backend that requires a certificate from the suite's CA.

Upstream checks only the status of the certificate-reference tests; these tests also check what Envoy serves
on the listener's port (own checks): the referenced certificate where the listener is programmed, no TLS at
all where it is not.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time

import pytest

from tests.conformance.client import (
    REQUEST_TIMEOUT,
    Case,
    Expect,
    ExpectedRequest,
    Request,
    Target,
    eventually,
    send,
)
from tests.conformance.harness import MODES, Conformance
from tests.conformance.status import Cond, ExpectedListener
from tests.conformance.tls_backends import TLSDeployment, tls_pods, with_slices

pytestmark = [pytest.mark.envoy, pytest.mark.parametrize("conformance", MODES, indirect=True)]

INFRA = "gateway-conformance-infra"
WEB = "gateway-conformance-web-backend"
V1, V2 = "infra-backend-v1", "infra-backend-v2"
TIMEOUT = 60.0
HANDSHAKE_TIMEOUT = 5.0
HTTPROUTE_KINDS = [("gateway.networking.k8s.io", "HTTPRoute")]


def presented_certificate(address: str, port: int, sni: str) -> bytes:
    """The DER certificate a TLS handshake with `sni` gets (no verification: the caller compares it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((address, port), timeout=HANDSHAKE_TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=sni) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def serves_certificate(env: Conformance, gateway: tuple[str, str], pem: bytes, sni: str = "example.com") -> None:
    """Own check: the listener on port 443 is programmed and presents `pem`, consistently."""
    address, want = env.book.address(*gateway), ssl.PEM_cert_to_DER_cert(pem.decode())
    deadline, in_a_row, last = time.monotonic() + TIMEOUT, 0, "no handshake yet"
    while in_a_row < 3:
        try:
            got = presented_certificate(address, 443, sni)
            in_a_row, last = (in_a_row + 1, "") if got == want else (0, "another certificate")
        except OSError as exc:
            in_a_row, last = 0, f"{type(exc).__name__}: {exc}"
        if in_a_row < 3:
            assert time.monotonic() < deadline, f"{gateway} does not present the certificate on 443: {last}"
            time.sleep(0.25)


def serves_no_tls(env: Conformance, gateway: tuple[str, str], sni: str = "example.com") -> None:
    """Own check: nothing completes a TLS handshake on the Gateway's port 443 (three tries, a while apart)."""
    address = env.book.address(*gateway)
    for attempt in range(3):
        try:
            presented_certificate(address, 443, sni)
        except OSError:  # refused, reset, or a failed handshake
            time.sleep(0.2)
            continue
        pytest.fail(f"{gateway}: a TLS handshake on 443 succeeded (attempt {attempt + 1})")


def rejected(target: Target, request: Request, sni: str) -> None:
    """Upstream's MakeTLSRequestAndExpectFailureResponse: the request gets no HTTP answer (the handshake or
    the connection fails), three times in a row."""
    deadline, in_a_row, last = time.monotonic() + TIMEOUT, 0, "no attempt yet"
    while in_a_row < 3:
        try:
            captured = send(target, request, sni=sni, timeout=REQUEST_TIMEOUT)
            in_a_row, last = 0, f"answered {captured.summary()}"
        except (OSError, http.client.HTTPException) as exc:
            in_a_row, last = in_a_row + 1, f"{type(exc).__name__}: {exc}"
            continue
        assert time.monotonic() < deadline, (
            f"{request.describe()} via {sni}: not rejected within {TIMEOUT:.0f}s: {last}"
        )
        time.sleep(0.25)


def reaches(target: Target, host: str, backend: str) -> None:
    """The request for `host` (SNI and Host) reaches a pod of `backend`, consistently."""
    case = Case(Request(path="/", host=host), Expect(backend=backend, namespace=INFRA))
    error = eventually(target, case, sni=host, timeout=TIMEOUT)
    assert error is None, error


# ---------------------------------------------------------------------------------------------------------
# Listener certificates


def test_gateway_secret_invalid_reference_grant(conformance: Conformance) -> None:
    """GatewaySecretInvalidReferenceGrant: ReferenceGrants that each miss in one way (namespace, from group,
    kind or namespace, to group, kind or name) permit nothing: ResolvedRefs=False/RefNotPermitted."""
    gateway = (INFRA, "gateway-secret-invalid-reference-grant")
    with conformance.applied("gateway-secret-invalid-reference-grant"):
        want = [Cond("ResolvedRefs", "False", "RefNotPermitted")]
        conformance.status.gateway_listeners(*gateway, [ExpectedListener("https", 0, want, HTTPROUTE_KINDS)])
        serves_no_tls(conformance, gateway)


def test_gateway_secret_missing_reference_grant(conformance: Conformance) -> None:
    """GatewaySecretMissingReferenceGrant: a Secret in another namespace without any ReferenceGrant."""
    gateway = (INFRA, "gateway-secret-missing-reference-grant")
    with conformance.applied("gateway-secret-missing-reference-grant"):
        want = [Cond("ResolvedRefs", "False", "RefNotPermitted")]
        conformance.status.gateway_listeners(*gateway, [ExpectedListener("https", 0, want, HTTPROUTE_KINDS)])
        serves_no_tls(conformance, gateway)


@pytest.mark.parametrize(
    "manifest",
    ["gateway-secret-reference-grant-all-in-namespace", "gateway-secret-reference-grant-specific"],
)
def test_gateway_secret_reference_grant(conformance: Conformance, manifest: str) -> None:
    """GatewaySecretReferenceGrantAllInNamespace and GatewaySecretReferenceGrantSpecific: a ReferenceGrant for
    every Secret of the namespace, or for that one, lets the listener use it: Programmed, ResolvedRefs."""
    gateway = (INFRA, manifest)
    with conformance.applied(manifest):
        want = [Cond("Programmed", "True", "Programmed"), Cond("ResolvedRefs", "True")]
        conformance.status.gateway_listeners(*gateway, [ExpectedListener("https", 0, want, HTTPROUTE_KINDS)])
        serves_certificate(conformance, gateway, conformance.tls_pair(WEB, "certificate").cert_pem)


INVALID_TLS_GATEWAYS = (
    "gateway-certificate-nonexistent-secret",
    "gateway-certificate-unsupported-group",
    "gateway-certificate-unsupported-kind",
    "gateway-certificate-malformed-secret",
)


def test_gateway_invalid_tls_configuration(conformance: Conformance) -> None:
    """GatewayInvalidTLSConfiguration: a missing Secret, a reference of another group or kind, and a Secret
    whose certificate and key are not PEM: ResolvedRefs=False/InvalidCertificateRef, no TLS served."""
    with conformance.applied("gateway-invalid-tls-configuration"):
        want = [Cond("ResolvedRefs", "False", "InvalidCertificateRef")]
        for name in INVALID_TLS_GATEWAYS:
            conformance.status.gateway_listeners(INFRA, name, [ExpectedListener("https", 0, want, HTTPROUTE_KINDS)])
        for name in INVALID_TLS_GATEWAYS:
            serves_no_tls(conformance, (INFRA, name))


# ---------------------------------------------------------------------------------------------------------
# Frontend client-certificate validation


def mtls_targets(env: Conformance, gateway: tuple[str, str]) -> dict[str, dict[str, Target]]:
    """Per port (443: default validation, 8443: per-port validation), a target for each client identity."""
    server = env.tls_pair(INFRA, "tls-validity-checks-certificate").trust_pem
    clients = {
        "default": env.tls_pair(INFRA, "tls-validity-checks-client-certificate"),
        "per-port": env.tls_pair(INFRA, "tls-validity-checks-per-port-client-certificate"),
    }
    address = env.book.address(*gateway)
    return {
        port: {
            "none": Target(address, int(port), "https", server),
            **{
                name: Target(address, int(port), "https", server, client_cert=(pair.cert_pem, pair.key_pem))
                for name, pair in clients.items()
            },
        }
        for port in ("443", "8443")
    }


def routes_accepted(env: Conformance, gateway: tuple[str, str], *routes: str) -> None:
    env.status.gateway_and_routes_accepted(gateway, env.book.address(*gateway), [(INFRA, r) for r in routes])
    for route in routes:
        env.status.route_resolved_refs(INFRA, route, gateway)


def test_gateway_frontend_client_certificate_validation(conformance: Conformance) -> None:
    """GatewayFrontendClientCertificateValidation: port 443 accepts only clients with a certificate from the
    default CA, port 8443 only clients with one from its per-port CA."""
    gateway = (INFRA, "client-validation-default")
    with conformance.applied("gateway-with-clientcertificate-validation"):
        routes_accepted(
            conformance,
            gateway,
            "client-certificate-validation-https-test",
            "client-certificate-validation-https-test-no-hostname",
        )
        targets = mtls_targets(conformance, gateway)
        reaches(targets["443"]["default"], "example.org", V1)
        rejected(targets["443"]["per-port"], Request(host="example.org"), "example.org")
        reaches(targets["8443"]["per-port"], "second-example.org", V2)
        rejected(targets["8443"]["default"], Request(host="second-example.org"), "second-example.org")
        # own check: no certificate at all is refused too
        rejected(targets["443"]["none"], Request(host="example.org"), "example.org")


def test_gateway_frontend_client_certificate_validation_insecure_fallback(conformance: Conformance) -> None:
    """GatewayFrontendClientCertificateValidationInsecureFallback: with AllowInsecureFallback any client gets
    in, with the matching certificate, another CA's, or none; the Gateway says it is insecure."""
    gateway = (INFRA, "client-validation-insecure-fallback")
    with conformance.applied("gateway-with-clientcertificate-validation-insecure-fallback"):
        routes_accepted(
            conformance,
            gateway,
            "client-cert-validation-insecure-fallback-test",
            "client-cert-validation-insecure-fallback-test-no-hostname",
        )
        conformance.status.gateway_condition(
            *gateway, Cond("InsecureFrontendValidationMode", "True", "ConfigurationChanged")
        )
        targets = mtls_targets(conformance, gateway)
        for client in ("default", "per-port", "none"):
            reaches(targets["443"][client], "example.org", V1)
            reaches(targets["8443"][client], "second-example.org", V2)


def test_gateway_frontend_invalid_default_client_certificate_validation(conformance: Conformance) -> None:
    """GatewayFrontendInvalidDefaultClientCertificateValidation: a default CA that does not exist takes the
    HTTPS listener out (ResolvedRefs=False/InvalidCACertificateRef, Accepted=False/NoValidCACertificate, not
    Programmed, no TLS served), while the HTTP listener, which client validation does not concern, serves."""
    gateway = (INFRA, "invalid-default-client-validation-config")
    with conformance.applied("gateway-invalid-default-frontend-client-certificate-validation"):
        conformance.status.gateway_address(*gateway, conformance.book.address(*gateway))
        ok = [Cond("ResolvedRefs"), Cond("Accepted"), Cond("Programmed")]
        conformance.status.gateway_listener_conditions(*gateway, "http", ok)
        reaches(conformance.gateway(*gateway), "example.org", V1)
        broken = [
            Cond("ResolvedRefs", "False", "InvalidCACertificateRef"),
            Cond("Accepted", "False", "NoValidCACertificate"),
            Cond("Programmed", "False"),
        ]
        conformance.status.gateway_listener_conditions(*gateway, "https", broken)
        server = conformance.tls_pair(INFRA, "tls-validity-checks-certificate").trust_pem
        https = conformance.gateway(*gateway, port=443, scheme="https", ca_pem=server)
        rejected(https, Request(host="example.org"), "example.org")


INVALID_CLIENT_VALIDATION_LISTENERS = [
    ("https", [Cond("ResolvedRefs"), Cond("Accepted"), Cond("Programmed")]),
    (
        "https-unresolved",
        [
            Cond("ResolvedRefs", "False", "InvalidCACertificateRef"),
            Cond("Accepted", "False", "NoValidCACertificate"),
            Cond("Programmed", "False"),
        ],
    ),
    (
        "https-invalid-kind",
        [
            Cond("ResolvedRefs", "False", "InvalidCACertificateKind"),
            Cond("Accepted", "False", "NoValidCACertificate"),
            Cond("Programmed", "False"),
        ],
    ),
    (
        "https-grant-missing",
        [
            Cond("ResolvedRefs", "False", "RefNotPermitted"),
            Cond("Accepted", "False", "NoValidCACertificate"),
            Cond("Programmed", "False"),
        ],
    ),
]


def test_gateway_invalid_frontend_client_certificate_validation(conformance: Conformance) -> None:
    """GatewayInvalidFrontendClientCertificateValidation: each listener's own CA problem (a missing ConfigMap,
    a Service, a ConfigMap in another namespace without a ReferenceGrant) shows on that listener only."""
    gateway = (INFRA, "gateway-with-invalid-client-cert-validation")
    with conformance.applied("gateway-with-invalid-clientcertificate-validation"):
        for listener, conditions in INVALID_CLIENT_VALIDATION_LISTENERS:
            conformance.status.gateway_listener_conditions(*gateway, listener, conditions)


# ---------------------------------------------------------------------------------------------------------
# HTTPS listeners sharing a port

MISDIRECTED_CASES = [
    # SNI, Host, status, backend
    ("example.org", "example.org", 200, V1),
    ("example.org", "second-example.org", 421, ""),
    ("example.org", "unknown-example.org", 404, ""),
    ("second-example.org", "second-example.org", 200, V2),
    ("second-example.org", "example.org", 421, ""),
    ("second-example.org", "unknown-example.org", 421, ""),
    ("third-example.wildcard.org", "third-example.wildcard.org", 200, "infra-backend-v3"),
    ("third-example.wildcard.org", "fith-example.wildcard.org", 200, "infra-backend-v3"),
    ("third-example.wildcard.org", "fourth-example.wildcard.org", 421, ""),
    ("third-example.wildcard.org", "second-example.org", 421, ""),
    ("third-example.wildcard.org", "unknown-example.org", 421, ""),
    ("fourth-example.wildcard.org", "fourth-example.wildcard.org", 200, V1),
    ("fourth-example.wildcard.org", "fith-example.wildcard.org", 421, ""),
    ("unknown-example.org", "example.org", 200, V1),
    ("unknown-example.org", "unknown-example.org", 404, ""),
]


def test_https_listener_detect_misdirected_requests(conformance: Conformance) -> None:
    """HTTPRouteHTTPSListenerDetectMisdirectedRequests: on HTTPS listeners sharing port 443, a request whose
    Host belongs to another listener than the one its SNI chose is answered 421 (so an HTTP/2 client that
    coalesced connections retries on the right one); the no-hostname listener still answers its own hosts."""
    gateway = (INFRA, "same-namespace-with-https-listener")
    routes = [f"https-listener-detect-misdirected-requests-test-{i}" for i in range(1, 5)]
    with conformance.applied("httproute-https-listener-detect-misdirected-requests"):
        routes_accepted(conformance, gateway, *routes)
        server = conformance.tls_pair(INFRA, "tls-validity-checks-certificate").trust_pem
        target = conformance.gateway(*gateway, port=443, scheme="https", ca_pem=server)
        failures = []
        for sni, host, status, backend in MISDIRECTED_CASES:
            expect = Expect(status=status, backend=backend, namespace=INFRA if status == 200 else "")
            case = Case(Request(path="/detect-misdirected-requests", host=host), expect)
            error = eventually(target, case, sni=sni, timeout=TIMEOUT)
            if error is not None:
                failures.append(f"SNI {sni}: {error}")
        assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------------------------------------------
# Backend client certificate


def test_gateway_tls_backend_client_certificate(conformance: Conformance) -> None:
    """GatewayTLSBackendClientCertificate: the Gateway presents its client certificate to a TLS backend (under
    a BackendTLSPolicy) that requires one from the suite's CA; the backend reports which one it got."""
    gateway = (INFRA, "gateway-tls-backend-client-certificate")
    route = (INFRA, "gateway-tls-backend-client-certificate")
    manifest = "gateway-tls-backend-client-certificate"
    backend = TLSDeployment(
        INFRA,
        "tls-backend-with-client-cert-validation",
        "tls-checks-certificate",
        client_ca="tls-checks-ca-certificate",
    )
    with (
        tls_pods(conformance, backend) as pool,
        with_slices(conformance, pool, manifest),
        conformance.applied(manifest),
    ):
        conformance.status.gateway_and_routes_accepted(gateway, conformance.book.address(*gateway), [route])
        conformance.status.route_resolved_refs(*route, gateway)
        conformance.status.policy_condition(
            INFRA, "gateway-tls-backend-client-certificate-test", gateway, Cond("Accepted")
        )
        conformance.status.gateway_condition(*gateway, Cond("ResolvedRefs", "True", "ResolvedRefs"))
        client = conformance.tls_pair(INFRA, "tls-checks-client-certificate").cert_pem.decode()
        want = ExpectedRequest(path="/", sni="abc.example.com", client_cert=client)
        case = Case(
            Request(path="/", host="abc.example.com"),
            Expect(backend=backend.name, namespace=INFRA, expected_request=want),
        )
        error = eventually(conformance.gateway(*gateway), case, timeout=TIMEOUT)
        assert error is None, error


INVALID_BACKEND_TLS_GATEWAYS = [
    ("gateway-client-certificate-nonexistent-secret", "InvalidClientCertificateRef"),
    ("gateway-client-certificate-unsupported-group", "InvalidClientCertificateRef"),
    ("gateway-client-certificate-unsupported-kind", "InvalidClientCertificateRef"),
    ("gateway-client-certificate-malformed-secret", "InvalidClientCertificateRef"),
    ("gateway-client-certificate-missing-reference-grant", "RefNotPermitted"),
]


def test_gateway_invalid_tls_backend_configuration(conformance: Conformance) -> None:
    """GatewayInvalidTLSBackendConfiguration: a backend client certificate reference that is missing, of
    another group or kind, not a TLS Secret, or in another namespace without a ReferenceGrant: the Gateway
    is Accepted, with ResolvedRefs=False saying why."""
    with conformance.applied("gateway-invalid-tls-backend-configuration"):
        for name, reason in INVALID_BACKEND_TLS_GATEWAYS:
            conformance.status.gateway_condition(INFRA, name, Cond("ResolvedRefs", "False", reason))
            conformance.status.gateway_condition(INFRA, name, Cond("Accepted", "True", "Accepted"))
