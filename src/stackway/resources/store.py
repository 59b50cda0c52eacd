"""ResourceStore: typed objects by kind, with last-good semantics for objects that stop validating.

In a cluster the API server rejects an invalid edit and the previous object stays. Standalone mode has
no API server, so the store plays that part: when an object that parsed before stops parsing, the last
good version keeps being served and the problem is reported. Parsing is cached by body identity so a
change to one file re-parses only that file's objects.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

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
        namespaces: dict[str, core.Namespace] = {}
        services: dict[NsName, core.Service] = {}
        slices: dict[NsName, list[core.EndpointSlice]] = defaultdict(list)
        secrets: dict[NsName, core.Secret] = {}
        config_maps: dict[NsName, core.ConfigMap] = {}
        policies: dict[NsName, gatewayapi.BackendTLSPolicy] = {}
        classes: dict[str, gatewayapi.GatewayClass] = {}
        gateways: dict[NsName, gatewayapi.Gateway] = {}
        routes: dict[NsName, gatewayapi.HTTPRoute] = {}
        grpc_routes: dict[NsName, gatewayapi.GRPCRoute] = {}
        tls_routes: dict[NsName, gatewayapi.TLSRoute] = {}
        grants: dict[NsName, gatewayapi.ReferenceGrant] = {}
        ingresses: dict[NsName, networking.Ingress] = {}
        ingress_classes: dict[str, networking.IngressClass] = {}
        for key, obj in sorted(typed, key=lambda item: item[0]):
            nsname = (key.namespace, key.name)
            match obj:
                case core.Namespace():
                    namespaces[key.name] = obj
                case core.Service():
                    services[nsname] = obj
                case core.EndpointSlice():
                    if obj.service_name:
                        slices[(key.namespace, obj.service_name)].append(obj)
                case core.Secret():
                    secrets[nsname] = obj
                case core.ConfigMap():
                    config_maps[nsname] = obj
                case gatewayapi.BackendTLSPolicy():
                    policies[nsname] = obj
                case gatewayapi.GatewayClass():
                    classes[key.name] = obj
                case gatewayapi.Gateway():
                    gateways[nsname] = obj
                case gatewayapi.HTTPRoute():
                    routes[nsname] = obj
                case gatewayapi.GRPCRoute():
                    grpc_routes[nsname] = obj
                case gatewayapi.TLSRoute():
                    tls_routes[nsname] = obj
                case gatewayapi.ReferenceGrant():
                    grants[nsname] = obj
                case networking.Ingress():
                    ingresses[nsname] = obj
                case networking.IngressClass():
                    ingress_classes[key.name] = obj
        return cls(
            namespaces=namespaces,
            services=services,
            endpoint_slices={k: tuple(v) for k, v in slices.items()},
            secrets=secrets,
            config_maps=config_maps,
            backend_tls_policies=policies,
            gateway_classes=classes,
            gateways=gateways,
            http_routes=routes,
            grpc_routes=grpc_routes,
            tls_routes=tls_routes,
            reference_grants=grants,
            ingresses=ingresses,
            ingress_classes=ingress_classes,
            invalid=dict(invalid or {}),
            sources=dict(sources or {}),
        )


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
    """Turns successive provider states into `Resources`, keeping the last good version of each object."""

    def __init__(self) -> None:
        self._parsed: dict[ObjectKey, tuple[object, BaseModel | InvalidObject]] = {}
        self._last_good: dict[ObjectKey, BaseModel] = {}

    def update(self, objects: Mapping[ObjectKey, RawObject]) -> tuple[Resources, list[StoreProblem]]:
        problems: list[StoreProblem] = []
        typed: list[tuple[ObjectKey, BaseModel]] = []
        invalid: dict[ObjectKey, InvalidObject] = {}
        for key in [k for k in self._parsed if k not in objects]:
            del self._parsed[key]
            self._last_good.pop(key, None)
        for key, raw in objects.items():
            if not is_supported(key):
                if not is_ignored(key):
                    problems.append(
                        StoreProblem(
                            key,
                            raw.source,
                            "kind",
                            f"{key.kind} ({raw.body.get('apiVersion')}) is not a kind stackway serves; ignored",
                            "warning",
                        )
                    )
                continue
            cached = self._parsed.get(key)
            if cached is not None and cached[0] is raw.body:
                result = cached[1]
            else:
                result = parse(raw)
                self._parsed[key] = (raw.body, result)
            if isinstance(result, InvalidObject):
                for fld, msg in result.problems:
                    problems.append(StoreProblem(key, raw.source, fld, msg))
                last = self._last_good.get(key)
                if last is not None:
                    problems.append(
                        StoreProblem(key, raw.source, "", "keeps serving its last valid version", "warning")
                    )
                    typed.append((key, last))
                else:
                    invalid[key] = result
            else:
                self._last_good[key] = result
                typed.append((key, result))
        sources = {k: r.source for k, r in objects.items() if r.source is not None}
        return Resources.build(typed, invalid, sources), problems
