"""Gateway API v1.6.1 HTTPRoute conformance tests of the CORS filter (HTTPRouteCORS) and of header filters on
weighted backendRefs (HTTPRouteRequestHeaderModifierBackendWeights), in both modes: through a real
`stackway up`, and through `stackway serve` with its Envoy against the (fake) Kubernetes API.

The CORS cases are upstream's table: preflights (OPTIONS with Origin and Access-Control-Request-Method) and
simple requests, each with the status codes upstream accepts, the Access-Control-* response headers that must
have one of the listed values (whitespace ignored where upstream ignores it), and those that must be absent.
Upstream cannot read a preflight's answer from the echo and so leaves open who answered it; here a preflight
from an allowed origin must be answered by the gateway itself (no echo came back), since that is what the
filter is for, and simple requests must reach the backend. Where versions of the upstream table accept
different status codes for a case, the codes both accept are required.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from tests.conformance.client import Case, Expect, Request, Target, check_cases, send, until_consistent
from tests.conformance.harness import MODES, Conformance
from tests.conformance.test_httproute import INFRA, SAME_NS, V1, V2, accepted

pytestmark = [pytest.mark.envoy, pytest.mark.parametrize("conformance", MODES, indirect=True)]

GATEWAY = "gateway"  # a preflight the gateway must answer itself
BACKEND = "backend"  # a request that must reach infra-backend-v1 (upstream sets its namespace)
EITHER = "either"  # upstream leaves it open (a preflight from an origin that is not allowed)


@dataclass(frozen=True)
class CorsCase:
    """One row of upstream's HTTPRouteCORS table."""

    name: str
    request: Request
    answered_by: str
    statuses: tuple[int, ...] = (200,)
    #: Response headers that must be present with one of these values (upstream's ValidHeaderValues and,
    #: with a single value, its Headers).
    one_of: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    absent: tuple[str, ...] = ()
    ignore_whitespace: bool = False

    def problem(self, target: Target) -> str | None:
        """None when the answer is as expected, else what is wrong with it."""
        got = send(target, self.request)
        if got.status not in self.statuses:
            return f"expected status {' or '.join(map(str, self.statuses))}, got {got.summary()}"
        if self.answered_by == GATEWAY and got.echo is not None:
            return f"expected the gateway to answer the preflight, but the backend did: {got.summary()}"
        if self.answered_by == BACKEND:
            echo = got.echo
            if echo is None:
                return f"expected the request to reach {V1}, got {got.summary()}"
            reached = (echo.get("method"), echo.get("path"), echo.get("namespace"))
            if reached != (self.request.method, self.request.path, INFRA) or not str(echo.get("pod")).startswith(V1):
                return f"expected {self.request.method} {self.request.path} at {INFRA}/{V1}, got {got.summary()}"
        headers: dict[str, list[str]] = {}
        for name, value in got.headers:
            headers.setdefault(name.lower(), []).append(value)

        def normal(value: str) -> str:
            return "".join(value.split()) if self.ignore_whitespace else value

        for name, valid in self.one_of.items():
            values = headers.get(name.lower())
            if values is None:
                return f"expected response header {name}, got headers {got.headers}"
            if normal(",".join(values)) not in {normal(v) for v in valid}:
                return f"expected response header {name} to be one of {list(valid)}, got {','.join(values)!r}"
        for name in self.absent:
            if name.lower() in headers:
                return f"expected no response header {name}, got {headers[name.lower()]}"
        return None


def preflight(path: str, origin: str, method: str, request_headers: str = "") -> Request:
    headers = {"Origin": origin, "access-control-request-method": method}
    if request_headers:
        headers["access-control-request-headers"] = request_headers
    return Request(path, method="OPTIONS", headers=headers)


ORIGIN = "access-control-allow-origin"
METHODS = "access-control-allow-methods"
HEADERS = "access-control-allow-headers"
EXPOSE = "access-control-expose-headers"
MAX_AGE = "access-control-max-age"
CREDENTIALS = "access-control-allow-credentials"


def cors_1_allowed(origin: str) -> dict[str, tuple[str, ...]]:
    """What the first route (two origins, methods, headers, exposed headers, credentials, max age) answers."""
    return {
        ORIGIN: (origin,),
        METHODS: ("GET, OPTIONS", "OPTIONS, GET"),
        HEADERS: ("x-header-1, x-header-2", "x-header-2, x-header-1"),
        EXPOSE: ("x-header-3, x-header-4", "x-header-4, x-header-3"),
        MAX_AGE: ("3600",),
        CREDENTIALS: ("true",),
    }


