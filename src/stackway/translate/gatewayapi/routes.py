"""Routes of every kind (HTTPRoute, GRPCRoute, TLSRoute): attachment to listeners, precedence, route status.

Attachment, hostnames and statuses are the same for every route kind; only turning rules into IR routes
differs, and lives in httprules.py and grpcrules.py.

Each route's translation is an `Outcome`: everything it contributes (status, problems, attachments, placed
IR routes). An outcome depends on the route and on the rest of the world (Gateways, Services, grants,
options; not on endpoints, which only fill clusters), never on other routes; so while the rest of the world
is unchanged, a translation reuses the previous outcome of every route that is the same object as before
and translates only the others (`RouteMemo`). The one link between routes is their age (creation order),
which breaks precedence ties: it is a label that keeps the order of creation, kept per route, so that
deleting a route or adding a newer one leaves the others' labels, and with them their outcomes, as they
were.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from stackway.diffs import replaced_keys
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
from stackway.translate.conditions import Problem
from stackway.translate.context import Context
from stackway.translate.gatewayapi.backends import BackendFailure, refresh_endpoints, resolve_backend
from stackway.translate.gatewayapi.gateways import GatewayView, ListenerView
from stackway.translate.hostnames import effective_hostnames

AnyRoute = HTTPRoute | GRPCRoute | TLSRoute
Ordered = tuple[tuple[Any, ...], ir.Route]
NsName = tuple[str, str]
#: A Gateway listener by identity: (Gateway namespace, Gateway name, index in spec.listeners).
ListenerId = tuple[str, str, int]
#: Creation order of routes: (creationTimestamp, namespace, name, kind rank).
SortKey = tuple[str, str, str, int]
#: Route kinds in the order that breaks creation-order ties (their rank is the index).
KINDS = ("HTTPRoute", "GRPCRoute", "TLSRoute")
BackendKey = tuple[str, str, bool, BackendObjectReference]


@dataclass(frozen=True)
class Placed:
    """An IR route destined for one listener and hostname, with its precedence key."""

    listener: ListenerView
    hostname: str
    order: tuple[Any, ...]
    route: ir.Route


@dataclass(frozen=True)
class Placement:
    """A `Placed` naming its listener instead of holding it, so that it outlives one translation."""

    listener: ListenerId
    hostname: str
    order: tuple[Any, ...]
    route: ir.Route


@dataclass(frozen=True)
class Outcome:
    """What one route contributes to a translation (empty for routes of other controllers)."""

    key: ObjectKey
    route: AnyRoute
    sort_key: SortKey
    label: int
    problems: tuple[Problem, ...] = ()
    status: dict[str, Any] | None = None
    #: Listeners whose attachedRoutes count this route, each once.
    attached: tuple[ListenerId, ...] = ()
    placed: tuple[Placement, ...] = ()


@dataclass(frozen=True)
class RouteMemo:
    """What a translation of routes keeps for the next one. Never changed once made (a later translation
    copies what it changes), so an older memo stays valid for as long as anyone holds it."""

    #: The route maps (HTTPRoute, GRPCRoute, TLSRoute) the outcomes were computed from.
    routes: tuple[Mapping[NsName, AnyRoute], ...]
    outcomes: tuple[Mapping[NsName, Outcome], ...]
    #: Every route's sort key, sorted, and its label (same index); labels increase with sort keys.
    order: list[SortKey]
    labels: list[int]
    statuses: Mapping[ObjectKey, dict[str, Any]]
    attached: Mapping[ListenerId, int]
    #: Outcomes that carry problems, by (kind rank, namespace, name).
    troubled: Mapping[tuple[int, str, str], Outcome]
    clusters: Mapping[str, ir.Cluster]
    backends: Mapping[BackendKey, ir.Cluster | BackendFailure]


@dataclass
class Changes:
    """Outcomes replaced by a translation, for the assembly to update only what they touch."""

    full: bool
    pairs: list[tuple[Outcome | None, Outcome | None]] = field(default_factory=list)


def precedence(path: ir.PathMatch, method: str | None, headers: int, query_params: int) -> tuple[Any, ...]:
    """Gateway API precedence: Exact path, longest prefix, method, most headers, most query params.

    Smaller sorts first. Regular expressions (implementation-specific) sit between Exact and PathPrefix.
    GRPCRoute methods are expressed as paths first, so both kinds order consistently on one hostname.
    """
    rank = {"Exact": 0, "RegularExpression": 1, "PathPrefix": 2}[path.type]
    return (rank, -len(path.value), method is None, -headers, -query_params)


class RouteTranslator:
    def __init__(
        self,
        ctx: Context,
        gateways: list[GatewayView],
        previous: RouteMemo | None = None,
        stale_endpoints: Collection[NsName] = (),
    ) -> None:
        """`previous` may only come from a translation whose inputs differ from these in routes alone (the
        caller checks), or in the EndpointSlices of the Services `stale_endpoints` names: its outcomes are
        then still what translating those routes would give, and those Services' clusters get their
        endpoints read again."""
        self.ctx = ctx
        self.gateways = {(g.key.namespace, g.key.name): g for g in gateways}
        self.listeners: dict[ListenerId, ListenerView] = {
            (g.key.namespace, g.key.name, i): lv for g in gateways for i, lv in enumerate(g.listeners)
        }
        self._listener_ids = {id(lv): lid for lid, lv in self.listeners.items()}
        #: Routes from other sources (Ingress), placed after `translate_all`; routes' own are in outcomes.
        self.placed: list[Placed] = []
        self.previous = previous
        #: Clusters by name: every one resolved under the same inputs (a superset of those in use).
        self.clusters: dict[str, ir.Cluster] = dict(previous.clusters) if previous else {}
        self._backends: dict[BackendKey, ir.Cluster | BackendFailure] = dict(previous.backends) if previous else {}
        if stale_endpoints:
            self._refresh_endpoints(set(stale_endpoints))
        self.resolved: tuple[bool, str, str] = (True, c.R_RESOLVED_REFS, "")
        self.changes = Changes(full=True)
        self._memo: RouteMemo | None = None

    def _refresh_endpoints(self, services: set[NsName]) -> None:
        fresh = {
            name: refresh_endpoints(self.ctx, cluster)
            for name, cluster in self.clusters.items()
            if cluster.service is not None and cluster.service[:2] in services
        }
        self.clusters.update(fresh)
        for key, result in self._backends.items():
            if isinstance(result, ir.Cluster) and result.name in fresh:
                self._backends[key] = fresh[result.name]

    # ---- every route, or only those that changed -----------------------------------------------------------
    def translate_all(self) -> None:
        """Translate every route, reusing the previous outcomes that still hold. Statuses, problems and
        attachment counts land in the context and the listener views exactly as from a full translation."""
        memo = self._incremental() if self.previous is not None else None
        if memo is None:
            memo = self._full()
        for lid, count in memo.attached.items():
            self.listeners[lid].attached_routes = count
        # The route statuses first, as a copy of the memo's table (no key is hashed again), then the others.
        statuses = dict(memo.statuses)
        statuses.update(self.ctx.statuses)
        self.ctx.statuses = statuses
        for outcome in sorted(memo.troubled.values(), key=lambda o: o.label):
            self.ctx.problems.extend(outcome.problems)
        self._memo = memo

    def outcomes(self) -> list[Outcome]:
        """Every route's outcome, oldest route first."""
        assert self._memo is not None
        return sorted((o for by_name in self._memo.outcomes for o in by_name.values()), key=lambda o: o.label)

    def finish(self) -> RouteMemo:
        """The memo for the next translation, once everything (Ingress too) has resolved its backends."""
        assert self._memo is not None
        return RouteMemo(**{**vars(self._memo), "clusters": self.clusters, "backends": self._backends})

    def _maps(self) -> tuple[Mapping[NsName, AnyRoute], ...]:
        res = self.ctx.resources
        return (res.http_routes, res.grpc_routes, res.tls_routes)

    def _full(self) -> RouteMemo:
        maps = self._maps()
        ordered = sorted(
            ((route.metadata.creation_timestamp, ns, name, rank), route)
            for rank, by_name in enumerate(maps)
            for (ns, name), route in by_name.items()
        )
        outcomes: tuple[dict[NsName, Outcome], ...] = ({}, {}, {})
        statuses: dict[ObjectKey, dict[str, Any]] = {}
        attached: dict[ListenerId, int] = {}
        troubled: dict[tuple[int, str, str], Outcome] = {}
        for label, (sort_key, route) in enumerate(ordered):
            outcome = self._outcome(sort_key, route, label)
            outcomes[sort_key[3]][(sort_key[1], sort_key[2])] = outcome
            if outcome.status is not None:
                statuses[outcome.key] = outcome.status
            _count(outcome, 1, attached, troubled)
        self.changes = Changes(full=True)
        order = [sort_key for sort_key, _ in ordered]
        return RouteMemo(maps, outcomes, order, list(range(len(order))), statuses, attached, troubled, {}, {})

    def _incremental(self) -> RouteMemo | None:
        """Only the routes that differ from `previous`; None when a full translation is the better way."""
        prev = self.previous
        assert prev is not None
        maps = self._maps()
        changed = _diff(maps, prev)
        if len(changed) > 64 and 4 * len(changed) > sum(len(m) for m in maps):
            return None  # a large share changed: translating everything is as cheap, and simpler
        order, labels = list(prev.order), list(prev.labels)
        for _, old, sort_key in changed:
            if old is not None and sort_key != old.sort_key:  # deleted, or moved in the creation order
                i = bisect.bisect_left(order, old.sort_key)
                del order[i], labels[i]
        pending: list[tuple[Outcome | None, AnyRoute | None, SortKey | None, int]] = []
        for route, old, sort_key in changed:
            if route is None or sort_key is None:
                pending.append((old, None, None, -1))
            elif old is not None and old.sort_key == sort_key:
                pending.append((old, route, sort_key, old.label))
            else:
                label = _label_for(order, labels, sort_key)
                if label is None:
                    return None  # no free label between its neighbours: label every route afresh
                pending.append((old, route, sort_key, label))
        outcomes = tuple(dict(by_name) for by_name in prev.outcomes)
        statuses, attached, troubled = dict(prev.statuses), dict(prev.attached), dict(prev.troubled)
        pairs: list[tuple[Outcome | None, Outcome | None]] = []
        for old, route, sort_key, label in pending:
            if old is not None:
                _count(old, -1, attached, troubled)
                del outcomes[old.sort_key[3]][old.sort_key[1:3]]
            new = None
            if route is not None and sort_key is not None:
                new = self._outcome(sort_key, route, label)
                outcomes[sort_key[3]][sort_key[1:3]] = new
                _count(new, 1, attached, troubled)
            # A status replaced keeps its place, so unchanged translations list statuses in the same order.
            if new is not None and new.status is not None:
                statuses[new.key] = new.status
            elif old is not None:
                statuses.pop(old.key, None)
            pairs.append((old, new))
        self.changes = Changes(full=False, pairs=pairs)
        return RouteMemo(maps, outcomes, order, labels, statuses, attached, troubled, {}, {})

    # ---- one route --------------------------------------------------------------------------------------
    def _outcome(self, sort_key: SortKey, route: AnyRoute, label: int) -> Outcome:
        from stackway.translate.gatewayapi.grpcrules import grpc_rules, grpc_unsupported
        from stackway.translate.gatewayapi.httprules import http_rules, http_unsupported, tls_rules

        _, ns, name, rank = sort_key
        key = ObjectKey(GROUP, KINDS[rank], ns, name)
        saved, self.ctx.problems = self.ctx.problems, []
        try:
            if isinstance(route, HTTPRoute):
                found = self._translate(
                    key, route, partial(http_unsupported, route), partial(http_rules, self, key, route, label)
                )
            elif isinstance(route, GRPCRoute):
                found = self._translate(
                    key, route, partial(grpc_unsupported, route), partial(grpc_rules, self, key, route, label)
                )
            else:
                found = self._translate(key, route, lambda: None, partial(tls_rules, self, key, route, label))
            problems = tuple(self.ctx.problems)
        finally:
            self.ctx.problems = saved
        if found is None:
            return Outcome(key, route, sort_key, label, problems)
        return Outcome(key, route, sort_key, label, problems, *found)

    def _translate(
        self,
        key: ObjectKey,
        route: AnyRoute,
        check: Callable[[], tuple[str, str] | None],
        build: Callable[[], list[Ordered]],
    ) -> tuple[dict[str, Any], tuple[ListenerId, ...], tuple[Placement, ...]] | None:
        """(status, listeners attached to, placements), or None for a route none of whose parents are ours."""
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
            return None
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
        status = {"parents": parents}
        if unsupported is not None:
            return status, (), ()
        attached: list[ListenerId] = []
        placed: list[Placement] = []
        for listener, hostnames in attachments:
            lid = self._listener_ids[id(listener)]
            if lid not in attached:
                attached.append(lid)
            if not listener.serving:
                continue
            for hostname in hostnames:
                for order, irroute in rules:
                    placed.append(Placement(lid, hostname, order, irroute))
        return status, tuple(attached), tuple(placed)

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
        # The route's kind is part of the question: a ReferenceGrant may allow one kind and not another.
        memo = (key.kind, key.namespace, h2c, ref)
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


