"""ResourceStore: typed objects by kind, with last-good semantics for objects that stop validating.

In a cluster the API server rejects an invalid edit and the previous object stays. Standalone mode has
no API server, so the store plays that part: when an object that parsed before stops parsing, the last
good version keeps being served and the problem is reported. Parsing is cached by body identity so a
change to one file re-parses only that file's objects.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from stackway.resources import core, gatewayapi, networking
from stackway.resources.catalog import InvalidObject, is_ignored, is_supported, parse
from stackway.resources.raw import ObjectKey, RawObject, Source

NsName = tuple[str, str]


@dataclass(frozen=True)
class Resources:
    """An immutable, indexed view of every typed object: the translator's only input."""

    namespaces: Mapping[str, core.Namespace] = field(default_factory=dict)
    services: Mapping[NsName, core.Service] = field(default_factory=dict)
    endpoint_slices: Mapping[NsName, tuple[core.EndpointSlice, ...]] = field(default_factory=dict)
    secrets: Mapping[NsName, core.Secret] = field(default_factory=dict)
    config_maps: Mapping[NsName, core.ConfigMap] = field(default_factory=dict)
    backend_tls_policies: Mapping[NsName, gatewayapi.BackendTLSPolicy] = field(default_factory=dict)
    gateway_classes: Mapping[str, gatewayapi.GatewayClass] = field(default_factory=dict)
    gateways: Mapping[NsName, gatewayapi.Gateway] = field(default_factory=dict)
    http_routes: Mapping[NsName, gatewayapi.HTTPRoute] = field(default_factory=dict)
    grpc_routes: Mapping[NsName, gatewayapi.GRPCRoute] = field(default_factory=dict)
    tls_routes: Mapping[NsName, gatewayapi.TLSRoute] = field(default_factory=dict)
    reference_grants: Mapping[NsName, gatewayapi.ReferenceGrant] = field(default_factory=dict)
    ingresses: Mapping[NsName, networking.Ingress] = field(default_factory=dict)
    ingress_classes: Mapping[str, networking.IngressClass] = field(default_factory=dict)
    #: Load-balancer members (read by the OpenStack controllers, not the translator).
    nodes: Mapping[str, core.Node] = field(default_factory=dict)
    #: Objects that never parsed (no last good version), so they can still get a status condition.
    invalid: Mapping[ObjectKey, InvalidObject] = field(default_factory=dict)
    sources: Mapping[ObjectKey, Source] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        typed: Iterable[tuple[ObjectKey, BaseModel]],
        invalid: Mapping[ObjectKey, InvalidObject] | None = None,
        sources: Mapping[ObjectKey, Source] | None = None,
    ) -> Resources:
        maps: dict[str, dict[Any, Any]] = {name: {} for name in _MAPS}
        slices: dict[NsName, list[core.EndpointSlice]] = defaultdict(list)
        for key, obj in sorted(typed, key=lambda item: _order(item[0])):
            slot = _slot(key, obj)
            if slot is None:
                continue
            name, index = slot
            if name == "endpoint_slices":
                assert isinstance(obj, core.EndpointSlice)
                slices[index].append(obj)
            else:
                maps[name][index] = obj
        return cls(
            endpoint_slices={k: tuple(v) for k, v in slices.items()},
            invalid=dict(invalid or {}),
            sources=dict(sources or {}),
            **maps,
        )


#: Fields of `Resources` holding one typed object per index key (EndpointSlices are grouped by Service).
_MAPS = (
    "namespaces",
    "services",
    "secrets",
    "config_maps",
    "backend_tls_policies",
    "gateway_classes",
    "gateways",
    "http_routes",
    "grpc_routes",
    "tls_routes",
    "reference_grants",
    "ingresses",
    "ingress_classes",
    "nodes",
)


def _order(key: ObjectKey) -> tuple[str, str, str, str]:
    return (key.group, key.kind, key.namespace, key.name)


def _slot(key: ObjectKey, obj: BaseModel) -> tuple[str, Any] | None:
    """The `Resources` field that holds `obj`, and its index key there (None: not indexed)."""
    nsname = (key.namespace, key.name)
    match obj:
        case core.Namespace():
            return "namespaces", key.name
        case core.Service():
            return "services", nsname
        case core.EndpointSlice():
            return ("endpoint_slices", (key.namespace, obj.service_name)) if obj.service_name else None
        case core.Secret():
            return "secrets", nsname
        case core.ConfigMap():
            return "config_maps", nsname
        case gatewayapi.BackendTLSPolicy():
            return "backend_tls_policies", nsname
        case gatewayapi.GatewayClass():
            return "gateway_classes", key.name
        case gatewayapi.Gateway():
            return "gateways", nsname
        case gatewayapi.HTTPRoute():
            return "http_routes", nsname
        case gatewayapi.GRPCRoute():
            return "grpc_routes", nsname
        case gatewayapi.TLSRoute():
            return "tls_routes", nsname
        case gatewayapi.ReferenceGrant():
            return "reference_grants", nsname
        case networking.Ingress():
            return "ingresses", nsname
        case networking.IngressClass():
            return "ingress_classes", key.name
        case core.Node():
            return "nodes", key.name
    return None


@dataclass(frozen=True)
class StoreProblem:
    """A problem with one object, for `validate`, `/api/status` and the log."""

    key: ObjectKey
    source: Source | None
    field: str
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.key}: {self.field}: {self.message}"


