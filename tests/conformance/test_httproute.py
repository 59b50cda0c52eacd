"""Gateway API v1.6.1 HTTPRoute core conformance tests, one per upstream test, in both modes: through a real
`stackway up`, and through `stackway serve` with its Envoy against the (fake) Kubernetes API.

Requests, expectations and status assertions follow upstream's `conformance/tests/httproute-*.go`; the
tables below are those tests' cases. Each test serves base manifests plus its own upstream manifest file.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conformance.client import (
    Case,
    Expect,
    ExpectedRequest,
    Redirect,
    Request,
    check_cases,
    compare,
    send,
)
from tests.conformance.harness import MODES, Conformance
from tests.conformance.manifests import fill_manual_slice, key
from tests.conformance.status import Cond, ExpectedListener, ExpectedParent

pytestmark = [pytest.mark.envoy, pytest.mark.parametrize("conformance", MODES, indirect=True)]

INFRA = "gateway-conformance-infra"
APP = "gateway-conformance-app-backend"
WEB = "gateway-conformance-web-backend"
SAME_NS = (INFRA, "same-namespace")
V1, V2, V3 = "infra-backend-v1", "infra-backend-v2", "infra-backend-v3"


def to(backend: str, path: str, host: str = "", headers: dict[str, str] | None = None, ns: str = INFRA) -> Case:
    """A request that must reach a pod of `backend` in `ns`."""
    return Case(Request(path=path, host=host, headers=headers or {}), Expect(backend=backend, namespace=ns))


def status(code: int, path: str, host: str = "", headers: dict[str, str] | None = None) -> Case:
    """A request that must be answered with `code` (by the gateway, not a backend)."""
    return Case(Request(path=path, host=host, headers=headers or {}), Expect(status=code))


class Subtests:
    """Upstream's `t.Run` sections: each one fails on its own, and the test reports every failed section."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    @contextlib.contextmanager
    def run(self, name: str) -> Iterator[None]:
        try:
            yield
        except AssertionError as exc:
            self.failures.append(f"[{name}] {exc}")

    def __enter__(self) -> Subtests:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None and self.failures:
            pytest.fail(f"{len(self.failures)} subtest(s) failed:\n" + "\n".join(self.failures), pytrace=False)


def accepted(env: Conformance, gateway: tuple[str, str], *routes: tuple[str, str], resolved: bool = True) -> None:
    """GatewayAndHTTPRoutesMustBeAccepted, then (usually) HTTPRouteMustHaveResolvedRefsConditionsTrue."""
    env.status.gateway_and_routes_accepted(gateway, env.book.address(*gateway), routes)
    if resolved:
        for route in routes:
            env.status.route_resolved_refs(*route, gateway)


# ---------------------------------------------------------------------------------------------------------


def test_simple_same_namespace(conformance: Conformance) -> None:
    with conformance.applied("httproute-simple-same-namespace"):
        accepted(conformance, SAME_NS, (INFRA, "gateway-conformance-infra-test"))
        check_cases(conformance.gateway(*SAME_NS), [to(V1, "/")])


def test_cross_namespace(conformance: Conformance) -> None:
    gateway = (INFRA, "backend-namespaces")
    with conformance.applied("httproute-cross-namespace"):
        accepted(conformance, gateway, (WEB, "cross-namespace"))
        check_cases(conformance.gateway(*gateway), [to("web-backend", "/", ns=WEB)])


EXACT_PATH_CASES = [
    to(V1, "/one"),
    to(V2, "/two"),
    status(404, "/"),
    status(404, "/one/example"),
    status(404, "/two/"),
    status(404, "/Two"),
]


def test_exact_path_matching(conformance: Conformance) -> None:
    with conformance.applied("httproute-exact-path-matching"):
        accepted(conformance, SAME_NS, (INFRA, "exact-matching"))
        check_cases(conformance.gateway(*SAME_NS), EXACT_PATH_CASES)


HEADER_MATCHING_CASES = [
    to(V1, "/", headers={"Version": "one"}),
    to(V2, "/", headers={"Version": "two"}),
    to(V1, "/", headers={"Version": "two", "Color": "orange"}),
    to(V2, "/", headers={"Version": "two", "Color": "blue"}),
    status(404, "/", headers={"Color": "orange"}),
    status(404, "/", headers={"Some-Other-Header": "one"}),
    to(V1, "/", headers={"Color": "blue"}),
    to(V1, "/", headers={"Color": "green"}),
    to(V2, "/", headers={"Color": "red"}),
    to(V2, "/", headers={"Color": "yellow"}),
    status(404, "/", headers={"Color": "purple"}),
]