def _diff(
    maps: tuple[Mapping[NsName, AnyRoute], ...], prev: RouteMemo
) -> list[tuple[AnyRoute | None, Outcome | None, SortKey | None]]:
    """(route now or None if deleted, its previous outcome or None if new, its sort key now) of every route
    that is neither the very object nor an equal one it was."""
    changed: list[tuple[AnyRoute | None, Outcome | None, SortKey | None]] = []
    for rank, (current, before, known) in enumerate(zip(maps, prev.routes, prev.outcomes, strict=True)):
        if current is before:
            continue
        replaced = replaced_keys(current, before)
        added = 0
        for nsname in replaced:
            route, old = current[nsname], known.get(nsname)
            if old is not None and old.route == route:
                continue
            added += old is None
            changed.append((route, old, (route.metadata.creation_timestamp, nsname[0], nsname[1], rank)))
        if len(known) > len(current) - added:
            changed.extend((None, old, None) for nsname, old in known.items() if nsname not in current)
    return changed


def _label_for(order: list[SortKey], labels: list[int], sort_key: SortKey) -> int | None:
    """Insert `sort_key` into the creation order and return a label between its neighbours' (None if none is
    free). Labels stay below where Ingress ages begin, so Gateway API routes keep sorting first."""
    from stackway.translate.ingress import AGE_OFFSET

    i = bisect.bisect_left(order, sort_key)
    low = labels[i - 1] if i else -1
    high = labels[i] if i < len(labels) else AGE_OFFSET
    if high - low < 2:
        return None
    label = low + 1 if i == len(labels) else (low + high) // 2
    order.insert(i, sort_key)
    labels.insert(i, label)
    return label


def _count(
    outcome: Outcome,
    sign: int,
    attached: dict[ListenerId, int],
    troubled: dict[tuple[int, str, str], Outcome],
) -> None:
    """Add (sign 1) or take away (sign -1) one outcome's attachments and problems from the totals."""
    for lid in outcome.attached:
        count = attached.get(lid, 0) + sign
        if count:
            attached[lid] = count
        else:
            del attached[lid]
    if outcome.problems:
        tag = (outcome.sort_key[3], outcome.key.namespace, outcome.key.name)
        if sign > 0:
            troubled[tag] = outcome
        else:
            troubled.pop(tag, None)