TWO_HEADERS = "x-header-1, x-header-2"
ASKED = {"access-control-request-method": "GET", "access-control-request-headers": TWO_HEADERS}
WITH_CREDENTIALS = {"Origin": "https://other.foo.com", "Authorization": "Bearer test"}

CORS_CASES = [
    CorsCase(
        "CORS preflight request from an exact matching origin should be allowed",
        preflight("/cors-1", "https://www.foo.com", "GET", TWO_HEADERS),
        GATEWAY,
        (200, 204),
        cors_1_allowed("https://www.foo.com"),
        ignore_whitespace=True,
    ),
    CorsCase(
        "CORS preflight request from a wildcard matching origin should be allowed",
        preflight("/cors-1", "https://www.bar.com", "GET", TWO_HEADERS),
        GATEWAY,
        one_of=cors_1_allowed("https://www.bar.com"),
        ignore_whitespace=True,
    ),
    CorsCase(
        "CORS preflight request from a wildcard matching any number of periods left to '*' should be allowed",
        preflight("/cors-1", "https://xpto.www.bar.com", "GET", TWO_HEADERS),
        GATEWAY,
        one_of=cors_1_allowed("https://xpto.www.bar.com"),
        ignore_whitespace=True,
    ),
    CorsCase(
        "CORS preflight request from a non-matching origin should not be allowed",
        preflight("/cors-1", "https://foobar.com", "GET"),
        EITHER,
        (200, 204, 403),
        absent=(ORIGIN,),
    ),
    CorsCase(
        "Simple request from an exact matching origin should be allowed",
        Request("/cors-1", headers={"Origin": "https://www.foo.com", **ASKED}),
        BACKEND,
        one_of={ORIGIN: ("https://www.foo.com",)},
    ),
    CorsCase(
        "Simple request from a wildcard matching origin should be allowed",
        Request("/cors-1", headers={"Origin": "https://www.bar.com", **ASKED}),
        BACKEND,
        one_of={ORIGIN: ("https://www.bar.com",)},
    ),
    CorsCase(
        "Simple request from a non-matching origin should not be allowed",
        Request("/cors-1", headers={"Origin": "https://foobar.com", "access-control-request-method": "GET"}),
        BACKEND,
        absent=(ORIGIN,),
    ),
    CorsCase(
        "CORS preflight request with POST method should be allowed by allowMethods with wildcard",
        preflight("/cors-2", "https://www.foo.com", "POST"),
        GATEWAY,
        (200, 204),
        {METHODS: ("POST", "*"), ORIGIN: ("https://www.foo.com",)},
        absent=(CREDENTIALS,),
    ),
    CorsCase(
        "CORS preflight request should not receive access-control-allow-credentials header without "
        "access-control-allow-credentials set to true",
        preflight("/cors-2", "https://www.foo.com", "POST"),
        GATEWAY,
        absent=(CREDENTIALS,),
    ),
    CorsCase(
        "Pre-flight request from a wildcard origin should return header with '*' or with the requested Origin",
        preflight("/cors-wildcard-origin", "https://foobar.com", "PUT"),
        GATEWAY,
        (200, 204),
        {ORIGIN: ("https://foobar.com", "*"), METHODS: ("PUT",)},
        absent=(CREDENTIALS,),
    ),
    CorsCase(
        "Pre-flight request from a wildcard origin containing a port should return header with '*' or with the "
        "requested Origin",
        preflight("/cors-wildcard-origin", "https://foobar.com:12345", "PUT"),
        GATEWAY,
        (200, 204),
        {ORIGIN: ("https://foobar.com:12345", "*"), METHODS: ("PUT",)},
        absent=(CREDENTIALS,),
    ),
    CorsCase(
        "Request from a wildcard origin containing a port should return header with '*' or with the requested Origin",
        Request("/cors-wildcard-origin", method="PUT", headers={"Origin": "https://foobar.com:12345"}),
        BACKEND,
        one_of={ORIGIN: ("https://foobar.com:12345", "*")},
    ),
    CorsCase(
        "Simple request from a wildcard origin should return header with '*' or with the requested Origin",
        Request("/cors-wildcard-origin", method="PUT", headers={"Origin": "https://foobar.com"}),
        BACKEND,
        one_of={ORIGIN: ("https://foobar.com", "*")},
        absent=(CREDENTIALS,),
    ),
    CorsCase(
        "CORS preflight request requesting auth and specific method and headers should be allowed and always "
        "echo the origin",
        preflight("/cors-wildcard-methods-headers", "https://other.foo.com", "PUT", TWO_HEADERS),
        GATEWAY,
        one_of={
            ORIGIN: ("https://other.foo.com",),
            METHODS: ("PUT",),
            HEADERS: ("x-header-1, x-header-2", "x-header-2, x-header-1"),
            CREDENTIALS: ("true",),
        },
        ignore_whitespace=True,
    ),
    CorsCase(
        "CORS preflight request requesting auth and specific method and headers should hide auth headers on "
        "unauth path",
        preflight("/cors-wildcard-methods-headers-unauth", "https://other.foo.com", "PUT", TWO_HEADERS),
        GATEWAY,
        one_of={
            ORIGIN: ("https://other.foo.com", "*"),
            METHODS: ("PUT", "*"),
            HEADERS: ("x-header-1, x-header-2", "x-header-2, x-header-1", "*"),
        },
        absent=(CREDENTIALS,),
        ignore_whitespace=True,
    ),
    CorsCase(
        "Simple request with credentials auth should be allowed and always echo the origin",
        Request("/cors-wildcard-methods-headers", headers=WITH_CREDENTIALS),
        BACKEND,
        one_of={ORIGIN: ("https://other.foo.com",), CREDENTIALS: ("true",)},
    ),
    CorsCase(
        "Simple request with credentials should hide auth headers on unauth path",
        Request("/cors-wildcard-methods-headers-unauth", headers=WITH_CREDENTIALS),
        BACKEND,
        one_of={ORIGIN: ("https://other.foo.com",)},
        absent=(CREDENTIALS,),
    ),
]