def test_header_matching(conformance: Conformance) -> None:
    with conformance.applied("httproute-header-matching"):
        accepted(conformance, SAME_NS, (INFRA, "header-matching"))
        check_cases(conformance.gateway(*SAME_NS), HEADER_MATCHING_CASES)


MATCHING_CASES = [
    to(V1, "/"),
    to(V1, "/example"),
    to(V1, "/", headers={"Version": "one"}),
    to(V2, "/v2"),
    to(V2, "/v2/example"),
    to(V2, "/", headers={"Version": "two"}),
]


def test_matching(conformance: Conformance) -> None:
    with conformance.applied("httproute-matching"):
        accepted(conformance, SAME_NS, (INFRA, "matching"))
        check_cases(conformance.gateway(*SAME_NS), MATCHING_CASES)


MATCHING_ACROSS_ROUTES_CASES = [
    to(V1, "/", host="example.com"),
    to(V1, "/example", host="example.com"),
    to(V1, "/example", host="example.net"),
    to(V1, "/example", host="example.com", headers={"Version": "one"}),
    to(V2, "/v2", host="example.com"),
    to(V1, "/v2", host="example.net"),  # v2 matches are limited to example.com
    to(V2, "/v2/example", host="example.com"),
    to(V2, "/", host="example.com", headers={"Version": "two"}),
]


def test_matching_across_routes(conformance: Conformance) -> None:
    with conformance.applied("httproute-matching-across-routes"):
        accepted(conformance, SAME_NS, (INFRA, "matching-part1"), (INFRA, "matching-part2"))
        check_cases(conformance.gateway(*SAME_NS), MATCHING_ACROSS_ROUTES_CASES)


PATH_MATCH_ORDER_CASES = [
    to(V3, "/match/exact/one"),
    to(V2, "/match/exact"),
    to(V1, "/match"),
    to(V2, "/match/prefix/one/any"),
    to(V1, "/match/prefix/any"),
    to(V3, "/match/any"),
]


def test_path_match_order(conformance: Conformance) -> None:
    with conformance.applied("httproute-path-match-order"):
        accepted(conformance, SAME_NS, (INFRA, "path-matching-order"))
        check_cases(conformance.gateway(*SAME_NS), PATH_MATCH_ORDER_CASES)


HOSTNAME_INTERSECTION_CASES = [
    # specific-host-matches-listener-specific-host
    to(V1, "/s1", host="very.specific.com"),
    to(V1, "/s1", host="very.specific.com:1234"),  # the Host header's port must not matter
    status(404, "/s1", host="non.matching.com"),
    status(404, "/s1", host="foo.nonmatchingwildcard.io"),
    status(404, "/s1", host="foo.wildcard.io"),
    status(404, "/non-matching-prefix", host="very.specific.com"),
    # specific-host-matches-listener-wildcard-host
    to(V2, "/s2", host="foo.wildcard.io"),
    to(V2, "/s2", host="bar.wildcard.io"),
    to(V2, "/s2", host="foo.bar.wildcard.io"),
    status(404, "/s2", host="non.matching.com"),
    status(404, "/s2", host="wildcard.io"),
    status(404, "/s2", host="very.specific.com"),
    status(404, "/non-matching-prefix", host="foo.wildcard.io"),
    # wildcard-host-matches-listener-specific-host
    to(V3, "/s3", host="very.specific.com"),
    status(404, "/s3", host="non.matching.com"),
    status(404, "/s3", host="foo.specific.com"),
    status(404, "/s3", host="foo.wildcard.io"),
    status(404, "/non-matching-prefix", host="very.specific.com"),
    # wildcard-host-matches-listener-wildcard-host
    to(V1, "/s4", host="foo.anotherwildcard.io"),
    to(V1, "/s4", host="bar.anotherwildcard.io"),
    to(V1, "/s4", host="foo.bar.anotherwildcard.io"),
    status(404, "/s4", host="anotherwildcard.io"),
    status(404, "/s4", host="foo.wildcard.io"),
    status(404, "/s4", host="very.specific.com"),
    status(404, "/non-matching-prefix", host="foo.anotherwildcard.io"),
]
NO_INTERSECTION_CASES = [
    status(404, "/s5", host="specific.but.wrong.com"),
    status(404, "/s5", host="wildcard.io"),
]
UNSPECIFIED_LISTENER_HOSTNAME_CASES = [
    to(V2, "/", host="first.com"),
    to(V2, "/", host="sub.first.com"),
    to(V2, "/", host="second.com"),
    to(V2, "/", host="sub.second.com"),
    status(404, "/", host="third.com"),
    status(404, "/", host="sub.third.com"),
]


