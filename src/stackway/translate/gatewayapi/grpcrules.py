"""GRPCRoute rules → IR routes. A gRPC method is an HTTP/2 path, `/package.Service/Method`, so method
matches become path matches and share HTTPRoute's precedence and the xDS builder unchanged."""

from __future__ import annotations

import re

from stackway.ir import model as ir
from stackway.ir.regex import regex_problem
from stackway.resources.gatewayapi import GRPCMethodMatch, GRPCRoute, GRPCRouteMatch
from stackway.resources.raw import ObjectKey
from stackway.translate.gatewayapi.httprules import _header_modifier, forward_action
from stackway.translate.gatewayapi.routes import Ordered, RouteTranslator, precedence

GRPC_FILTERS = frozenset({"RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*(\.[A-Za-z_][A-Za-z_0-9]*)*$")


def method_path(method: GRPCMethodMatch | None) -> ir.PathMatch:
    """The path match equivalent to a GRPCRoute method match (spec: GRPCMethodMatch)."""
    if method is None or (method.service is None and method.method is None):
        return ir.PathMatch("PathPrefix", "/")
    if method.type == "Exact":
        if method.service and method.method:
            return ir.PathMatch("Exact", f"/{method.service}/{method.method}")
        if method.service:
            return ir.PathMatch("PathPrefix", f"/{method.service}")
        return ir.PathMatch("RegularExpression", f"/[^/]+/{re.escape(method.method or '')}")
    service = method.service or "[^/]+"
    name = method.method or "[^/]+"
    return ir.PathMatch("RegularExpression", f"/{service}/{name}")


def _match(match: GRPCRouteMatch) -> ir.Match:
    headers: list[ir.StringMatch] = []
    seen: set[str] = set()
    for h in match.headers:
        if h.name.lower() not in seen:
            seen.add(h.name.lower())
            headers.append(ir.StringMatch(h.name.lower(), h.value, h.type))
    return ir.Match(path=method_path(match.method), headers=tuple(headers))


def grpc_rules(tr: RouteTranslator, key: ObjectKey, route: GRPCRoute, age: int) -> list[Ordered]:
    out: list[Ordered] = []
    for r_index, rule in enumerate(route.spec.rules):
        filters = {f.type: f for f in rule.filters}
        forward = forward_action(tr, key, rule, r_index, h2c=True)
        rule_id = rule.name or str(r_index)
        for m_index, match in enumerate(rule.matches):
            irmatch = _match(match)
            irroute = ir.Route(
                name=f"grpcroute/{key.namespace}/{key.name}/rule/{rule_id}/match/{m_index}",
                match=irmatch,
                # gRPC clients read the status from trailers; a bare HTTP 500 still fails the call cleanly.
                action=forward if forward is not None else ir.DirectResponse(500),
                request_headers=_header_modifier(filters.get("RequestHeaderModifier"), "request"),
                response_headers=_header_modifier(filters.get("ResponseHeaderModifier"), "response"),
            )
            order = precedence(irmatch.path, None, len(irmatch.headers), 0)
            out.append(((*order, age, r_index, m_index), irroute))
    return out


def grpc_unsupported(route: GRPCRoute) -> tuple[str, str] | None:
    """The first thing stackway cannot honour in a GRPCRoute, as (field, message)."""
    for r_index, rule in enumerate(route.spec.rules):
        for f_index, f in enumerate(rule.filters):
            if f.type not in GRPC_FILTERS:
                return f"spec.rules[{r_index}].filters[{f_index}].type", f"filter type {f.type!r} is not supported"
        for m_index, match in enumerate(rule.matches):
            method = match.method
            where = f"spec.rules[{r_index}].matches[{m_index}].method"
            if method is None:
                continue
            for part in ("service", "method"):
                value = getattr(method, part)
                if value is None:
                    continue
                if method.type == "Exact" and not _NAME.match(value):
                    return f"{where}.{part}", f"{value!r} is not a valid gRPC {part} name"
                if method.type == "RegularExpression" and (why := regex_problem(value)):
                    return f"{where}.{part}", f"invalid RE2 regular expression {value!r}: {why}"
            for h_index, h in enumerate(match.headers):
                if h.type == "RegularExpression" and (why := regex_problem(h.value)):
                    return f"spec.rules[{r_index}].matches[{m_index}].headers[{h_index}].value", why
    return None
