"""Status checks, with the semantics of upstream's conformance/utils/kubernetes helpers.

In standalone mode they read `GET /api/status`, which returns each object's `status` exactly as it would be
written to Kubernetes (DESIGN 2.3); in cluster mode they read the objects back from the API server, as
written by the status writer. Both have the same shape, so the upstream checks translate one to one:
conditions must carry the object's current generation as observedGeneration, a route parent matches on
controllerName, group, kind, name and (sometimes) namespace, and a condition matches on type, status and
(unless empty) reason. Every check polls until it holds or
times out, because the control plane applies changes asynchronously.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.conformance.client import DEFAULT_TIMEOUT
from tests.conformance.manifests import CONTROLLER_NAME, GATEWAY_GROUP

POLL_INTERVAL = 0.1


@dataclass(frozen=True)
class Cond:
    """An expected condition; an empty reason (or status) matches any, as in upstream's findConditionInList."""

    type: str
    status: str = "True"
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.type}={self.status}" + (f"/{self.reason}" if self.reason else "")


@dataclass(frozen=True)
class ExpectedParent:
    """Upstream's RouteParentStatus expectation. `namespace=None` expects the parentRef to have none;
    a `section_name` must match the status parent's (upstream's NewGatewayRef with listener names)."""

    name: str
    namespace: str | None
    conditions: Sequence[Cond]
    group: str = GATEWAY_GROUP
    kind: str = "Gateway"
    controller: str = CONTROLLER_NAME
    section_name: str | None = None


@dataclass(frozen=True)
class ExpectedListener:
    name: str
    attached_routes: int
    conditions: Sequence[Cond]
    supported_kinds: Sequence[tuple[str, str]] = field(default_factory=lambda: [(GATEWAY_GROUP, "HTTPRoute")])


class StatusTimeout(AssertionError):
    pass


def fetch_status(admin: str, timeout: float = 5.0) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{admin}/api/status", timeout=timeout) as response:
        result: dict[str, Any] = json.load(response)
        return result


