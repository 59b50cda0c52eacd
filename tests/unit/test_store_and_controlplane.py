"""The store keeps the last valid version of an object; the control plane keeps the last good snapshot."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from stackway.controlplane import ControlPlane, stamp_transition_times
from stackway.resources.raw import ObjectKey, RawObject, Source, key_of
from stackway.resources.store import ResourceStore

CLASS = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "GatewayClass",
    "metadata": {"name": "stackway"},
    "spec": {"controllerName": "stackway.dev/gateway-controller"},
}
GATEWAY = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "Gateway",
    "metadata": {"name": "gw", "namespace": "default"},
    "spec": {"gatewayClassName": "stackway", "listeners": [{"name": "http", "port": 8080, "protocol": "HTTP"}]},
}
ROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": "r", "namespace": "default"},
    "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "svc", "port": 80}]}]},
}
SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}}


def objects(*bodies: dict[str, Any]) -> dict[ObjectKey, RawObject]:
    out = {}
    for body in bodies:
        key = key_of(body)
        out[key] = RawObject(key, body, Source("m.yaml", 1))
    return out


def test_invalid_edit_keeps_last_valid_object() -> None:
    store = ResourceStore()
    resources, problems = store.update(objects(CLASS, GATEWAY, ROUTE, SERVICE))
    assert not [p for p in problems if p.severity == "error"]
    good_route = resources.http_routes[("default", "r")]
    broken = copy.deepcopy(ROUTE)
    broken["spec"]["rules"][0]["backendRefs"][0]["port"] = "eighty"
    resources, problems = store.update(objects(CLASS, GATEWAY, broken, SERVICE))
    assert resources.http_routes[("default", "r")] == good_route
    fields = [p.field for p in problems if p.severity == "error"]
    assert fields == ["spec.rules[0].backendRefs[0].port"]
    assert any("last valid version" in p.message for p in problems)


def test_never_valid_object_is_reported_not_served() -> None:
    broken = copy.deepcopy(ROUTE)
    broken["spec"]["parentRefs"] = "gw"
    resources, problems = ResourceStore().update(objects(CLASS, GATEWAY, broken))
    assert ("default", "r") not in resources.http_routes
    assert key_of(broken) in resources.invalid
    assert [p.field for p in problems] == ["spec.parentRefs"]


def test_deleted_object_forgets_last_good() -> None:
    store = ResourceStore()
    store.update(objects(CLASS, GATEWAY, ROUTE))
    resources, _ = store.update(objects(CLASS, GATEWAY))
    assert not resources.http_routes
    broken = copy.deepcopy(ROUTE)
    broken["spec"]["parentRefs"] = 3
    resources, _ = store.update(objects(CLASS, GATEWAY, broken))
    assert not resources.http_routes


def test_control_plane_publishes_and_reports_statuses() -> None:
    control = ControlPlane()
    result = control.update(objects(CLASS, GATEWAY, ROUTE, SERVICE))
    assert result.changed
    assert result.snapshot is not None
    kinds = {doc["kind"] for doc in control.status_document()}
    assert kinds == {"GatewayClass", "Gateway", "HTTPRoute"}
    again = control.update(objects(CLASS, GATEWAY, ROUTE, SERVICE))
    assert not again.changed


def test_transition_time_survives_unchanged_status() -> None:
    old = {"conditions": [{"type": "Accepted", "status": "True", "lastTransitionTime": "T0"}]}
    same = {"conditions": [{"type": "Accepted", "status": "True", "lastTransitionTime": "T1"}]}
    flipped = {"conditions": [{"type": "Accepted", "status": "False", "lastTransitionTime": "T2"}]}
    assert stamp_transition_times(old, same, "NOW")["conditions"][0]["lastTransitionTime"] == "T0"
    assert stamp_transition_times(old, flipped, "NOW")["conditions"][0]["lastTransitionTime"] == "NOW"
    assert stamp_transition_times(None, same, "NOW")["conditions"][0]["lastTransitionTime"] == "NOW"


def test_statuses_carry_real_times_and_keep_them_across_updates() -> None:
    control = ControlPlane()
    control.update(objects(CLASS, GATEWAY, ROUTE, SERVICE))
    first = control.status_document()
    times = {c["lastTransitionTime"] for d in first for c in d["status"].get("conditions", [])}
    assert times
    assert "1970-01-01T00:00:00Z" not in times
    control.update(objects(CLASS, GATEWAY, ROUTE, SERVICE))
    assert control.status_document() == first


def test_a_translation_bug_keeps_the_last_good_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    import stackway.controlplane as cp

    control = ControlPlane()
    control.update(objects(CLASS, GATEWAY, ROUTE, SERVICE))
    good = control.snapshot.version

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cp, "translate", broken)
    result = control.update(objects(CLASS, GATEWAY, SERVICE))
    assert result.snapshot is None
    assert control.snapshot.version == good
    assert control.system_error == "RuntimeError: a bug"
    assert any("internal" in p["message"] for p in control.problem_document())


def test_generations_catch_up_after_a_failed_translation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generations are kept from the keys each update changed; those of a failed update are not lost."""
    import stackway.controlplane as cp

    state = objects(CLASS, GATEWAY, ROUTE, SERVICE)
    control = ControlPlane()
    control.update(state)
    route_key = key_of(ROUTE)
    assert control.generations[route_key] == 1
    edited = copy.deepcopy(ROUTE)
    edited["metadata"]["generation"] = 2
    state[route_key] = RawObject(route_key, edited, Source("m.yaml", 1))
    real = cp.translate

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cp, "translate", broken)
    control.update(dict(state))
    monkeypatch.setattr(cp, "translate", real)
    service = copy.deepcopy(SERVICE)
    service["metadata"]["labels"] = {"touched": "yes"}
    state[key_of(service)] = RawObject(key_of(service), service, Source("m.yaml", 1))
    control.update(dict(state))  # the route is the same object as in the failed update
    assert control.generations[route_key] == 2


def test_a_change_hint_is_used_only_against_the_mapping_it_names() -> None:
    first = objects(CLASS, GATEWAY, ROUTE, SERVICE)
    control = ControlPlane()
    control.update(first)
    edited = copy.deepcopy(ROUTE)
    edited["spec"]["hostnames"] = ["a.example"]
    second = {**first, key_of(edited): RawObject(key_of(edited), edited, Source("m.yaml", 1))}
    control.update(second, changed={key_of(edited)}, base=first)
    assert control.statuses[key_of(edited)] is not None
    assert control.resources.http_routes[("default", "r")].spec.hostnames == ("a.example",)
    # A hint relative to a state this control plane never saw is ignored: the objects are compared instead.
    third = {k: v for k, v in second.items() if k != key_of(edited)}
    control.update(third, changed=set(), base=first)
    assert ("default", "r") not in control.resources.http_routes
