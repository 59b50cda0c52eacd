"""A store told which keys changed gives what a store looking at every object gives, after the same history."""

from __future__ import annotations

import copy
import dataclasses
import random
from typing import Any

from stackway.resources.raw import ObjectKey, RawObject, Source, key_of
from stackway.resources.store import ResourceStore

GW = "gateway.networking.k8s.io/v1"


def doc(rng: random.Random, n: int) -> dict[str, Any]:
    name = f"o{rng.randrange(12)}"
    ns = rng.choice(["a", "b"])
    kind = rng.choice(["Service", "EndpointSlice", "HTTPRoute", "Gateway", "Namespace", "Widget", "bad"])
    if kind == "Service":
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": {}}
    if kind == "EndpointSlice":
        return {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": {"kubernetes.io/service-name": rng.choice(["s1", "s2"])},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [f"10.0.0.{n % 250}"]}],
        }
    if kind == "HTTPRoute":
        return {
            "apiVersion": GW,
            "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"matches": [{"path": {"value": f"/{n}"}}]}]},
        }
    if kind == "Gateway":
        spec: Any = {"gatewayClassName": "x", "listeners": [{"name": "l", "port": 80 + n % 3, "protocol": "HTTP"}]}
        return {"apiVersion": GW, "kind": "Gateway", "metadata": {"name": name, "namespace": ns}, "spec": spec}
    if kind == "Namespace":
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"n": str(n)}}}
    if kind == "Widget":
        return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name, "namespace": ns}}
    # an HTTPRoute that does not validate: the last good version is served, if there is one
    return {"apiVersion": GW, "kind": "HTTPRoute", "metadata": {"name": name, "namespace": ns}, "spec": {"rules": 3}}


def test_incremental_store_equals_full_store_after_the_same_history() -> None:
    rng = random.Random(3)
    incremental, full = ResourceStore(), ResourceStore()
    objects: dict[ObjectKey, RawObject] = {}
    for n in range(400):
        before = dict(objects)
        for _ in range(rng.randint(0, 3)):
            if objects and rng.random() < 0.3:
                del objects[rng.choice(sorted(objects))]
            else:
                body = doc(rng, n)
                objects[key_of(body)] = RawObject(key_of(body), body, Source(f"f{n % 4}.yaml", n))
        if objects and rng.random() < 0.2:  # read again: a new but equal object
            key = rng.choice(sorted(objects))
            objects[key] = RawObject(key, copy.deepcopy(dict(objects[key].body)), objects[key].source)
        changed = {k for k in objects.keys() | before.keys() if objects.get(k) is not before.get(k)}
        got, got_problems = incremental.update(objects, changed)
        want, want_problems = full.update(objects)
        for f in dataclasses.fields(want):
            assert dict(getattr(got, f.name)) == dict(getattr(want, f.name)), (n, f.name)
        assert got_problems == want_problems


def test_unchanged_kinds_keep_their_maps() -> None:
    store = ResourceStore()
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "a"}, "spec": {}}
    route = {"apiVersion": GW, "kind": "HTTPRoute", "metadata": {"name": "r", "namespace": "a"}, "spec": {}}
    objects = {key_of(d): RawObject(key_of(d), d) for d in (svc, route)}
    first, _ = store.update(objects, None)
    edited = {**route, "spec": {"hostnames": ["x.example"]}}
    objects[key_of(edited)] = RawObject(key_of(edited), edited)
    second, _ = store.update(objects, {key_of(edited)})
    assert second.services is first.services
    assert second.http_routes is not first.http_routes
    assert second.http_routes[("a", "r")].spec.hostnames == ("x.example",)
