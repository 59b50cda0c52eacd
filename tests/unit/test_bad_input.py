"""Bad input, one test each: the problem names object and field, and everything valid keeps being served."""

from __future__ import annotations

import base64
import copy
from typing import Any

from stackway.controlplane import ControlPlane
from stackway.resources.raw import ObjectKey, RawObject, Source, key_of

GW = "gateway.networking.k8s.io/v1"
CLASS = {
    "apiVersion": GW,
    "kind": "GatewayClass",
    "metadata": {"name": "stackway"},
    "spec": {"controllerName": "stackway.dev/gateway-controller"},
}
GATEWAY = {
    "apiVersion": GW,
    "kind": "Gateway",
    "metadata": {"name": "gw"},
    "spec": {"gatewayClassName": "stackway", "listeners": [{"name": "http", "port": 8080, "protocol": "HTTP"}]},
}
SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}}
GOOD_ROUTE = {
    "apiVersion": GW,
    "kind": "HTTPRoute",
    "metadata": {"name": "good"},
    "spec": {
        "parentRefs": [{"name": "gw"}],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/good"}}],
                "backendRefs": [{"name": "svc", "port": 80}],
            }
        ],
    },
}


def run(*extra: dict[str, Any]) -> ControlPlane:
    control = ControlPlane()
    objects: dict[ObjectKey, RawObject] = {}
    for n, body in enumerate((CLASS, GATEWAY, SERVICE, GOOD_ROUTE, *extra)):
        key = key_of(body)
        objects[key] = RawObject(key, body, Source("in.yaml", n * 10 + 1))
    control.update(objects)
    return control


def problems(control: ControlPlane) -> list[dict[str, Any]]:
    return [p for p in control.problem_document() if p["severity"] == "error"]


def served_route_names(control: ControlPlane) -> set[str]:
    names: set[str] = set()
    for listener in control.snapshot.of_type("type.googleapis.com/envoy.config.route.v3.RouteConfiguration").values():
        for vh in listener.virtual_hosts:  # type: ignore[attr-defined]
            names.update(r.name for r in vh.routes)
    return names


def route(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": GW, "kind": "HTTPRoute", "metadata": {"name": name}, "spec": spec}


def good_still_served(control: ControlPlane) -> bool:
    return "httproute/default/good/rule/0/match/0" in served_route_names(control)


def test_wrong_typed_field_names_the_field_and_file() -> None:
    bad = route("bad", parentRefs=[{"name": "gw", "port": "http"}])
    control = run(bad)
    [p] = problems(control)
    assert p["field"] == "spec.parentRefs[0].port"
    assert p["file"] == "in.yaml"
    assert p["line"] == 41
    assert "HTTPRoute" in p["object"]
    assert good_still_served(control)


def test_missing_required_field() -> None:
    bad = route("bad", parentRefs=[{"name": "gw"}], rules=[{"backendRefs": [{"port": 80}]}])
    control = run(bad)
    assert [p["field"] for p in problems(control)] == ["spec.rules[0].backendRefs[0].name"]
    assert good_still_served(control)


def test_unknown_kind_is_a_warning_not_an_error() -> None:
    control = run({"apiVersion": "example.com/v1", "kind": "Gizmo", "metadata": {"name": "g"}})
    assert not problems(control)
    [w] = [p for p in control.problem_document() if p["severity"] == "warning"]
    assert w["field"] == "kind"
    assert good_still_served(control)


def test_reference_to_missing_service_answers_500_and_sets_condition() -> None:
    bad = route(
        "bad",
        parentRefs=[{"name": "gw"}],
        rules=[
            {"matches": [{"path": {"type": "Exact", "value": "/bad"}}], "backendRefs": [{"name": "nope", "port": 80}]}
        ],
    )
    control = run(bad)
    [p] = problems(control)
    assert p["field"] == "spec.rules[0].backendRefs[0]"
    status = next(d["status"] for d in control.status_document() if d["metadata"]["name"] == "bad")
    resolved = next(c for c in status["parents"][0]["conditions"] if c["type"] == "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
    routes = control.snapshot.of_type("type.googleapis.com/envoy.config.route.v3.RouteConfiguration")
    [rc] = routes.values()
    bad_route = next(r for vh in rc.virtual_hosts for r in vh.routes if r.name.startswith("httproute/default/bad"))  # type: ignore[attr-defined]
    assert bad_route.direct_response.status == 500
    assert good_still_served(control)


def test_conflicting_listeners() -> None:
    gw = copy.deepcopy(GATEWAY)
    gw["metadata"]["name"] = "conflicted"
    gw["spec"]["listeners"] = [
        {"name": "a", "port": 9000, "protocol": "HTTP"},
        {"name": "b", "port": 9000, "protocol": "HTTPS", "tls": {"certificateRefs": [{"name": "x"}]}},
    ]
    control = run(gw)
    status = next(d["status"] for d in control.status_document() if d["metadata"]["name"] == "conflicted")
    conflicted = [next(c for c in lst["conditions"] if c["type"] == "Conflicted") for lst in status["listeners"]]
    assert {(c["status"], c["reason"]) for c in conflicted} == {("True", "ProtocolConflict")}
    assert any(p["object"].endswith("default/conflicted") for p in problems(control))
    assert good_still_served(control)


def test_secret_that_is_not_a_certificate() -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "cert"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": base64.b64encode(b"not a cert").decode(), "tls.key": base64.b64encode(b"k").decode()},
    }
    gw = copy.deepcopy(GATEWAY)
    gw["metadata"]["name"] = "tls"
    gw["spec"]["listeners"] = [
        {"name": "https", "port": 8443, "protocol": "HTTPS", "tls": {"certificateRefs": [{"name": "cert"}]}}
    ]
    control = run(gw, secret)
    [p] = problems(control)
    assert p["field"] == "spec.listeners[0].tls.certificateRefs[0]"
    assert "tls.crt" in p["message"]
    status = next(d["status"] for d in control.status_document() if d["metadata"]["name"] == "tls")
    resolved = next(c for c in status["listeners"][0]["conditions"] if c["type"] == "ResolvedRefs")
    assert resolved["reason"] == "InvalidCertificateRef"
    listeners = control.snapshot.of_type("type.googleapis.com/envoy.config.listener.v3.Listener")
    assert set(listeners) == {"listener/0.0.0.0/8080"}
    assert good_still_served(control)


def test_invalid_regular_expression_rejects_the_route_not_the_snapshot() -> None:
    bad = route(
        "bad",
        parentRefs=[{"name": "gw"}],
        rules=[
            {
                "matches": [{"path": {"type": "RegularExpression", "value": "/(unclosed"}}],
                "backendRefs": [{"name": "svc", "port": 80}],
            }
        ],
    )
    control = run(bad)
    assert control.system_error is None
    [p] = problems(control)
    assert p["field"] == "spec.rules[0].matches[0].path.value"
    status = next(d["status"] for d in control.status_document() if d["metadata"]["name"] == "bad")
    accepted = next(c for c in status["parents"][0]["conditions"] if c["type"] == "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "UnsupportedValue")
    assert good_still_served(control)
