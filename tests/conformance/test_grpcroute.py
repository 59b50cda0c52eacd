"""Gateway API v1.6.1 GRPCRoute conformance tests, one per upstream test whose manifest exists, in both modes:
through a real `stackway up`, and through `stackway serve` with its Envoy against the (fake) Kubernetes API.

Calls, expectations and status assertions follow upstream's `conformance/tests/grpcroute-*.go`. The base
manifests' `grpc-infra-backend-v1..v3` Deployments (two pods each) are served by the project's gRPC echo
backend (`stackway.demo.grpcecho`), which the harness starts for every echo-basic Deployment with
`GRPC_ECHO_SERVER` and links to its Service with EndpointSlices; their Service ports declare
`appProtocol: kubernetes.io/h2c`, and every call goes to the Gateway over h2c.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from tests.conformance.grpc_client import (
    GrpcCase,
    channel_to,
    check_grpc_cases,
    compare,
    send_rpc,
)
from tests.conformance.harness import MODES, Conformance
from tests.conformance.status import Cond, ExpectedParent

pytestmark = [pytest.mark.envoy, pytest.mark.parametrize("conformance", MODES, indirect=True)]

INFRA = "gateway-conformance-infra"
SAME_NS = (INFRA, "same-namespace")
GRPC_ROUTE = "GRPCRoute"
V1, V2, V3 = "grpc-infra-backend-v1", "grpc-infra-backend-v2", "grpc-infra-backend-v3"
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED


def to(backend: str, method: str = "Echo", authority: str = "", **metadata: str) -> GrpcCase:
    """A call that must reach a pod of `backend` in the infra namespace."""
    return GrpcCase(method, metadata, authority, backend=backend, namespace=INFRA)


def refused(method: str = "Echo", authority: str = "", **metadata: str) -> GrpcCase:
    """A call that must end UNIMPLEMENTED: no route matches it (or the backend does not serve the method)."""
    return GrpcCase(method, metadata, authority, code=UNIMPLEMENTED)


def accepted(env: Conformance, gateway: tuple[str, str], routes: dict[tuple[str, str], tuple[str | None, ...]]) -> None:
    """GatewayAndRoutesMustBeAccepted for GRPCRoutes: the Gateway has its address, every route is Accepted by
    it (on each listener named, for a gateway reference with listener names), every listener is ready.

    The route tests also check ResolvedRefs, which upstream does not for GRPCRoute, because a GRPCRoute whose
    backends did not resolve would fail the traffic checks for a reason they could not name."""
    gw_ns, gw_name = gateway
    env.status.gateway_address(gw_ns, gw_name, env.book.address(*gateway))
    for (route_ns, route_name), sections in routes.items():
        parents = [
            ExpectedParent(gw_name, gw_ns, [Cond("Accepted", "True", "Accepted")], section_name=section)
            for section in sections
        ]
        env.status.route_parents(route_ns, route_name, parents, namespace_required=route_ns != gw_ns, kind=GRPC_ROUTE)
        env.status.route_resolved_refs(route_ns, route_name, gateway, kind=GRPC_ROUTE)
    env.status.gateway_listeners_conditions(
        gw_ns, gw_name, [Cond("ResolvedRefs"), Cond("Accepted"), Cond("Programmed")]
    )


# ---------------------------------------------------------------------------------------------------------


def test_grpc_exact_method_matching(conformance: Conformance) -> None:
    """GRPCExactMethodMatching: Echo and EchoTwo go to their own backends; EchoThree matches no rule."""
    with conformance.applied("grpcroute-exact-method-matching"):
        accepted(conformance, SAME_NS, {(INFRA, "exact-matching"): (None,)})
        cases = [to(V1, "Echo"), to(V2, "EchoTwo"), refused("EchoThree")]
        check_grpc_cases(conformance.gateway(*SAME_NS), cases)


HEADER_MATCHING_CASES = [
    to(V1, Version="one"),
    to(V2, Version="two"),
    to(V1, Version="two", Color="orange"),  # the rule with both headers is more specific
    to(V2, Version="two", Color="blue"),  # two rules match one header each: the earlier one wins
    refused(Color="orange"),
    refused(**{"Some-Other-Header": "one"}),
    to(V1, Color="blue"),
    to(V1, Color="green"),
    to(V2, Color="red"),
    to(V2, Color="yellow"),
    refused(Color="purple"),
]


def test_grpc_route_header_matching(conformance: Conformance) -> None:
    """GRPCRouteHeaderMatching: header matches, ANDed within a match and ORed across matches."""
    with conformance.applied("grpcroute-header-matching"):
        accepted(conformance, SAME_NS, {(INFRA, "grpc-header-matching"): (None,)})
        check_grpc_cases(conformance.gateway(*SAME_NS), HEADER_MATCHING_CASES)


LISTENER_HOSTNAME_CASES = [
    to(V1, authority="bar.com"),
    to(V2, authority="foo.bar.com"),
    to(V3, authority="baz.bar.com"),
    to(V3, authority="boo.bar.com"),
    to(V3, authority="multiple.prefixes.bar.com"),
    to(V3, authority="multiple.prefixes.foo.com"),
    refused(authority="foo.com"),
    refused(authority="no.matching.host"),
]


def test_grpc_route_listener_hostname_matching(conformance: Conformance) -> None:
    """GRPCRouteListenerHostnameMatching: listeners on one port told apart by hostname (exact and wildcard),
    each with its own GRPCRoute; the most specific listener hostname wins."""
    gateway = (INFRA, "grpcroute-listener-hostname-matching")
    with conformance.applied("grpcroute-listener-hostname-matching"):
        accepted(
            conformance,
            gateway,
            {
                (INFRA, "backend-v1"): ("listener-1",),
                (INFRA, "backend-v2"): ("listener-2",),
                (INFRA, "backend-v3"): ("listener-3", "listener-4"),
            },
        )
        check_grpc_cases(conformance.gateway(*gateway), LISTENER_HOSTNAME_CASES)


def test_grpc_route_named_rule(conformance: Conformance) -> None:
    """GRPCRouteNamedRule: a rule with a name routes exactly like an unnamed one."""
    with conformance.applied("grpcroute-named-rule"):
        accepted(conformance, SAME_NS, {(INFRA, "grpc-named-rules"): (None,)})
        check_grpc_cases(conformance.gateway(*SAME_NS), [to(V1, "Echo"), to(V2, "EchoTwo")])


WEIGHTS = {V1: 0.7, V2: 0.3, V3: 0.0}
WEIGHT_TOTAL_CALLS = 500
WEIGHT_CONCURRENCY = 10
WEIGHT_TOLERANCE = 0.05
WEIGHT_ATTEMPTS = 10


def test_grpc_route_weight(conformance: Conformance) -> None:
    """GRPCRouteWeight: 70/30/0 weights give a 70/30 split (±5 % of 500 calls), and nothing to weight 0."""
    with conformance.applied("grpcroute-weight"):
        accepted(conformance, SAME_NS, {(INFRA, "weighted-backends"): (None,)})
        target = conformance.gateway(*SAME_NS)
        case = GrpcCase("Echo", namespace=INFRA)
        check_grpc_cases(target, [case])  # calls succeed before the distribution is checked

        problems: list[str] = []
        for _ in range(WEIGHT_ATTEMPTS):
            # one shared channel, as upstream's client shares one connection: Envoy still picks per call
            with channel_to(target) as channel:

                def one(_: int, channel: grpc.Channel = channel) -> str:
                    answer = send_rpc(target, case, channel)
                    error = compare(case, answer)
                    if error:
                        return f"failed: {error}"
                    assert answer.response is not None
                    pod = answer.response.assertions.context.pod
                    return next((b for b in WEIGHTS if pod.startswith(b)), f"unexpected pod {pod}")

                with ThreadPoolExecutor(WEIGHT_CONCURRENCY) as pool:
                    seen = Counter(pool.map(one, range(WEIGHT_TOTAL_CALLS)))
            problems = [f"{outcome} ({count}x)" for outcome, count in seen.items() if outcome not in WEIGHTS]
            if len(seen) != 2:
                problems.append(f"expected only two backends to receive traffic, got {dict(seen)}")
            for backend, want in WEIGHTS.items():
                got = seen[backend] / WEIGHT_TOTAL_CALLS
                if abs(got - want) > WEIGHT_TOLERANCE:
                    problems.append(f"{backend}: {got:.3f} of calls, expected {want} ± {WEIGHT_TOLERANCE}")
            if not problems:
                return
        pytest.fail(f"weighted distribution off in all {WEIGHT_ATTEMPTS} attempts; last: {problems}")
