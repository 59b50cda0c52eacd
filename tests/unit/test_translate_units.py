"""Unit tests for the translator's small rules: hostname intersection, selectors, references, precedence."""

from __future__ import annotations

import pytest

from stackway.resources.base import LabelSelector
from stackway.resources.gatewayapi import HTTPRouteMatch, ReferenceGrant
from stackway.translate.gatewayapi.httprules import http_match
from stackway.translate.gatewayapi.routes import precedence
from stackway.translate.hostnames import effective_hostnames, intersect
from stackway.translate.refs import granted


@pytest.mark.parametrize(
    ("listener", "route", "expected"),
    [
        (None, "foo.example.com", "foo.example.com"),
        ("foo.example.com", "foo.example.com", "foo.example.com"),
        ("foo.example.com", "bar.example.com", None),
        ("*.example.com", "foo.example.com", "foo.example.com"),
        ("*.example.com", "a.b.example.com", "a.b.example.com"),
        ("*.example.com", "example.com", None),
        ("*.example.com", "*.foo.example.com", "*.foo.example.com"),
        ("*.foo.example.com", "*.example.com", "*.foo.example.com"),
        ("foo.example.com", "*.example.com", "foo.example.com"),
        ("example.com", "*.example.com", None),
        ("*.example.com", "*.example.org", None),
    ],
)
def test_hostname_intersection(listener: str | None, route: str, expected: str | None) -> None:
    assert intersect(listener, route) == expected


def test_effective_hostnames_defaults_and_dedup() -> None:
    assert effective_hostnames(None, ()) == ("*",)
    assert effective_hostnames("*.a.com", ()) == ("*.a.com",)
    assert effective_hostnames("*.a.com", ("x.a.com", "x.a.com", "b.com")) == ("x.a.com",)
    assert effective_hostnames("a.com", ("b.com",)) == ()


def test_label_selector_semantics() -> None:
    sel = LabelSelector.model_validate(
        {
            "matchLabels": {"team": "a"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "stage"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }
    )
    assert sel.matches({"team": "a", "env": "prod"})
    assert not sel.matches({"team": "a", "env": "dev"})
    assert not sel.matches({"team": "a", "env": "prod", "legacy": "1"})
    assert not sel.matches({"env": "prod"})
    assert LabelSelector().matches({"anything": "x"})


def test_reference_grant_scoping() -> None:
    grant = ReferenceGrant.model_validate(
        {
            "metadata": {"name": "g", "namespace": "data"},
            "spec": {
                "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "web"}],
                "to": [{"group": "", "kind": "Service", "name": "db"}],
            },
        }
    )
    grants = {("data", "g"): grant}
    common = {"from_group": "gateway.networking.k8s.io", "from_kind": "HTTPRoute", "to_group": "", "to_kind": "Service"}
    assert granted(grants, from_namespace="web", to_namespace="data", to_name="db", **common)
    assert not granted(grants, from_namespace="web", to_namespace="data", to_name="other", **common)
    assert not granted(grants, from_namespace="evil", to_namespace="data", to_name="db", **common)
    assert not granted({}, from_namespace="web", to_namespace="data", to_name="db", **common)
    assert granted({}, from_namespace="data", to_namespace="data", to_name="db", **common)


def _m(**kw: object) -> HTTPRouteMatch:
    return HTTPRouteMatch.model_validate(kw)


def test_precedence_order_follows_the_spec() -> None:
    matches = [
        _m(path={"type": "PathPrefix", "value": "/"}),
        _m(path={"type": "PathPrefix", "value": "/a"}, headers=[{"name": "x", "value": "1"}]),
        _m(path={"type": "PathPrefix", "value": "/a"}, method="GET"),
        _m(path={"type": "PathPrefix", "value": "/abc"}),
        _m(path={"type": "Exact", "value": "/a"}),
        _m(path={"type": "PathPrefix", "value": "/a"}, queryParams=[{"name": "q", "value": "1"}]),
        _m(
            path={"type": "PathPrefix", "value": "/a"},
            headers=[{"name": "x", "value": "1"}, {"name": "y", "value": "2"}],
        ),
    ]

    def key(i: int) -> tuple[object, ...]:
        m = http_match(matches[i])
        return precedence(m.path, m.method, len(m.headers), len(m.query_params))

    ordered = sorted(range(len(matches)), key=key)
    assert ordered == [4, 3, 2, 6, 1, 5, 0]


def test_regex_problems_match_what_envoy_refuses() -> None:
    from stackway.ir.regex import regex_problem

    assert regex_problem("/api/v[0-9]+/.*") is None
    assert "missing" in (regex_problem("/(unclosed") or "")
    assert "too complex" in (regex_problem("/[a-z]{150}") or "")
