"""Gateway API v1.6.1 BackendTLSPolicy conformance tests, one per upstream test, in both modes: through a real
`stackway up`, and through `stackway serve` with its Envoy against the (fake) Kubernetes API.

Requests, expectations and status assertions follow upstream's `conformance/tests/backendtlspolicy*.go`. The
tests' Services select the base manifests' `tls-backend` pod, which serves the suite's CA-signed
`tls-checks-certificate` (SANs `abc.example.com`, `other.example.com` and a SPIFFE URI) and reports the SNI
it was asked for, so a request that reaches it proves Envoy verified the certificate against the policy's CA
and names, and sent the policy's hostname as SNI.

Where upstream only expects "an HTTP error", these tests expect a 5xx and also check that no request reached
the backend: the failure must be the refused TLS handshake, not something else on the way.
"""

from __future__ import annotations

import time

import pytest

from tests.conformance.client import REQUEST_TIMEOUT, Case, Expect, ExpectedRequest, Request, Target, eventually, send
from tests.conformance.harness import MODES, Applied, Conformance
from tests.conformance.manifests import ca_config_map
from tests.conformance.status import Cond
from tests.conformance.tls_backends import TLS_BACKEND, TLSEchoPool, tls_pods, with_slices

pytestmark = [pytest.mark.envoy, pytest.mark.parametrize("conformance", MODES, indirect=True)]

INFRA = "gateway-conformance-infra"
SAME_NS = (INFRA, "same-namespace")
HTTPS_GW = (INFRA, "same-namespace-with-https-listener")
HOST = "abc.example.com"
POLICY = "BackendTLSPolicy"
ACCEPTED = Cond("Accepted", "True", "Accepted")
RESOLVED = Cond("ResolvedRefs", "True", "ResolvedRefs")
#: Generous: a policy change is a new Cluster (CDS) and its endpoints (EDS) on a busy machine.
TIMEOUT = 60.0
REFUSED_STATUSES = (500, 502, 503)


def accepted(env: Conformance, gateway: tuple[str, str], route: tuple[str, str]) -> None:
    """GatewayAndRoutesMustBeAccepted, then HTTPRouteMustHaveResolvedRefsConditionsTrue."""
    env.status.gateway_and_routes_accepted(gateway, env.book.address(*gateway), [route])
    env.status.route_resolved_refs(*route, gateway)


def policy(env: Conformance, name: str, *conditions: Cond, gateway: tuple[str, str] = SAME_NS) -> None:
    """BackendTLSPolicyMustHaveCondition, for each condition."""
    for want in conditions:
        env.status.policy_condition(INFRA, name, gateway, want)


def reaches(env: Conformance, path: str, sni: str, target: Target | None = None, host: str = HOST) -> None:
    """The request reaches the TLS backend, over a handshake for `sni` (upstream's ExpectedRequest SNI)."""
    case = Case(
        Request(path=path, host=host),
        Expect(backend=TLS_BACKEND.name, namespace=INFRA, expected_request=ExpectedRequest(path=path, sni=sni)),
    )
    error = eventually(target or env.gateway(*SAME_NS), case, sni=host, timeout=TIMEOUT)
    assert error is None, error


def refused(
    env: Conformance,
    pool: TLSEchoPool,
    path: str,
    host: str = HOST,
    target: Target | None = None,
    statuses: tuple[int, ...] = REFUSED_STATUSES,
) -> None:
    """Upstream's MakeRequestAndExpectFailure: an error status (5xx unless `statuses` says otherwise), three
    times in a row, and the backend never saw the request."""
    target = target or env.gateway(*SAME_NS)
    deadline = time.monotonic() + TIMEOUT
    in_a_row, streak_began, last = 0, time.monotonic(), "no answer yet"
    while in_a_row < 3:
        sent = time.monotonic()
        try:
            captured = send(target, Request(path=path, host=host), sni=host, timeout=REQUEST_TIMEOUT)
            last, ok = captured.summary(), captured.status in statuses
        except OSError as exc:
            last, ok = f"request failed: {exc}", False
        if ok:
            streak_began = sent if in_a_row == 0 else streak_began
            in_a_row += 1
            continue
        in_a_row = 0
        if time.monotonic() > deadline:
            raise AssertionError(f"{host}{path}: not refused ({statuses}) within {TIMEOUT:.0f}s: {last}")
        time.sleep(0.25)
    # requests answered before the configuration changed may have reached it; none since the refusals began
    reached = pool.log.received(INFRA, TLS_BACKEND.name, path, streak_began)
    assert not reached, f"{host}{path}: {len(reached)} request(s) reached the backend despite the failed TLS checks"


# ---------------------------------------------------------------------------------------------------------


