"""Translating with the previous result's memo gives exactly what translating everything gives.

Every golden input is a starting world; random edits follow (routes changed, added at every point of the
creation order, deleted, re-read unchanged, made invalid; now and then a Gateway or Service changes too),
and after each one the incremental translation and the xDS build from its memo are compared with a
translation and build from nothing: IR, statuses, problems (in order) and resource versions.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest
from tests.golden.goldens import load_manifests

from stackway.controlplane import ControlPlane
from stackway.resources.raw import ObjectKey, RawObject, key_of
from stackway.resources.store import ResourceStore
from stackway.translate import Options, TranslateResult, translate
from stackway.xds.build import BuildMemo, build_incremental, build_snapshot

GOLDENS = sorted((Path(__file__).parents[1] / "golden" / "translator").glob("*.in.yaml"))
ROUTE_KINDS = ("HTTPRoute", "GRPCRoute", "TLSRoute")
OPTIONS = Options(now="2026-01-01T00:00:00Z")
STAMPS = ["", "2024-06-01T00:00:00Z", "2025-01-01T00:00:00Z", "2025-01-01T00:00:00Z", "2030-01-01T00:00:00Z"]


class World:
    """A provider's state that a test edits, checking incremental against full translation after each edit
    (and a control plane fed every state against the same full translation)."""

    def __init__(self, objects: dict[ObjectKey, RawObject]) -> None:
        self.objects = dict(objects)
        self.store = ResourceStore()
        self.result: TranslateResult | None = None
        self.built: BuildMemo | None = None
        self.control = ControlPlane(options=OPTIONS)

    def docs(self, *kinds: str) -> list[dict[str, Any]]:
        return [dict(raw.body) for key, raw in sorted(self.objects.items()) if key.kind in kinds]

    def put(self, doc: dict[str, Any]) -> None:
        key = key_of(doc)
        self.objects[key] = RawObject(key, doc)

    def check(self) -> None:
        resources, _ = self.store.update(self.objects)
        result = translate(resources, OPTIONS, self.result)
        full = translate(resources, OPTIONS)
        assert result.ir == full.ir
        assert result.statuses == full.statuses
        assert result.problems == full.problems
        try:
            expected = build_snapshot(full.ir)
        except ValueError:
            expected = None
        try:
            snapshot, built = build_incremental(result.ir, self.built)
        except ValueError:
            assert expected is None
        else:
            assert expected is not None
            assert snapshot.versions == expected.versions
            self.built = built
        self.result = result
        published = self.control.update(self.objects)
        if expected is not None:
            assert published.snapshot is not None
            assert published.snapshot.version == expected.version
            assert {k: untimed(v) for k, v in self.control.statuses.items()} == {
                k: untimed(v) for k, v in full.statuses.items()
            }
            assert self.control.generations == {
                k: raw.body["metadata"].get("generation", 1)
                for k, raw in self.objects.items()
                if k in self.control.statuses
            }


def untimed(value: Any) -> Any:
    """A status without its lastTransitionTimes (the control plane stamps real ones)."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k != "lastTransitionTime"}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def mutate(rng: random.Random, doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    spec = doc.setdefault("spec", {})
    rules = spec.get("rules") or [{}]
    rule = rng.choice(rules) if isinstance(rules, list) and rules else {}
    if not isinstance(rule, dict):
        return doc
    choice = rng.randrange(7)
    if choice == 0 and rule.get("backendRefs"):
        ref = rng.choice(rule["backendRefs"])
        ref["weight"] = rng.choice([0, 1, 3])
    elif choice == 1 and rule.get("backendRefs"):
        rng.choice(rule["backendRefs"])["name"] = rng.choice(["missing", "a", "b", "echo"])
    elif choice == 2 and doc["kind"] == "HTTPRoute":
        rule["matches"] = [{"path": {"type": "PathPrefix", "value": f"/p{rng.randrange(5)}"}}]
    elif choice == 3:
        spec["hostnames"] = rng.choice([[], ["example.com"], ["*.example.com"], ["other.org", "a.example.com"]])
    elif choice == 4 and doc["kind"] == "HTTPRoute":
        rule["filters"] = [{"type": "RequestRedirect", "requestRedirect": {"statusCode": 301}}]
    elif choice == 5 and spec.get("parentRefs"):
        ref = rng.choice(spec["parentRefs"])
        ref["sectionName"] = rng.choice(["http", "https", "default", "nope"])
    else:
        rule["name"] = rng.choice(["same", "same", "other"])  # duplicate rule names within one route
    return doc