CORS_ROUTES = (
    "cors-multiple-origins-methods-headers",
    "cors-wildcard-methods",
    "cors-wildcard-origin",
    "cors-wildcard-methods-headers",
)


def test_cors(conformance: Conformance) -> None:
    """HTTPRouteCORS: every case of upstream's table, concurrently as its parallel subtests run."""
    with conformance.applied("httproute-cors"):
        accepted(conformance, SAME_NS, *((INFRA, route) for route in CORS_ROUTES))
        target = conformance.gateway(*SAME_NS)
        with ThreadPoolExecutor(len(CORS_CASES)) as pool:
            results = list(pool.map(lambda c: until_consistent(lambda: c.problem(target), c.name), CORS_CASES))
        failures = [r for r in results if r is not None]
        assert not failures, f"{len(failures)} of {len(CORS_CASES)} CORS cases failed:\n  " + "\n  ".join(failures)


WEIGHTED_REQUESTS = 100


def test_request_header_modifier_backend_weights(conformance: Conformance) -> None:
    """HTTPRouteRequestHeaderModifierBackendWeights: two backendRefs of weight 10, each setting `Backend` to
    its own name. Every one of 100 requests must arrive with exactly one `Backend` header, naming the
    Deployment whose pod answered: a backendRef's filters apply only to the requests sent to it. Beyond
    upstream, both backends must have had some of them (the odds of a fair split giving all 100 to one
    side are 2 in 2^100)."""
    with conformance.applied("httproute-request-header-modifier-backend-weights"):
        accepted(conformance, SAME_NS, (INFRA, "request-header-modifier-backend-weights"))
        target = conformance.gateway(*SAME_NS)
        check_cases(target, [Case(Request("/"), Expect(namespace=INFRA))])  # succeeds before traffic is checked
        seen: Counter[str] = Counter()
        for _ in range(WEIGHTED_REQUESTS):
            got = send(target, Request("/"))
            assert got.status == 200, got.summary()
            assert got.echo is not None, got.summary()
            backends = got.echo["headers"].get("Backend", [])
            assert len(backends) == 1, f"expected a single 'Backend' header to have been set, got {got.summary()}"
            assert str(got.echo["pod"]).startswith(backends[0]), (
                f"the backendRef's header names {backends[0]!r} but pod {got.echo['pod']!r} answered"
            )
            seen[backends[0]] += 1
        assert set(seen) == {V1, V2}, f"expected both backends to receive traffic, got {dict(seen)}"
