"""Gateway API resources → IR + statuses. Pure: no clock, no I/O; user mistakes become conditions.

Incremental where it pays: given the memo of the previous translation, and when nothing but routes
changed since (the same Gateways, Services, grants, policies, options), only the routes that changed are
translated and only the virtual hosts they land in are rebuilt; see routes.py and assembly.py. The result
is the same as translating everything, which tests check on random edits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stackway.ir import model as ir
from stackway.resources.gatewayapi import GROUP
from stackway.resources.store import Resources
from stackway.translate import conditions as c
from stackway.translate.context import Context
from stackway.translate.gatewayapi.assembly import AssemblyMemo, assemble
from stackway.translate.gatewayapi.backends import backend_tls
from stackway.translate.gatewayapi.gateways import GatewayView, gateway_classes, gateway_status, gateways
from stackway.translate.gatewayapi.routes import Placed, RouteMemo, RouteTranslator
from stackway.translate.ingress import translate_ingresses

#: Inputs a route's translation does not read, or that are reported afresh every time: a change to these
#: alone keeps the previous translation's work usable. EndpointSlices decide nothing but the endpoints of
#: clusters, which are refreshed for the Services whose slices changed (in cluster mode they change all
#: the time: were they part of the world, hardly any route edit would be translated incrementally).
_NOT_WORLD = frozenset({"http_routes", "grpc_routes", "tls_routes", "invalid", "sources", "endpoint_slices"})


@dataclass(frozen=True)
class GatewayApiMemo:
    """What one translation keeps for the next: valid while `world` (everything but routes) is the same."""

    world: tuple[Any, ...]
    routes: RouteMemo
    assembly: AssemblyMemo
    endpoint_slices: Mapping[tuple[str, str], Any]


def translate_gateway_api(ctx: Context, previous: GatewayApiMemo | None = None) -> tuple[ir.IR, GatewayApiMemo]:
    world = (ctx.options, *(getattr(ctx.resources, f.name) for f in _WORLD_FIELDS))
    if previous is not None and previous.world != world:
        previous = None
    ours = gateway_classes(ctx)
    views = gateways(ctx, ours)
    # Policies are checked before any route, so their problems come first however many routes are
    # translated this time (the check would otherwise happen at the first backend resolved).
    backend_tls(ctx)
    slices = ctx.resources.endpoint_slices
    stale = _changed_keys(previous.endpoint_slices, slices) if previous is not None else set()
    routes = RouteTranslator(ctx, views, previous.routes if previous is not None else None, stale)
    routes.translate_all()
    for view in views:
        ctx.statuses[view.key] = gateway_status(ctx, view)
    _status_for_invalid(ctx, ours, views)
    views += translate_ingresses(ctx, routes)
    listeners, used, assembly = assemble(ctx, views, routes, previous.assembly if previous is not None else None)
    clusters = tuple(routes.clusters[name] for name in sorted(used))
    placed = _all_placed(routes) if backend_tls(ctx).policies else []
    _backend_tls_status(ctx, placed, routes.clusters)
    memo = GatewayApiMemo(world, routes.finish(), assembly, slices)
    return ir.IR(listeners=listeners, clusters=clusters), memo


def _changed_keys(before: Mapping[tuple[str, str], Any], now: Mapping[tuple[str, str], Any]) -> set[tuple[str, str]]:
    if before is now:
        return set()
    return {key for key in before.keys() | now.keys() if before.get(key) != now.get(key)}


def _all_placed(routes: RouteTranslator) -> list[Placed]:
    """Every placed route, Ingress's too (what BackendTLSPolicy ancestors are found from)."""
    own = [
        Placed(routes.listeners[p.listener], p.hostname, p.order, p.route)
        for outcome in routes.outcomes()
        for p in outcome.placed
    ]
    return own + routes.placed


def _backend_tls_status(ctx: Context, placed: list[Placed], clusters: Mapping[str, ir.Cluster]) -> None:
    """BackendTLSPolicy status is per ancestor Gateway: those whose routes send traffic to the target."""
    policies = backend_tls(ctx)
    if not policies.policies:
        return
    for p in placed:
        if not isinstance(p.route.action, ir.Forward) or p.listener.gateway.gateway is None:
            continue
        for wc in p.route.action.clusters:
            service = clusters[wc.cluster].service if wc.cluster in clusters else None
            if service is not None:
                policies.note_use(service, p.listener.gateway.key)
    ctx.statuses.update(policies.statuses())


def _status_for_invalid(ctx: Context, ours: set[str], views: list[GatewayView]) -> None:
    """Objects that never validated still get a condition, so `kubectl get`-style views show why."""
    our_gateways = {(v.key.namespace, v.key.name) for v in views}
    now = ctx.options.now
    for key, bad in ctx.resources.invalid.items():
        message = "; ".join(f"{f}: {m}" if f else m for f, m in bad.problems)
        spec: Mapping[str, Any] = bad.raw.body.get("spec") or {}
        if key.group == GROUP and key.kind == "Gateway" and spec.get("gatewayClassName") in ours:
            ctx.statuses[key] = {
                "conditions": [
                    c.condition(c.ACCEPTED, False, c.R_INVALID, message, bad.generation, now),
                    c.condition(c.PROGRAMMED, False, c.R_INVALID, message, bad.generation, now),
                ]
            }
        elif key.group == GROUP and key.kind == "HTTPRoute":
            parents = []
            for ref in spec.get("parentRefs") or []:
                if not isinstance(ref, Mapping):
                    continue
                ns = ref.get("namespace") or key.namespace
                if (ns, ref.get("name")) in our_gateways:
                    parents.append(
                        {
                            "parentRef": {
                                k: v
                                for k, v in ref.items()
                                if k in ("group", "kind", "namespace", "name", "sectionName", "port")
                            },
                            "controllerName": ctx.options.controller_name,
                            "conditions": [
                                c.condition(c.ACCEPTED, False, c.R_UNSUPPORTED_VALUE, message, bad.generation, now)
                            ],
                        }
                    )
            if parents:
                ctx.statuses[key] = {"parents": parents}


_WORLD_FIELDS = tuple(f for f in dataclasses.fields(Resources) if f.name not in _NOT_WORLD)