def step(rng: random.Random, world: World, n: int) -> None:
    routes = world.docs(*ROUTE_KINDS)
    choice = rng.random()
    if choice < 0.35 and routes:
        world.put(mutate(rng, rng.choice(routes)))
    elif choice < 0.6 and routes:
        doc = copy.deepcopy(rng.choice(routes))
        doc["metadata"] = {**doc["metadata"], "name": f"copy-{n}", "creationTimestamp": rng.choice(STAMPS)}
        world.put(mutate(rng, doc) if rng.random() < 0.5 else doc)
    elif choice < 0.75 and routes:
        del world.objects[key_of(rng.choice(routes))]
    elif choice < 0.85 and routes:
        world.put(copy.deepcopy(rng.choice(routes)))  # read again, unchanged: a new but equal object
    elif choice < 0.9 and routes:
        doc = copy.deepcopy(rng.choice(routes))
        doc["spec"]["rules"] = "not a list"  # invalid: served as its last good version, or reported
        world.put(doc)
    elif choice < 0.93:
        others = world.docs("Service", "Gateway")
        if others:
            doc = copy.deepcopy(rng.choice(others))
            doc.setdefault("metadata", {}).setdefault("labels", {})["touched"] = str(n)
            world.put(doc)
    elif choice < 0.99:
        services = world.docs("Service")
        if services:
            world.put(endpoint_slice(rng, rng.choice(services), n))
    # else: nothing changed at all


def endpoint_slice(rng: random.Random, service: dict[str, Any], n: int) -> dict[str, Any]:
    """A slice for the Service (new, or replacing one of its two), with 0 to 2 ready endpoints."""
    meta = service["metadata"]
    ports = [
        {"port": 9000 + n % 5, **({"name": p["name"]} if isinstance(p, dict) and "name" in p else {})}
        for p in (service.get("spec") or {}).get("ports") or []
    ]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{meta['name']}-{rng.randrange(2)}",
            "namespace": meta.get("namespace", "default"),
            "labels": {"kubernetes.io/service-name": meta["name"]},
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": [{"addresses": [f"10.9.{n % 250}.{i}"]} for i in range(rng.randint(0, 2))],
    }


@pytest.mark.parametrize("case", GOLDENS, ids=[c.name.removesuffix(".in.yaml") for c in GOLDENS])
def test_incremental_translation_equals_full_on_random_edits(case: Path) -> None:
    rng = random.Random(case.name)
    world = World(load_manifests(case))
    world.check()
    for n in range(40):
        step(rng, world, n)
        world.check()


def big_world(routes: int) -> dict[ObjectKey, RawObject]:
    from stackway.demo.manifests import gateway, gateway_class, http_route, service_with_endpoints

    docs = [gateway_class(), gateway("gw", "default", 8080), *service_with_endpoints("a", "default", 9001)]
    docs += service_with_endpoints("b", "default", 9002)
    for i in range(routes):
        doc = http_route(f"r{i:03d}", "default", "gw", {"a": 1}, path=f"/{i % 7}")
        doc["metadata"]["creationTimestamp"] = f"2025-01-01T00:00:{i % 60:02d}Z"
        docs.append(doc)
    return {key_of(d): RawObject(key_of(d), d) for d in docs}


def test_many_routes_in_one_virtual_host() -> None:
    """Ties in precedence everywhere (7 paths, 100 routes), so creation order decides: labels are put to work."""
    rng = random.Random(7)
    world = World(big_world(100))
    world.check()
    for n in range(150):
        step(rng, world, n)
        world.check()


def test_unchanged_routes_keep_their_ir_objects() -> None:
    """What makes the rest incremental: an edit to one route hands every other IR route over as is."""
    world = World(big_world(50))
    world.check()
    before = world.result
    assert before is not None
    doc = world.docs("HTTPRoute")[10]
    doc["spec"]["rules"][0]["backendRefs"][0]["name"] = "b"
    world.put(doc)
    world.check()
    after = world.result
    assert after is not None
    old = before.ir.listeners[0].filter_chains[0].route_config
    new = after.ir.listeners[0].filter_chains[0].route_config
    assert old is not None
    assert new is not None
    kept = {id(r) for r in old.virtual_hosts[0].routes}
    changed = [r for r in new.virtual_hosts[0].routes if id(r) not in kept]
    assert [r.name for r in changed] == ["httproute/default/r010/rule/0/match/0"]