def test_hostname_intersection(conformance: Conformance) -> None:
    gateway = (INFRA, "httproute-hostname-intersection")
    gateway_all = (INFRA, "httproute-hostname-intersection-all")
    with conformance.applied("httproute-hostname-intersection"), Subtests() as t:
        with t.run("HTTPRoutes that do intersect with listener hostnames"):
            routes = [
                (INFRA, "specific-host-matches-listener-specific-host"),
                (INFRA, "specific-host-matches-listener-wildcard-host"),
                (INFRA, "wildcard-host-matches-listener-specific-host"),
                (INFRA, "wildcard-host-matches-listener-wildcard-host"),
            ]
            accepted(conformance, gateway, *routes)
            check_cases(conformance.gateway(*gateway), HOSTNAME_INTERSECTION_CASES)

        with t.run("HTTPRoutes that do not intersect with listener hostnames"):
            conformance.status.gateway_and_routes_accepted(gateway, conformance.book.address(*gateway))
            conformance.status.route_parents(
                INFRA,
                "no-intersecting-hosts",
                [ExpectedParent(gateway[1], INFRA, [Cond("Accepted", "False", "NoMatchingListenerHostname")])],
                namespace_required=True,
            )
            check_cases(conformance.gateway(*gateway), NO_INTERSECTION_CASES)

        with t.run("HTTPRoutes have to be counted in AttachedRoutes only if they are Accepted"):
            healthy = [Cond("Accepted"), Cond("ResolvedRefs")]
            conformance.status.gateway_listeners(
                *gateway,
                [
                    ExpectedListener("listener-1", 2, healthy),  # specific-host-... and wildcard-host-...-specific-host
                    ExpectedListener("listener-2", 1, healthy),  # specific-host-matches-listener-wildcard-host
                    ExpectedListener("listener-3", 1, healthy),  # wildcard-host-matches-listener-wildcard-host
                ],
            )

        with t.run("HTTPRoutes intersects with an unspecified hostname listener"):
            accepted(conformance, gateway_all, (INFRA, "httproute-hostname-intersection-all"))
            check_cases(conformance.gateway(*gateway_all), UNSPECIFIED_LISTENER_HOSTNAME_CASES)


LISTENER_HOSTNAME_CASES = [
    to(V1, "/", host="bar.com"),
    to(V2, "/", host="foo.bar.com"),
    to(V3, "/", host="baz.bar.com"),
    to(V3, "/", host="boo.bar.com"),
    to(V3, "/", host="multiple.prefixes.bar.com"),
    to(V3, "/", host="multiple.prefixes.foo.com"),
    status(404, "/", host="foo.com"),
    status(404, "/", host="no.matching.host"),
]


def test_listener_hostname_matching(conformance: Conformance) -> None:
    gateway = (INFRA, "httproute-listener-hostname-matching")
    with conformance.applied("httproute-listener-hostname-matching"):
        for route in ("backend-v1", "backend-v2", "backend-v3"):
            accepted(conformance, gateway, (INFRA, route))
        check_cases(conformance.gateway(*gateway), LISTENER_HOSTNAME_CASES)


HTTPS_LISTENER_CASES = [
    to(V1, "/", host="example.org"),
    status(404, "/", host="unknown-example.org"),
    to(V2, "/", host="second-example.org"),
]


def test_https_listener(conformance: Conformance) -> None:
    gateway = (INFRA, "same-namespace-with-https-listener")
    with conformance.applied("httproute-https-listener"):
        accepted(conformance, gateway, (INFRA, "httproute-https-test"), (INFRA, "httproute-https-test-no-hostname"))
        pair = conformance.tls_pair(INFRA, "tls-validity-checks-certificate")
        target = conformance.gateway(*gateway, port=443, scheme="https", ca_pem=pair.cert_pem)
        check_cases(target, HTTPS_LISTENER_CASES, sni_from_host=True)  # upstream sends SNI = Host


def test_multiple_gateways(conformance: Conformance) -> None:
    all_ns = (INFRA, "all-namespaces")
    shared = (INFRA, "multiple-gateways-shared-route")
    with conformance.applied("httproute-multiple-gateways"), Subtests() as t:
        with t.run("Gateway same-namespace"):
            accepted(conformance, SAME_NS, shared, (INFRA, "same-namespace-dedicated-route"), resolved=False)
            check_cases(conformance.gateway(*SAME_NS), [to(V1, "/shared"), to(V2, "/")])
        with t.run("Gateway all-namespaces"):
            accepted(conformance, all_ns, shared, (INFRA, "all-namespaces-dedicated-route"), resolved=False)
            check_cases(conformance.gateway(*all_ns), [to(V1, "/shared"), to(V3, "/")])