def find_object(document: Mapping[str, Any], kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    for obj in document.get("objects") or []:
        meta = obj.get("metadata") or {}
        if obj.get("kind") == kind and meta.get("name") == name and meta.get("namespace", "default") == namespace:
            return dict(obj)
    return None


def condition_matches(conditions: Iterable[Mapping[str, Any]], want: Cond) -> bool:
    for c in conditions:
        if c.get("type") == want.type:
            status_ok = not want.status or c.get("status") == want.status
            if status_ok and (not want.reason or c.get("reason") == want.reason):
                return True
    return False


def _show(conditions: Iterable[Mapping[str, Any]]) -> str:
    return ", ".join(f"{c.get('type')}={c.get('status')}/{c.get('reason')}" for c in conditions) or "none"


def stale_conditions(obj: Mapping[str, Any], conditions: Iterable[Mapping[str, Any]]) -> str | None:
    """Upstream's ConditionsHaveLatestObservedGeneration."""
    generation = (obj.get("metadata") or {}).get("generation")
    stale = [c.get("type") for c in conditions if c.get("observedGeneration") != generation]
    if stale:
        return f"conditions {stale} have an observedGeneration other than the object's generation {generation}"
    return None


def parent_matches(actual: Mapping[str, Any], want: ExpectedParent, namespace_required: bool) -> str | None:
    """Upstream's parentsForRouteMatch for one pair: None on a match, else why not."""
    ref = actual.get("parentRef") or {}
    if actual.get("controllerName") != want.controller:
        return f"controllerName {actual.get('controllerName')!r}"
    if ref.get("group") != want.group:
        return f"parentRef.group {ref.get('group')!r} (the API server would default it to {want.group!r})"
    if ref.get("kind") != want.kind:
        return f"parentRef.kind {ref.get('kind')!r} (the API server would default it to {want.kind!r})"
    if ref.get("name") != want.name:
        return f"parentRef.name {ref.get('name')!r}"
    if want.section_name is not None and ref.get("sectionName") != want.section_name:
        return f"parentRef.sectionName {ref.get('sectionName')!r}, expected {want.section_name!r}"
    if ref.get("namespace") != want.namespace and (namespace_required or ref.get("namespace") is not None):
        return f"parentRef.namespace {ref.get('namespace')!r}, expected {want.namespace!r}"
    missing = [str(c) for c in want.conditions if not condition_matches(actual.get("conditions") or [], c)]
    if missing:
        return f"conditions lack {missing}: have {_show(actual.get('conditions') or [])}"
    return None


@dataclass
class StatusChecker:
    """Polls the statuses until an expectation about them holds (or fails with the last reason).

    They come from the admin API at `admin`, or from `source` where given (e.g. the API server's objects).
    """

    admin: str
    timeout: float = DEFAULT_TIMEOUT
    source: Callable[[], dict[str, Any]] | None = None

    def fetch(self) -> dict[str, Any]:
        return self.source() if self.source is not None else fetch_status(self.admin)

    def wait(self, what: str, check: Callable[[dict[str, Any]], str | None]) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        last = "no answer yet"
        while True:
            try:
                document = self.fetch()
                problem = check(document)
            except (OSError, ValueError) as exc:
                document, problem = {}, f"reading statuses: {type(exc).__name__}: {exc}"
            if problem is None:
                return document
            last = problem
            if time.monotonic() > deadline:
                raise StatusTimeout(f"{what}: not within {self.timeout:.0f}s: {last}")
            time.sleep(POLL_INTERVAL)

    # -- Gateways ---------------------------------------------------------------------------------

    def gateway_address(self, namespace: str, name: str, expected_address: str) -> None:
        """Upstream's WaitForGatewayAddress: fresh conditions and an address in status."""

        def check(doc: dict[str, Any]) -> str | None:
            gw = find_object(doc, "Gateway", namespace, name)
            if gw is None:
                return "Gateway not in /api/status"
            status = gw.get("status") or {}
            stale = stale_conditions(gw, status.get("conditions") or [])
            if stale:
                return stale
            addresses = [a for a in status.get("addresses") or [] if a.get("type")]
            if not addresses:
                return f"no typed address in status.addresses: {status.get('addresses')}"
            if expected_address not in [a.get("value") for a in addresses]:
                return f"status.addresses {addresses} lacks spec.addresses' {expected_address}"
            return None

        self.wait(f"Gateway {namespace}/{name} has an address", check)

    def gateway_listeners_conditions(self, namespace: str, name: str, conditions: Sequence[Cond]) -> None:
        """Upstream's GatewayListenersMustHaveConditions (every listener)."""

        def check(doc: dict[str, Any]) -> str | None:
            gw = find_object(doc, "Gateway", namespace, name)
            if gw is None:
                return "Gateway not in /api/status"
            listeners = (gw.get("status") or {}).get("listeners") or []
            if not listeners:
                return "no listeners in status"
            for listener in listeners:
                for want in conditions:
                    have = listener.get("conditions") or []
                    if not condition_matches(have, want):
                        return f"listener {listener.get('name')} lacks {want}: has {_show(have)}"
            return None

        self.wait(f"Gateway {namespace}/{name} listeners are {[str(c) for c in conditions]}", check)

    def gateway_listener_conditions(self, namespace: str, name: str, listener: str, conditions: Sequence[Cond]) -> None:
        """Upstream's GatewayListenerMustHaveConditions: one named listener has every condition."""

        def check(doc: dict[str, Any]) -> str | None:
            gw = find_object(doc, "Gateway", namespace, name)
            if gw is None:
                return "Gateway not in /api/status"
            found = [lst for lst in (gw.get("status") or {}).get("listeners") or [] if lst.get("name") == listener]
            if not found:
                return f"listener {listener} not in status"
            have = found[0].get("conditions") or []
            stale = stale_conditions(gw, have)
            if stale:
                return stale
            missing = [str(c) for c in conditions if not condition_matches(have, c)]
            return f"listener {listener} lacks {missing}: has {_show(have)}" if missing else None

        self.wait(f"Gateway {namespace}/{name} listener {listener} is {[str(c) for c in conditions]}", check)

    def gateway_condition(self, namespace: str, name: str, want: Cond) -> None:
        """Upstream's GatewayMustHaveCondition (with fresh conditions, as GatewayMustHaveLatestConditions)."""

        def check(doc: dict[str, Any]) -> str | None:
            gw = find_object(doc, "Gateway", namespace, name)
            if gw is None:
                return "Gateway not in /api/status"
            have = (gw.get("status") or {}).get("conditions") or []
            stale = stale_conditions(gw, have)
            if stale:
                return stale
            return None if condition_matches(have, want) else f"Gateway lacks {want}: has {_show(have)}"

        self.wait(f"Gateway {namespace}/{name} has {want}", check)

    def gateway_listeners(self, namespace: str, name: str, expected: Sequence[ExpectedListener]) -> None:
        """Upstream's GatewayStatusMustHaveListeners."""

        def check(doc: dict[str, Any]) -> str | None:
            gw = find_object(doc, "Gateway", namespace, name)
            if gw is None:
                return "Gateway not in /api/status"
            status = gw.get("status") or {}
            stale = stale_conditions(gw, status.get("conditions") or [])
            if stale:
                return stale
            actual = status.get("listeners") or []
            if len(actual) != len(expected):
                return f"expected {len(expected)} listeners in status, got {len(actual)}"
            by_name = {listener.get("name"): listener for listener in actual}
            for want in expected:
                got = by_name.get(want.name)
                if got is None:
                    return f"listener {want.name} not in status"
                kinds = {(k.get("group") or GATEWAY_GROUP, k.get("kind")) for k in got.get("supportedKinds") or []}
                missing_kinds = [k for k in want.supported_kinds if k not in kinds]
                if missing_kinds:
                    return f"listener {want.name} supportedKinds {sorted(kinds)} lack {missing_kinds}"
                if got.get("attachedRoutes") != want.attached_routes:
                    attached = got.get("attachedRoutes")
                    return f"listener {want.name} attachedRoutes={attached}, expected {want.attached_routes}"
                missing = [str(c) for c in want.conditions if not condition_matches(got.get("conditions") or [], c)]
                if missing:
                    return f"listener {want.name} lacks {missing}: has {_show(got.get('conditions') or [])}"
            return None

        self.wait(f"Gateway {namespace}/{name} listener statuses", check)

    def gateway_zero_routes(self, namespace: str, name: str) -> None:
        """Upstream's GatewayMustHaveZeroRoutes: fresh conditions, and no listeners or one with no routes."""

        def check(doc: dict[str, Any]) -> str | None:
            gw = find_object(doc, "Gateway", namespace, name)
            if gw is None:
                return "Gateway not in /api/status"
            status = gw.get("status") or {}
            stale = stale_conditions(gw, status.get("conditions") or [])
            if stale:
                return stale
            listeners = status.get("listeners") or []
            if not listeners or (len(listeners) == 1 and listeners[0].get("attachedRoutes") == 0):
                return None
            attached = {listener.get("name"): listener.get("attachedRoutes") for listener in listeners}
            return f"want no listeners or one with 0 attachedRoutes, got {attached}"

        self.wait(f"Gateway {namespace}/{name} has zero routes", check)

    # -- Routes -----------------------------------------------------------------------------------

    def route_parents(
        self,
        namespace: str,
        name: str,
        parents: Sequence[ExpectedParent],
        namespace_required: bool,
        kind: str = "HTTPRoute",
    ) -> None:
        """Upstream's HTTPRouteMustHaveParents: every expected parent matches some status parent."""

        def check(doc: dict[str, Any]) -> str | None:
            route = find_object(doc, kind, namespace, name)
            if route is None:
                return f"{kind} not in /api/status"
            actual = (route.get("status") or {}).get("parents") or []
            for parent in actual:
                stale = stale_conditions(route, parent.get("conditions") or [])
                if stale:
                    return stale
            for want in parents:
                reasons = [parent_matches(a, want, namespace_required) for a in actual]
                if not any(r is None for r in reasons):
                    return (
                        f"no status parent matches {want.name} ({'; '.join(str(r) for r in reasons) or 'no parents'})"
                    )
            return None

        self.wait(f"{kind} {namespace}/{name} parents", check)

    def route_condition(
        self, namespace: str, name: str, gateway: tuple[str, str], want: Cond, kind: str = "HTTPRoute"
    ) -> None:
        """Upstream's HTTPRouteMustHaveCondition: the condition on the status parent for that Gateway."""
        gw_ns, gw_name = gateway

        def check(doc: dict[str, Any]) -> str | None:
            route = find_object(doc, kind, namespace, name)
            if route is None:
                return f"{kind} not in /api/status"
            seen = []
            for parent in (route.get("status") or {}).get("parents") or []:
                stale = stale_conditions(route, parent.get("conditions") or [])
                if stale:
                    return stale
                ref = parent.get("parentRef") or {}
                if ref.get("name") == gw_name and ref.get("namespace") in (None, gw_ns):
                    if condition_matches(parent.get("conditions") or [], want):
                        return None
                    seen.append(_show(parent.get("conditions") or []))
            return f"no parent for {gw_ns}/{gw_name} has {want}: {seen or 'no such parent'}"

        self.wait(f"{kind} {namespace}/{name} has {want}", check)

    def route_no_accepted_parents(self, namespace: str, name: str, kind: str = "HTTPRoute") -> None:
        """Upstream's HTTPRouteMustHaveNoAcceptedParents: no parents, or exactly one that is Accepted=False.

        An empty list only counts on the second look, as upstream's does, because "not written yet" and
        "correctly left empty" look the same on the first.
        """
        seen_empty = False

        def check(doc: dict[str, Any]) -> str | None:
            nonlocal seen_empty
            route = find_object(doc, kind, namespace, name)
            if route is None:
                return f"{kind} not in /api/status"
            parents = (route.get("status") or {}).get("parents") or []
            if not parents:
                if seen_empty:
                    return None
                seen_empty = True
                return "no parents yet (looking once more)"
            if len(parents) > 1:
                return f"expected at most one parent, got {len(parents)}"
            stale = stale_conditions(route, parents[0].get("conditions") or [])
            if stale:
                return stale
            if not condition_matches(parents[0].get("conditions") or [], Cond("Accepted", "False")):
                return f"the parent is not Accepted=False: {_show(parents[0].get('conditions') or [])}"
            return None

        self.wait(f"{kind} {namespace}/{name} has no accepted parents", check)

    def route_generation(self, namespace: str, name: str) -> int:
        """The route's metadata.generation as the status source reports it now."""
        route = find_object(self.fetch(), "HTTPRoute", namespace, name)
        if route is None:
            raise StatusTimeout(f"HTTPRoute {namespace}/{name} not in /api/status")
        generation: int = (route.get("metadata") or {})["generation"]
        return generation

    def route_regenerated(self, namespace: str, name: str, old_generation: int, want: Cond) -> int:
        """Wait for a generation other than `old_generation` whose parents all carry it and one has `want`.

        Upstream's API server bumps the generation synchronously with the patch, so its
        HTTPRouteMustHaveCondition cannot pass on the old status; `stackway up` bumps it when it reads the
        changed file, so the new generation itself has to be waited for first.
        """
        generation = old_generation

        def check(doc: dict[str, Any]) -> str | None:
            nonlocal generation
            route = find_object(doc, "HTTPRoute", namespace, name)
            if route is None:
                return "HTTPRoute not in /api/status"
            generation = (route.get("metadata") or {}).get("generation", old_generation)
            if generation == old_generation:
                return f"metadata.generation still {old_generation}"
            parents = (route.get("status") or {}).get("parents") or []
            for parent in parents:
                stale = stale_conditions(route, parent.get("conditions") or [])
                if stale:
                    return stale
            if not any(condition_matches(p.get("conditions") or [], want) for p in parents):
                return f"no parent has {want}: {[_show(p.get('conditions') or []) for p in parents]}"
            return None

        self.wait(f"HTTPRoute {namespace}/{name} observes a new generation", check)
        return generation

    def route_resolved_refs(self, namespace: str, name: str, gateway: tuple[str, str], kind: str = "HTTPRoute") -> None:
        """Upstream's HTTPRouteMustHaveResolvedRefsConditionsTrue (or the same for another route `kind`)."""
        self.route_condition(namespace, name, gateway, Cond("ResolvedRefs", "True", "ResolvedRefs"), kind)

    def gateway_and_routes_accepted(
        self,
        gateway: tuple[str, str],
        address: str,
        routes: Sequence[tuple[str, str]] = (),
        kind: str = "HTTPRoute",
    ) -> None:
        """Upstream's GatewayAndHTTPRoutesMustBeAccepted (or GatewayAndTLSRoutesMustBeAccepted, by `kind`)."""
        gw_ns, gw_name = gateway
        self.gateway_address(gw_ns, gw_name, address)
        for route_ns, route_name in routes:
            parent = ExpectedParent(gw_name, gw_ns, [Cond("Accepted", "True", "Accepted")])
            self.route_parents(route_ns, route_name, [parent], namespace_required=route_ns != gw_ns, kind=kind)
        self.gateway_listeners_conditions(gw_ns, gw_name, [Cond("ResolvedRefs"), Cond("Accepted"), Cond("Programmed")])

    # -- Policies ---------------------------------------------------------------------------------

    def policy_condition(
        self, namespace: str, name: str, gateway: tuple[str, str], want: Cond, kind: str = "BackendTLSPolicy"
    ) -> int:
        """Upstream's BackendTLSPolicyMustHaveCondition: the policy's status ancestor for the Gateway has `want`,
        and every condition carries the policy's generation (its MustHaveLatestConditions); returns it."""
        gw_ns, gw_name = gateway
        generation = 0

        def check(doc: dict[str, Any]) -> str | None:
            nonlocal generation
            policy = find_object(doc, kind, namespace, name)
            if policy is None:
                return f"{kind} not in /api/status"
            generation = (policy.get("metadata") or {}).get("generation", 0)
            seen = []
            for ancestor in (policy.get("status") or {}).get("ancestors") or []:
                ref = ancestor.get("ancestorRef") or {}
                if ref.get("name") != gw_name or ref.get("namespace", namespace) != gw_ns:
                    continue
                if ancestor.get("controllerName") != CONTROLLER_NAME:
                    return f"ancestor {gw_name} has controllerName {ancestor.get('controllerName')!r}"
                have = ancestor.get("conditions") or []
                stale = stale_conditions(policy, have)
                if stale:
                    return stale
                if condition_matches(have, want):
                    return None
                seen.append(_show(have))
            return f"no ancestor {gw_ns}/{gw_name} has {want}: {seen or 'no such ancestor'}"

        self.wait(f"{kind} {namespace}/{name} has {want} for {gw_ns}/{gw_name}", check)
        return generation

    def objects_gone(self, keys: Iterable[tuple[str, str, str]]) -> None:
        """Wait until deleted objects have left /api/status (upstream's cleanup waits for deletion too)."""
        keys = list(keys)

        def check(doc: dict[str, Any]) -> str | None:
            left = [k for k in keys if find_object(doc, *k) is not None]
            return f"still present: {left}" if left else None

        self.wait("deleted objects leave the status", check)