def test_backend_tls_policy(conformance: Conformance) -> None:
    """BackendTLSPolicy: re-encryption behind an HTTPS listener; a valid policy succeeds; a hostname or CA that
    does not match the backend's certificate fails. The reconcile-test policy's CA ConfigMap is then changed
    (an own check): a new CA must reach Envoy without the policy itself changing."""
    with (
        tls_pods(conformance, TLS_BACKEND) as pool,
        with_slices(conformance, pool, "backendtlspolicy"),
        conformance.applied("backendtlspolicy") as applied,
    ):
        # Re-encrypt HTTPS request sent to Service with valid BackendTLSPolicy should succeed
        accepted(conformance, HTTPS_GW, (INFRA, "backendtlspolicy-reencrypt"))
        policy(conformance, "normative-test", ACCEPTED, RESOLVED, gateway=HTTPS_GW)
        frontend = conformance.tls_pair(INFRA, "tls-validity-checks-certificate")
        https = conformance.gateway(*HTTPS_GW, port=443, scheme="https", ca_pem=frontend.trust_pem)
        reaches(conformance, "/backendtlspolicy", HOST, target=https, host="https-listener.org")

        accepted(conformance, SAME_NS, (INFRA, "backendtlspolicy"))
        # HTTP request sent to Service with valid BackendTLSPolicy should succeed
        policy(conformance, "normative-test", ACCEPTED, RESOLVED)
        reaches(conformance, "/backendtlspolicy", HOST)
        # ... with mismatched hostname should return an HTTP error (upstream sends Host abc.example.org,
        # which no route matches; the route's own hostname shows the handshake itself is refused)
        policy(conformance, "host-mismatch", ACCEPTED, RESOLVED)
        refused(
            conformance, pool, "/backendtlspolicy-host-mismatch", host="abc.example.org", statuses=(404, 500, 502, 503)
        )
        refused(conformance, pool, "/backendtlspolicy-host-mismatch")
        # ... with mismatched cert (a CA that did not sign it) should return an HTTP error
        policy(conformance, "cert-mismatch", ACCEPTED, RESOLVED)
        refused(conformance, pool, "/backendtlspolicy-cert-mismatch")

        reconcile_ca_changes(conformance, pool, applied)


def reconcile_ca_changes(env: Conformance, pool: TLSEchoPool, applied: Applied) -> None:
    """Point reconcile-test at a ConfigMap of its own, then replace that ConfigMap's CA with one that did not
    sign the backend's certificate, and back: each change alone must reach the data plane."""
    path = "/backendtlspolicy-reconcile-test"
    reaches(env, path, HOST)
    docs = [dict(d) for d in applied.docs]
    for doc in docs:
        if doc["kind"] == "BackendTLSPolicy" and doc["metadata"]["name"] == "reconcile-test":
            doc["spec"] = {**doc["spec"], "validation": dict(doc["spec"]["validation"])}
            doc["spec"]["validation"]["caCertificateRefs"] = [
                {"group": "", "kind": "ConfigMap", "name": "tls-checks-ca-certificate-reconcile-test"}
            ]
    own = "tls-checks-ca-certificate-reconcile-test"
    env.rewrite(applied, [*docs, ca_config_map(INFRA, own, env.ca(INFRA, "tls-checks-ca-certificate"))])
    reaches(env, path, HOST)
    env.rewrite(applied, [*docs, ca_config_map(INFRA, own, env.ca(INFRA, "mismatch-ca-certificate"))])
    refused(env, pool, path)
    env.rewrite(applied, [*docs, ca_config_map(INFRA, own, env.ca(INFRA, "tls-checks-ca-certificate"))])
    reaches(env, path, HOST)


SAN_CASES = [
    # policy, path, whether the backend's certificate satisfies the policy's subjectAltNames
    ("san-dns", "/backendtlspolicy-san-dns", True),
    ("san-dns-mismatch", "/backendtlspolicy-san-dns-mismatch", False),
    ("san-uri", "/backendtlspolicy-san-uri", True),
    ("san-uri-mismatch", "/backendtlspolicy-san-uri-mismatch", False),
    ("multiple-sans", "/backendtlspolicy-multiple-sans", True),
    ("multiple-mismatch-sans", "/backendtlspolicy-multiple-mismatch-sans", False),
]


def test_backend_tls_policy_san_validation(conformance: Conformance) -> None:
    """BackendTLSPolicySANValidation: subjectAltNames (DNS, URI, several: any may match) replace the hostname
    as what the certificate must name; mismatches fail even though the hostname would match."""
    with (
        tls_pods(conformance, TLS_BACKEND) as pool,
        with_slices(conformance, pool, "backendtlspolicy-san"),
        conformance.applied("backendtlspolicy-san"),
    ):
        accepted(conformance, SAME_NS, (INFRA, "backendtlspolicy-san-test"))
        for name, path, valid in SAN_CASES:
            policy(conformance, name, ACCEPTED)
            if valid:
                reaches(conformance, path, HOST)
            else:
                refused(conformance, pool, path)


INVALID_CA_POLICIES = ("nonexistent-ca-certificate-ref", "malformed-ca-certificate-ref")