class ResourceStore:
    """Turns successive provider states into `Resources`, keeping the last good version of each object.

    Told which keys changed since the previous update, it looks at those alone: the other objects and
    every map of `Resources` none of them belongs to stay the very objects they were (which is also how
    the translator recognises that nothing but routes changed).
    """

    def __init__(self) -> None:
        self._parsed: dict[ObjectKey, tuple[object, BaseModel | InvalidObject]] = {}
        self._last_good: dict[ObjectKey, BaseModel] = {}
        #: Per key: the typed object served (or the invalid one reported) and the key's problems.
        self._served: dict[ObjectKey, BaseModel] = {}
        self._invalid: dict[ObjectKey, InvalidObject] = {}
        self._problems: dict[ObjectKey, list[StoreProblem]] = {}
        self._slices: dict[NsName, dict[ObjectKey, core.EndpointSlice]] = {}
        self._resources: Resources | None = None

    def update(
        self, objects: Mapping[ObjectKey, RawObject], changed: Collection[ObjectKey] | None = None
    ) -> tuple[Resources, list[StoreProblem]]:
        """`changed`: the keys added, removed or replaced since the previous call, if the caller knows
        them (they must be all of them); None looks at every object."""
        if changed is None or self._resources is None or 4 * len(changed) > len(objects) + len(self._parsed):
            # Looking at everything is as cheap when much changed, and leaves no tables sized for what went.
            resources = self._full(objects)
        else:
            resources = self._incremental(objects, changed)
        self._resources = resources
        problems = [
            p
            for key in sorted(self._problems, key=lambda k: _position(k, resources.sources))
            for p in self._problems[key]
        ]
        return resources, problems

    def _full(self, objects: Mapping[ObjectKey, RawObject]) -> Resources:
        self._parsed = {k: v for k, v in self._parsed.items() if k in objects}
        self._last_good = {k: v for k, v in self._last_good.items() if k in objects}
        self._served, self._invalid, self._problems, self._slices = {}, {}, {}, {}
        for key, raw in objects.items():
            self._look_at(key, raw)
        for key, obj in self._served.items():
            if isinstance(obj, core.EndpointSlice) and obj.service_name:
                self._slices.setdefault((key.namespace, obj.service_name), {})[key] = obj
        sources = {k: r.source for k, r in objects.items() if r.source is not None}
        return Resources.build(self._served.items(), self._invalid, sources)

    def _incremental(self, objects: Mapping[ObjectKey, RawObject], changed: Collection[ObjectKey]) -> Resources:
        assert self._resources is not None
        old = self._resources
        maps: dict[str, dict[Any, Any]] = {}  # copies of the fields that change

        def field(name: str) -> dict[Any, Any]:
            if name not in maps:
                maps[name] = dict(getattr(old, name))
            return maps[name]

        slice_groups: set[NsName] = set()
        for key in changed:
            before = self._served.pop(key, None)
            was_invalid = self._invalid.pop(key, None) is not None
            self._problems.pop(key, None)
            raw = objects.get(key)
            if raw is None:
                self._parsed.pop(key, None)
                self._last_good.pop(key, None)
            else:
                self._look_at(key, raw)
            after = self._served.get(key)
            if key in self._invalid:
                field("invalid")[key] = self._invalid[key]
            elif was_invalid:
                field("invalid").pop(key, None)
            if raw is not None and raw.source is not None:
                field("sources")[key] = raw.source
            elif key in old.sources:
                field("sources").pop(key, None)
            if after is before:
                continue
            for obj, sign in ((before, -1), (after, 1)):
                slot = _slot(key, obj) if obj is not None else None
                if slot is None:
                    continue
                name, index = slot
                if name == "endpoint_slices":
                    assert isinstance(obj, core.EndpointSlice)
                    group = self._slices.setdefault(index, {})
                    if sign > 0:
                        group[key] = obj
                    else:
                        group.pop(key, None)
                    slice_groups.add(index)
                elif sign > 0:
                    field(name)[index] = obj
                elif field(name).get(index) is obj:
                    del maps[name][index]
        for index in slice_groups:
            members = self._slices.get(index)
            if members:
                field("endpoint_slices")[index] = tuple(obj for _, obj in sorted(members.items(), key=_item_order))
            else:
                self._slices.pop(index, None)
                field("endpoint_slices").pop(index, None)
        return dataclasses.replace(old, **maps) if maps else old

    def _look_at(self, key: ObjectKey, raw: RawObject) -> None:
        """Type one object (reusing the last parse of the very same body) and record what it gives."""
        if not is_supported(key):
            if not is_ignored(key):
                self._problems[key] = [
                    StoreProblem(
                        key,
                        raw.source,
                        "kind",
                        f"{key.kind} ({raw.body.get('apiVersion')}) is not a kind stackway serves; ignored",
                        "warning",
                    )
                ]
            return
        cached = self._parsed.get(key)
        if cached is not None and cached[0] is raw.body:
            result = cached[1]
        else:
            result = parse(raw)
            self._parsed[key] = (raw.body, result)
        if isinstance(result, InvalidObject):
            problems = [StoreProblem(key, raw.source, fld, msg) for fld, msg in result.problems]
            last = self._last_good.get(key)
            if last is not None:
                problems.append(StoreProblem(key, raw.source, "", "keeps serving its last valid version", "warning"))
                self._served[key] = last
            else:
                self._invalid[key] = result
            self._problems[key] = problems
        else:
            self._last_good[key] = result
            self._served[key] = result


def _item_order(item: tuple[ObjectKey, Any]) -> tuple[str, str, str, str]:
    return _order(item[0])


def _position(key: ObjectKey, sources: Mapping[ObjectKey, Source]) -> tuple[str, int, tuple[str, str, str, str]]:
    """Where a problem is reported in the list: by file and line (as the files were read), then by key."""
    source = sources.get(key)
    return (source.file, source.line, _order(key)) if source is not None else ("", 0, _order(key))
