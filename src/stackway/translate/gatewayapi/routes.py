"""Routes of every kind (HTTPRoute, GRPCRoute): attachment to listeners, precedence, and route status.

Attachment, hostnames and statuses are the same for every route kind; only turning rules into IR routes
differs, and lives in httprules.py and grpcrules.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from stackway.ir import model as ir
from stackway.resources.gatewayapi import (
    GROUP,
    BackendObjectReference,
    GRPCRoute,
    HTTPRoute,
    ParentReference,
    TLSRoute,
)
from stackway.resources.raw import ObjectKey
from stackway.translate import conditions as c
from stackway.translate.context import Context
from stackway.translate.gatewayapi.backends import BackendFailure, resolve_backend
from stackway.translate.gatewayapi.gateways import GatewayView, ListenerView
from stackway.translate.hostnames import effective_hostnames

AnyRoute = HTTPRoute | GRPCRoute | TLSRoute
Ordered = tuple[tuple[Any, ...], ir.Route]


@dataclass(frozen=True)
class Placed:
    """An IR route destined for one listener and hostname, with its precedence key."""

    listener: ListenerView
    hostname: str
    order: tuple[Any, ...]
    route: ir.Route


def precedence(path: ir.PathMatch, method: str | None, headers: int, query_params: int) -> tuple[Any, ...]:
    """Gateway API precedence: Exact path, longest prefix, method, most headers, most query params.

    Smaller sorts first. Regular expressions (implementation-specific) sit between Exact and PathPrefix.
    GRPCRoute methods are expressed as paths first, so both kinds order consistently on one hostname.
    """
    rank = {"Exact": 0, "RegularExpression": 1, "PathPrefix": 2}[path.type]
    return (rank, -len(path.value), method is None, -headers, -query_params)


class RouteTranslator:
    def __init__(self, ctx: Context, gateways: list[GatewayView]) -> None:
        self.ctx = ctx
        self.gateways = {(g.key.namespace, g.key.name): g for g in gateways}
        self.placed: list[Placed] = []
        self.clusters: dict[str, ir.Cluster] = {}
        self._backends: dict[tuple[str, bool, BackendObjectReference], ir.Cluster | BackendFailure] = {}
        self.resolved: tuple[bool, str, str] = (True, c.R_RESOLVED_REFS, "")

    def translate_all(self) -> None:
        from stackway.translate.gatewayapi.grpcrules import grpc_rules, grpc_unsupported
        from stackway.translate.gatewayapi.httprules import http_rules, http_unsupported, tls_rules

        routes: list[tuple[ObjectKey, AnyRoute]] = [
            (ObjectKey(GROUP, "HTTPRoute", ns, name), r) for (ns, name), r in self.ctx.resources.http_routes.items()
        ]
        routes += [
            (ObjectKey(GROUP, "GRPCRoute", ns, name), r) for (ns, name), r in self.ctx.resources.grpc_routes.items()
        ]
        routes += [
            (ObjectKey(GROUP, "TLSRoute", ns, name), r) for (ns, name), r in self.ctx.resources.tls_routes.items()
        ]
        routes.sort(key=lambda item: (item[1].metadata.creation_timestamp, item[0].namespace, item[0].name))
        for age, (key, route) in enumerate(routes):
            if isinstance(route, HTTPRoute):
                self._translate(
                    key, route, partial(http_unsupported, route), partial(http_rules, self, key, route, age)
                )
            elif isinstance(route, GRPCRoute):
                self._translate(
                    key, route, partial(grpc_unsupported, route), partial(grpc_rules, self, key, route, age)
                )
            else:
                self._translate(key, route, lambda: None, partial(tls_rules, self, key, route, age))

    def _translate(
        self,
        key: ObjectKey,
        route: AnyRoute,
        check: Callable[[], tuple[str, str] | None],
        build: Callable[[], list[Ordered]],
    ) -> None:
        gen, now = route.metadata.generation, self.ctx.options.now
        parents: list[dict[str, Any]] = []
        attachments: list[tuple[ListenerView, tuple[str, ...]]] = []
        for index, ref in enumerate(route.spec.parent_refs):
            gateway = self._parent_gateway(key, ref)
            if gateway is None:
                continue
            accepted, reason, message, hits = self._attach(key, route, ref, gateway)
            if not accepted:
                self.ctx.problem(key, f"spec.parentRefs[{index}]", message)
            attachments.extend(hits)
            parents.append(
                {
                    "parentRef": _parent_ref_status(ref),
                    "controllerName": self.ctx.options.controller_name,
                    "accepted": (accepted, reason, message),
                }
            )
        if not parents:
            return
        unsupported = check()
        self.resolved = (True, c.R_RESOLVED_REFS, "")
        rules = build() if unsupported is None else []
        resolved = self.resolved
        if unsupported is not None:
            self.ctx.problem(key, unsupported[0], unsupported[1])
        for parent in parents:
            ok, reason, message = parent.pop("accepted")
            if ok and unsupported is not None:
                ok, reason, message = False, c.R_UNSUPPORTED_VALUE, unsupported[1]
            parent["conditions"] = [
                c.condition(c.ACCEPTED, ok, reason, message, gen, now),
                c.condition(
                    c.RESOLVED_REFS, resolved[0], resolved[1], resolved[2] or "All references are resolved", gen, now
                ),
            ]
        self.ctx.statuses[key] = {"parents": parents}
        if unsupported is not None:
            return
        seen_listeners: set[int] = set()
        for listener, hostnames in attachments:
            if id(listener) not in seen_listeners:
                listener.attached_routes += 1
                seen_listeners.add(id(listener))
            if not listener.serving:
                continue
            for hostname in hostnames:
                for order, irroute in rules:
                    self.placed.append(Placed(listener, hostname, order, irroute))

    def _parent_gateway(self, key: ObjectKey, ref: ParentReference) -> GatewayView | None:
        """The Gateway a parentRef names, if it is one of ours (others belong to other controllers)."""
        if ref.group != GROUP or ref.kind != "Gateway":
            return None
        return self.gateways.get((ref.namespace or key.namespace, ref.name))

    def _attach(
        self, key: ObjectKey, route: AnyRoute, ref: ParentReference, gateway: GatewayView
    ) -> tuple[bool, str, str, list[tuple[ListenerView, tuple[str, ...]]]]:
        candidates = [
            lv
            for lv in gateway.listeners
            if (ref.section_name is None or lv.name == ref.section_name)
            and (ref.port is None or lv.spec.port == ref.port)
        ]
        if not candidates:
            what = f"listener {ref.section_name!r}" if ref.section_name else f"port {ref.port}"
            return (
                False,
                c.R_NO_MATCHING_PARENT,
                f"Gateway {gateway.key.namespace}/{gateway.key.name} has no {what}",
                [],
            )
        allowed = [lv for lv in candidates if self._allows(lv, key.namespace, key.kind)]
        if not allowed:
            return False, c.R_NOT_ALLOWED_BY_LISTENERS, "No listener of the parent allows this route", []
        hits = [(lv, hosts) for lv in allowed if (hosts := effective_hostnames(lv.spec.hostname, route.spec.hostnames))]
        if not hits:
            return (
                False,
                c.R_NO_MATCHING_LISTENER_HOSTNAME,
                "No listener hostname intersects the route's hostnames",
                [],
            )
        return True, c.R_ACCEPTED, "Route is accepted", hits

    def _allows(self, lv: ListenerView, route_ns: str, kind: str) -> bool:
        if not any(k.group == GROUP and k.kind == kind for k in lv.supported_kinds):
            return False
        ns_rule = lv.spec.allowed_routes.namespaces
        if ns_rule.from_ == "All":
            return True
        if ns_rule.from_ == "Same":
            return route_ns == lv.gateway.namespace
        if ns_rule.from_ == "Selector" and ns_rule.selector is not None:
            namespace = self.ctx.resources.namespaces.get(route_ns)
            return namespace is not None and ns_rule.selector.matches(namespace.labels)
        return False

    def resolve(self, key: ObjectKey, ref: BackendObjectReference, fld: str, h2c: bool = False) -> ir.Cluster | None:
        """The cluster a backendRef names, or None after recording why not (condition and problem)."""
        memo = (key.namespace, h2c, ref)
        result = self._backends.get(memo)
        if result is None:
            result = self._backends[memo] = resolve_backend(self.ctx, key.kind, key.namespace, ref, force_h2c=h2c)
        if isinstance(result, BackendFailure):
            if self.resolved[0]:
                self.resolved = (False, result.reason, result.message)
            self.ctx.problem(key, fld, result.message)
            return None
        self.clusters[result.name] = result
        return result


def _parent_ref_status(ref: ParentReference) -> dict[str, Any]:
    out: dict[str, Any] = {"group": ref.group, "kind": ref.kind, "name": ref.name}
    if ref.namespace is not None:
        out["namespace"] = ref.namespace
    if ref.section_name is not None:
        out["sectionName"] = ref.section_name
    if ref.port is not None:
        out["port"] = ref.port
    return out