def test_backend_tls_policy_invalid_ca_certificate_ref(conformance: Conformance) -> None:
    """BackendTLSPolicyInvalidCACertificateRef: a missing ConfigMap, or one without `ca.crt`, leaves the policy
    not Accepted (NoValidCACertificate) with ResolvedRefs=False (InvalidCACertificateRef), and its backend
    answers 5xx: never reached without verification."""
    with (
        tls_pods(conformance, TLS_BACKEND) as pool,
        with_slices(conformance, pool, "backendtlspolicy-invalid-ca-certificate-ref"),
        conformance.applied("backendtlspolicy-invalid-ca-certificate-ref"),
    ):
        conformance.status.gateway_and_routes_accepted(
            SAME_NS, conformance.book.address(*SAME_NS), [(INFRA, "backendtlspolicy-invalid-ca-certificate-ref")]
        )
        for name in INVALID_CA_POLICIES:
            policy(
                conformance,
                name,
                Cond("Accepted", "False", "NoValidCACertificate"),
                Cond("ResolvedRefs", "False", "InvalidCACertificateRef"),
            )
            refused(conformance, pool, f"/backendtlspolicy-{name}")


def test_backend_tls_policy_invalid_kind(conformance: Conformance) -> None:
    """BackendTLSPolicyInvalidKind: a CA reference of an unsupported kind: not Accepted (NoValidCACertificate),
    ResolvedRefs=False (InvalidKind), and its backend answers 5xx."""
    with (
        tls_pods(conformance, TLS_BACKEND) as pool,
        with_slices(conformance, pool, "backendtlspolicy-invalid-kind"),
        conformance.applied("backendtlspolicy-invalid-kind"),
    ):
        conformance.status.gateway_and_routes_accepted(
            SAME_NS, conformance.book.address(*SAME_NS), [(INFRA, "backendtlspolicy-invalid-kind-test")]
        )
        policy(
            conformance,
            "invalid-kind",
            Cond("Accepted", "False", "NoValidCACertificate"),
            Cond("ResolvedRefs", "False", "InvalidKind"),
        )
        refused(conformance, pool, "/backendtlspolicy-invalid-kind")


def test_backend_tls_policy_conflict_resolution(conformance: Conformance) -> None:
    """BackendTLSPolicyConflictResolution: of two policies for the same Service (or the same named port) the
    older one (then the first by name) wins and the other is Accepted=False/Conflicted; a port-scoped and a
    Service-wide policy do not conflict, each governing its own port. The SNI the backend saw shows which
    policy was applied."""
    conflicted = Cond("Accepted", "False", "Conflicted")
    with (
        tls_pods(conformance, TLS_BACKEND) as pool,
        with_slices(conformance, pool, "backendtlspolicy-conflict-resolution"),
        conformance.applied("backendtlspolicy-conflict-resolution"),
    ):
        accepted(conformance, SAME_NS, (INFRA, "backendtlspolicy-conflict-resolution"))
        policy(conformance, "conflicted-without-section-name-1", ACCEPTED)
        policy(conformance, "conflicted-without-section-name-2", conflicted)
        reaches(conformance, "/backendtlspolicy-conflicted-without-section-name", "other.example.com")
        policy(conformance, "conflicted-with-section-name-1", ACCEPTED)
        policy(conformance, "conflicted-with-section-name-2", conflicted)
        reaches(conformance, "/backendtlspolicy-conflicted-with-section-name", "other.example.com")
        policy(conformance, "not-conflicted-with-section-name", ACCEPTED)
        policy(conformance, "not-conflicted-without-section-name", ACCEPTED)
        reaches(conformance, "/backendtlspolicy-not-conflicted-with-section-name", "other.example.com")
        reaches(conformance, "/backendtlspolicy-not-conflicted-without-section-name", HOST)


def test_backend_tls_policy_observed_generation_bump(conformance: Conformance) -> None:
    """BackendTLSPolicyObservedGenerationBump: a spec change (the hostname) bumps the generation, and every
    condition of every ancestor then carries the new one."""
    name = "observed-generation-bump"
    with conformance.applied("backendtlspolicy-observed-generation-bump") as applied:
        before = conformance.status.policy_condition(INFRA, name, SAME_NS, Cond("Accepted"))
        docs = [dict(d) for d in applied.docs]
        for doc in docs:
            if doc["kind"] == POLICY and doc["metadata"]["name"] == name:
                doc["spec"] = {
                    **doc["spec"],
                    "validation": {**doc["spec"]["validation"], "hostname": "foo.example.com"},
                }
        conformance.rewrite(applied, docs)
        deadline = time.monotonic() + TIMEOUT
        after = before
        while after == before:  # policy_condition also checks that the conditions carry the generation
            after = conformance.status.policy_condition(INFRA, name, SAME_NS, Cond("Accepted"))
            if after == before:
                assert time.monotonic() < deadline, f"generation still {before} after the spec changed"
                time.sleep(0.2)
        assert after != before