def invalid_reference(conformance: Conformance, route: tuple[str, str], reason: str, cases: list[Case]) -> None:
    """The shape of upstream's invalid-reference tests: accepted route, ResolvedRefs False/<reason>, traffic."""
    accepted(conformance, SAME_NS, route, resolved=False)
    with Subtests() as t:
        with t.run(f"HTTPRoute has a ResolvedRefs condition with status False and reason {reason}"):
            conformance.status.route_condition(*route, SAME_NS, Cond("ResolvedRefs", "False", reason))
        with t.run("HTTP requests"):
            check_cases(conformance.gateway(*SAME_NS), cases)


def test_invalid_backend_ref_unknown_kind(conformance: Conformance) -> None:
    with conformance.applied("httproute-invalid-backendref-unknown-kind"):
        invalid_reference(conformance, (INFRA, "invalid-backend-ref-unknown-kind"), "InvalidKind", [status(500, "/v2")])


def test_invalid_nonexistent_backend_ref(conformance: Conformance) -> None:
    with conformance.applied("httproute-invalid-nonexistent-backendref"):
        invalid_reference(
            conformance, (INFRA, "invalid-nonexistent-backend-ref"), "BackendNotFound", [status(500, "/")]
        )


def test_no_backend_refs(conformance: Conformance) -> None:
    route = (INFRA, "omitted-backendrefs")
    with conformance.applied("httproute-omitted-backendrefs"):
        conformance.status.gateway_address(*SAME_NS, conformance.book.address(*SAME_NS))
        conformance.status.route_resolved_refs(*route, SAME_NS)
        # The route names its parent without a namespace, so the status parentRef has none either.
        parent = ExpectedParent(SAME_NS[1], None, [Cond("Accepted", "True")])
        conformance.status.route_parents(*route, [parent], namespace_required=True)
        check_cases(
            conformance.gateway(*SAME_NS),
            [to(V1, "/forward"), status(500, "/omitted-no-forward"), status(500, "/empty-no-forward")],
        )


def test_invalid_cross_namespace_backend_ref(conformance: Conformance) -> None:
    with conformance.applied("httproute-invalid-cross-namespace-backend-ref"):
        invalid_reference(
            conformance, (INFRA, "invalid-cross-namespace-backend-ref"), "RefNotPermitted", [status(500, "/")]
        )


def test_invalid_reference_grant(conformance: Conformance) -> None:
    with conformance.applied("httproute-invalid-reference-grant"):
        invalid_reference(conformance, (INFRA, "reference-grant"), "RefNotPermitted", [status(500, "/")])


def test_partially_invalid_via_invalid_reference_grant(conformance: Conformance) -> None:
    with conformance.applied("httproute-partially-invalid-via-invalid-reference-grant"):
        invalid_reference(
            conformance,
            (INFRA, "invalid-reference-grant"),
            "RefNotPermitted",
            [status(500, "/v2"), to("app-backend-v1", "/", ns=APP)],
        )


def test_reference_grant(conformance: Conformance) -> None:
    with conformance.applied("httproute-reference-grant"):
        accepted(conformance, SAME_NS, (INFRA, "reference-grant"))
        check_cases(conformance.gateway(*SAME_NS), [to("web-backend", "/", ns=WEB)])


REDIRECT_HOST_AND_STATUS_CASES = [
    Case(Request(path="/hostname-redirect"), Expect(status=302, redirect=Redirect(host="example.org"))),
    Case(Request(path="/host-and-status"), Expect(status=301, redirect=Redirect(host="example.org"))),
]


def test_redirect_host_and_status(conformance: Conformance) -> None:
    with conformance.applied("httproute-redirect-host-and-status"):
        accepted(conformance, SAME_NS, (INFRA, "redirect-host-and-status"))
        check_cases(conformance.gateway(*SAME_NS), REDIRECT_HOST_AND_STATUS_CASES)


def _modified(path: str, sent: dict[str, str], arrives: dict[str, str], absent: tuple[str, ...] = ()) -> Case:
    return Case(
        Request(path=path, headers=sent),
        Expect(
            backend=V1,
            namespace=INFRA,
            expected_request=ExpectedRequest(path=path, headers=arrives or None, absent_headers=absent),
        ),
    )


