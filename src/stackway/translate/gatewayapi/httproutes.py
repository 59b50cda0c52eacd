"""HTTPRoutes: attachment to listeners, rules → IR routes with the spec's precedence, and route status."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from stackway.ir import model as ir
from stackway.ir.regex import regex_problem
from stackway.resources.gatewayapi import (
    GROUP,
    BackendObjectReference,
    HTTPRequestMirrorFilter,
    HTTPRoute,
    HTTPRouteFilter,
    HTTPRouteMatch,
    HTTPRouteRule,
    ParentReference,
    duration_ms,
)
from stackway.resources.raw import ObjectKey
from stackway.translate import conditions as c
from stackway.translate.context import Context
from stackway.translate.gatewayapi.backends import BackendFailure, resolve_backend
from stackway.translate.gatewayapi.gateways import GatewayView, ListenerView
from stackway.translate.hostnames import effective_hostnames

SUPPORTED_FILTERS = frozenset(
    {"RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite", "RequestMirror"}
)
BACKEND_FILTERS = frozenset({"RequestHeaderModifier", "ResponseHeaderModifier"})


@dataclass(frozen=True)
class Placed:
    """An IR route destined for one listener and hostname, with its precedence key."""

    listener: ListenerView
    hostname: str
    order: tuple[Any, ...]
    route: ir.Route


def precedence(match: HTTPRouteMatch) -> tuple[Any, ...]:
    """Gateway API precedence: Exact path, longest prefix, method, most headers, most query params.

    Smaller sorts first. Regular expressions (implementation-specific) sit between Exact and PathPrefix.
    """
    rank = {"Exact": 0, "RegularExpression": 1, "PathPrefix": 2}[match.path.type]
    return (rank, -len(match.path.value), match.method is None, -len(match.headers), -len(match.query_params))


class RouteTranslator:
    def __init__(self, ctx: Context, gateways: list[GatewayView]) -> None:
        self.ctx = ctx
        self.gateways = {(g.key.namespace, g.key.name): g for g in gateways}
        self.placed: list[Placed] = []
        self.clusters: dict[str, ir.Cluster] = {}
        self._backends: dict[tuple[str, BackendObjectReference], ir.Cluster | BackendFailure] = {}

    def translate_all(self) -> None:
        routes = sorted(
            self.ctx.resources.http_routes.items(),
            key=lambda item: (item[1].metadata.creation_timestamp, item[0]),
        )
        for age, ((ns, name), route) in enumerate(routes):
            self._translate(ObjectKey(GROUP, "HTTPRoute", ns, name), route, age)

    def _translate(self, key: ObjectKey, route: HTTPRoute, age: int) -> None:
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
        unsupported = _unsupported(route)
        rules, resolved = self._rules(key, route, age) if unsupported is None else ([], (True, c.R_RESOLVED_REFS, ""))
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
        self, key: ObjectKey, route: HTTPRoute, ref: ParentReference, gateway: GatewayView
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
        allowed = [lv for lv in candidates if self._allows(lv, key.namespace)]
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

    def _allows(self, lv: ListenerView, route_ns: str) -> bool:
        if not any(k.group == GROUP and k.kind == "HTTPRoute" for k in lv.supported_kinds):
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

    def _rules(
        self, key: ObjectKey, route: HTTPRoute, age: int
    ) -> tuple[list[tuple[tuple[Any, ...], ir.Route]], tuple[bool, str, str]]:
        self._resolved: tuple[bool, str, str] = (True, c.R_RESOLVED_REFS, "")
        out: list[tuple[tuple[Any, ...], ir.Route]] = []
        for r_index, rule in enumerate(route.spec.rules):
            filters = {f.type: f for f in rule.filters}
            request_headers = _header_modifier(filters.get("RequestHeaderModifier"), "request")
            response_headers = _header_modifier(filters.get("ResponseHeaderModifier"), "response")
            rule_id = rule.name or str(r_index)
            forward = None if "RequestRedirect" in filters else self._forward(key, rule, r_index)
            for m_index, match in enumerate(rule.matches):
                prefix = match.path.value if match.path.type == "PathPrefix" else None
                action: ir.Action
                if "RequestRedirect" in filters:
                    action = _redirect(filters["RequestRedirect"], prefix)
                elif forward is None:
                    # No usable backend (none given, all invalid, all weight 0): the spec requires a 500.
                    action = ir.DirectResponse(500)
                else:
                    action = dataclasses.replace(forward, rewrite=_rewrite(filters.get("URLRewrite"), prefix))
                irroute = ir.Route(
                    name=f"httproute/{key.namespace}/{key.name}/rule/{rule_id}/match/{m_index}",
                    match=_match(match),
                    action=action,
                    request_headers=request_headers,
                    response_headers=response_headers,
                )
                out.append(((*precedence(match), age, r_index, m_index), irroute))
        return out, self._resolved

    def _resolve(self, key: ObjectKey, ref: BackendObjectReference, fld: str) -> ir.Cluster | None:
        memo = (key.namespace, ref)
        result = self._backends.get(memo)
        if result is None:
            result = self._backends[memo] = resolve_backend(self.ctx, "HTTPRoute", key.namespace, ref)
        if isinstance(result, BackendFailure):
            if self._resolved[0]:
                self._resolved = (False, result.reason, result.message)
            self.ctx.problem(key, fld, result.message)
            return None
        self.clusters[result.name] = result
        return result

    def _forward(self, key: ObjectKey, rule: HTTPRouteRule, r_index: int) -> ir.Forward | None:
        weighted: list[ir.WeightedCluster] = []
        for b_index, ref in enumerate(rule.backend_refs):
            cluster = self._resolve(key, ref, f"spec.rules[{r_index}].backendRefs[{b_index}]")
            if cluster is not None and ref.weight > 0:
                bfilters = {f.type: f for f in ref.filters}
                weighted.append(
                    ir.WeightedCluster(
                        cluster.name,
                        ref.weight,
                        request_headers=_header_modifier(bfilters.get("RequestHeaderModifier"), "request"),
                        response_headers=_header_modifier(bfilters.get("ResponseHeaderModifier"), "response"),
                    )
                )
        if not weighted:
            return None
        mirrors: list[ir.Mirror] = []
        for f_index, f in enumerate(rule.filters):
            if f.type == "RequestMirror" and f.request_mirror is not None:
                spec = f.request_mirror
                cluster = self._resolve(
                    key, spec.backend_ref, f"spec.rules[{r_index}].filters[{f_index}].requestMirror"
                )
                if cluster is not None:
                    mirrors.append(ir.Mirror(cluster.name, _per_million(spec)))
        timeout_ms = per_try_ms = None
        if rule.timeouts is not None:
            request = duration_ms(rule.timeouts.request) if rule.timeouts.request else None
            backend = duration_ms(rule.timeouts.backend_request) if rule.timeouts.backend_request else None
            timeout_ms = request if request is not None else backend
            per_try_ms = backend if request is not None and backend is not None else None
        retry = None
        if rule.retry is not None and (rule.retry.attempts or rule.retry.codes):
            retry = ir.Retry(
                attempts=rule.retry.attempts if rule.retry.attempts is not None else 1,
                codes=rule.retry.codes,
                backoff_ms=duration_ms(rule.retry.backoff) if rule.retry.backoff else None,
            )
        return ir.Forward(
            tuple(weighted), mirrors=tuple(mirrors), timeout_ms=timeout_ms, per_try_timeout_ms=per_try_ms, retry=retry
        )


def _per_million(spec: HTTPRequestMirrorFilter) -> int:
    if spec.fraction is not None:
        return min(1_000_000, int(spec.fraction.numerator) * 1_000_000 // int(spec.fraction.denominator))
    if spec.percent is not None:
        return int(spec.percent) * 10_000
    return 1_000_000


def _unsupported(route: HTTPRoute) -> tuple[str, str] | None:
    """The first thing in the route stackway cannot honour, as (field, message); the route is then rejected."""
    for r_index, rule in enumerate(route.spec.rules):
        for m_index, match in enumerate(rule.matches):
            where = f"spec.rules[{r_index}].matches[{m_index}]"
            regexes = [(f"{where}.path.value", match.path.value)] if match.path.type == "RegularExpression" else []
            regexes += [
                (f"{where}.headers[{i}].value", h.value)
                for i, h in enumerate(match.headers)
                if h.type == "RegularExpression"
            ]
            regexes += [
                (f"{where}.queryParams[{i}].value", q.value)
                for i, q in enumerate(match.query_params)
                if q.type == "RegularExpression"
            ]
            for fld, pattern in regexes:
                why = regex_problem(pattern)
                if why is not None:
                    return fld, f"invalid RE2 regular expression {pattern!r}: {why}"
        for f_index, f in enumerate(rule.filters):
            if f.type not in SUPPORTED_FILTERS:
                return (f"spec.rules[{r_index}].filters[{f_index}].type", f"filter type {f.type!r} is not supported")
        for b_index, ref in enumerate(rule.backend_refs):
            for f_index, f in enumerate(ref.filters):
                if f.type not in BACKEND_FILTERS:
                    return (
                        f"spec.rules[{r_index}].backendRefs[{b_index}].filters[{f_index}].type",
                        f"backendRef filter type {f.type!r} is not supported",
                    )
        types = [f.type for f in rule.filters]
        if "RequestRedirect" in types and "URLRewrite" in types:
            return f"spec.rules[{r_index}].filters", "RequestRedirect and URLRewrite cannot be combined"
        for f_index, f in enumerate(rule.filters):
            path = (f.request_redirect.path if f.request_redirect else None) or (
                f.url_rewrite.path if f.url_rewrite else None
            )
            prefix_only = all(m.path.type == "PathPrefix" for m in rule.matches)
            if path is not None and path.type == "ReplacePrefixMatch" and not prefix_only:
                return (
                    f"spec.rules[{r_index}].filters[{f_index}]",
                    "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match",
                )
    return None


def _parent_ref_status(ref: ParentReference) -> dict[str, Any]:
    out: dict[str, Any] = {"group": ref.group, "kind": ref.kind, "name": ref.name}
    if ref.namespace is not None:
        out["namespace"] = ref.namespace
    if ref.section_name is not None:
        out["sectionName"] = ref.section_name
    if ref.port is not None:
        out["port"] = ref.port
    return out


def _match(match: HTTPRouteMatch) -> ir.Match:
    headers: list[ir.StringMatch] = []
    seen: set[str] = set()
    for h in match.headers:  # the spec: only the first match for a header name counts
        if h.name.lower() not in seen:
            seen.add(h.name.lower())
            headers.append(ir.StringMatch(h.name.lower(), h.value, h.type))
    params: list[ir.StringMatch] = []
    seen_params: set[str] = set()
    for q in match.query_params:
        if q.name not in seen_params:
            seen_params.add(q.name)
            params.append(ir.StringMatch(q.name, q.value, q.type))
    return ir.Match(
        path=ir.PathMatch(match.path.type, match.path.value),
        headers=tuple(headers),
        query_params=tuple(params),
        method=match.method,
    )


def _header_modifier(f: HTTPRouteFilter | None, which: str) -> ir.HeaderModifier | None:
    spec = None if f is None else f.request_header_modifier if which == "request" else f.response_header_modifier
    if spec is None:
        return None
    return ir.HeaderModifier(
        set=tuple((h.name, h.value) for h in spec.set),
        add=tuple((h.name, h.value) for h in spec.add),
        remove=tuple(spec.remove),
    )


def _redirect(f: HTTPRouteFilter, prefix: str | None) -> ir.Redirect:
    spec = f.request_redirect
    assert spec is not None
    path = spec.path
    return ir.Redirect(
        status_code=spec.status_code,
        scheme=spec.scheme,
        hostname=spec.hostname,
        port=spec.port,
        full_path=path.replace_full_path if path and path.type == "ReplaceFullPath" else None,
        prefix=prefix if path and path.type == "ReplacePrefixMatch" else None,
        prefix_replacement=path.replace_prefix_match if path and path.type == "ReplacePrefixMatch" else None,
    )


def _rewrite(f: HTTPRouteFilter | None, prefix: str | None) -> ir.Rewrite | None:
    if f is None or f.url_rewrite is None:
        return None
    path = f.url_rewrite.path
    return ir.Rewrite(
        hostname=f.url_rewrite.hostname,
        full_path=path.replace_full_path if path and path.type == "ReplaceFullPath" else None,
        prefix=prefix if path and path.type == "ReplacePrefixMatch" else None,
        prefix_replacement=path.replace_prefix_match if path and path.type == "ReplacePrefixMatch" else None,
    )
