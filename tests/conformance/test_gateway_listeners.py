"""Gateway API v1.6.1 listener isolation conformance, through a real Envoy in both modes.

GatewayHTTPListenerIsolation (upstream `conformance/tests/gateway-http-listener-isolation.go`): four HTTP
listeners share port 80 with nested hostnames (none, `*.example.com`, `*.foo.example.com`,
`abc.foo.example.com`), and one route attaches to each. A request must be served only by the routes of the
*most specific* listener that matches its Host, even where a less specific listener's route would also match
the path. Envoy picks one virtual host per request, so this checks that the translator gives every listener a
virtual host of its own domains and does not let a wider listener's domains swallow a narrower one's.

Upstream applies both manifests at once and runs the same cases against each Gateway: the second one adds
route hostnames that intersect several listeners, which must not leak a route onto a listener it did not
attach to.
"""

from __future__ import annotations

import pytest

from tests.conformance.client import Case, check_cases
from tests.conformance.harness import MODES, Conformance
from tests.conformance.test_httproute import INFRA, V1, Subtests, accepted, status, to

pytestmark = [pytest.mark.envoy, pytest.mark.parametrize("conformance", MODES, indirect=True)]

#: Listener name -> a Host only that listener (as the most specific match) serves.
LISTENER_HOSTS = {
    "empty-hostname": "bar.com",
    "wildcard-example-com": "bar.example.com",
    "wildcard-foo-example-com": "bar.foo.example.com",
    "abc-foo-example-com": "abc.foo.example.com",
}


def isolation_cases() -> list[Case]:
    """Every Host against every route's path: only the route of the Host's own listener answers."""
    cases: list[Case] = []
    for served_by, host in LISTENER_HOSTS.items():
        for path_of in LISTENER_HOSTS:
            path = f"/{path_of}"
            cases.append(to(V1, path, host=host) if path_of == served_by else status(404, path, host=host))
    return cases


ISOLATION_GATEWAYS = (
    ("hostnames are configured only in listeners", "http-listener-isolation", ""),
    (
        "intersecting hostnames are configured in listeners and HTTPRoutes",
        "http-listener-isolation-with-hostname-intersection",
        "-with-hostname-intersection",
    ),
)


def test_gateway_http_listener_isolation(conformance: Conformance) -> None:
    """GatewayHTTPListenerIsolation: both upstream manifests together, the same cases against each Gateway."""
    with (
        conformance.applied("gateway-http-listener-isolation"),
        conformance.applied("gateway-http-listener-isolation-with-hostname-intersection"),
        Subtests() as subtests,
    ):
        for section, gateway_name, suffix in ISOLATION_GATEWAYS:
            with subtests.run(section):
                gateway = (INFRA, gateway_name)
                routes = [(INFRA, f"attaches-to-{listener}{suffix}") for listener in LISTENER_HOSTS]
                accepted(conformance, gateway, *routes)
                check_cases(conformance.gateway(*gateway), isolation_cases())