REQUEST_HEADER_MODIFIER_CASES = [
    _modified(
        "/set", {"Some-Other-Header": "val"}, {"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"}
    ),
    _modified(
        "/set",
        {"Some-Other-Header": "val", "X-Header-Set": "some-other-value"},
        {"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"},
    ),
    _modified("/add", {"Some-Other-Header": "val"}, {"Some-Other-Header": "val", "X-Header-Add": "add-appends-values"}),
    _modified(
        "/add",
        {"Some-Other-Header": "val", "X-Header-Add": "some-other-value"},
        {"Some-Other-Header": "val", "X-Header-Add": "some-other-value,add-appends-values"},
    ),
    _modified("/remove", {"X-Header-Remove": "val"}, {}, absent=("X-Header-Remove",)),
    _modified(
        "/multiple",
        {
            "X-Header-Set-2": "set-val-2",
            "X-Header-Add-2": "add-val-2",
            "X-Header-Remove-2": "remove-val-2",
            "Another-Header": "another-header-val",
        },
        {
            "X-Header-Set-1": "header-set-1",
            "X-Header-Set-2": "header-set-2",
            "X-Header-Add-1": "header-add-1",
            "X-Header-Add-2": "add-val-2,header-add-2",
            "X-Header-Add-3": "header-add-3",
            "Another-Header": "another-header-val",
        },
        absent=("X-Header-Remove-1", "X-Header-Remove-2"),
    ),
    _modified(
        "/case-insensitivity",
        {
            "x-header-set": "original-val-set",
            "x-header-add": "original-val-add",
            "x-header-remove": "original-val-remove",
            "Another-Header": "another-header-val",
        },
        {
            "X-Header-Set": "header-set",
            "X-Header-Add": "original-val-add,header-add",
            "Another-Header": "another-header-val",
        },
        absent=("x-header-remove", "X-Header-Remove"),
    ),
]


def test_request_header_modifier(conformance: Conformance) -> None:
    with conformance.applied("httproute-request-header-modifier"):
        accepted(conformance, SAME_NS, (INFRA, "request-header-modifier"))
        check_cases(conformance.gateway(*SAME_NS), REQUEST_HEADER_MODIFIER_CASES)


SERVICE_TYPES = ["headless", "manual-endpointslices", "headless-manual-endpointslices"]


def test_service_types(conformance: Conformance) -> None:
    with conformance.applied("httproute-service-types") as applied:
        accepted(conformance, SAME_NS, (INFRA, "service-types"))
        # Like upstream, point the selector-less Services' EndpointSlices at an infra-backend-v1 pod.
        port = conformance.pod_port(V1)
        docs = [
            fill_manual_slice(d, port) if key(d)[0] == "EndpointSlice" and "manual" in key(d)[2] else d
            for d in applied.docs
        ]
        conformance.rewrite(applied, docs)
        check_cases(conformance.gateway(*SAME_NS), [to(V1, f"/{name}") for name in SERVICE_TYPES])


WEIGHTS = {V1: 0.7, V2: 0.3, V3: 0.0}
WEIGHT_TOTAL_REQUESTS = 500
WEIGHT_CONCURRENCY = 10
WEIGHT_TOLERANCE = 0.05
WEIGHT_ATTEMPTS = 10


def test_weight(conformance: Conformance) -> None:
    with conformance.applied("httproute-weight"):
        accepted(conformance, SAME_NS, (INFRA, "weighted-backends"))
        target = conformance.gateway(*SAME_NS)
        case = Case(Request(path="/"), Expect(namespace=INFRA))
        check_cases(target, [case])  # requests succeed before the distribution is checked

        def one(_: int) -> str:
            captured = send(target, case.request)
            error = compare(target, case.request, captured, case.expect)
            if error:
                raise AssertionError(error)
            assert captured.echo is not None
            pod = str(captured.echo.get("pod"))
            return next((b for b in WEIGHTS if pod.startswith(b)), f"unexpected pod {pod}")

        problems: list[str] = []
        for _ in range(WEIGHT_ATTEMPTS):
            try:
                with ThreadPoolExecutor(WEIGHT_CONCURRENCY) as pool:
                    seen = Counter(pool.map(one, range(WEIGHT_TOTAL_REQUESTS)))
            except (AssertionError, OSError) as exc:
                problems = [f"a request failed: {exc}"]
                continue
            problems = []
            if len(seen) != 2:
                problems.append(f"expected only two backends to receive traffic, got {dict(seen)}")
            for backend, want in WEIGHTS.items():
                got = seen[backend] / WEIGHT_TOTAL_REQUESTS
                if not math.isclose(got, want, abs_tol=WEIGHT_TOLERANCE):
                    problems.append(f"{backend}: {got:.3f} of requests, expected {want} ± {WEIGHT_TOLERANCE}")
            if not problems:
                return
        pytest.fail(f"weighted distribution off in all {WEIGHT_ATTEMPTS} attempts; last: {problems}")
