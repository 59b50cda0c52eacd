"""HTTPRoute rules → IR routes: matches, filters, backends, mirrors, timeouts and retries."""

from __future__ import annotations

import dataclasses

from stackway.ir import model as ir
from stackway.ir.regex import regex_problem
from stackway.resources.gatewayapi import (
    GRPCRouteRule,
    HTTPRequestMirrorFilter,
    HTTPRoute,
    HTTPRouteFilter,
    HTTPRouteMatch,
    HTTPRouteRule,
    SessionPersistence,
    TLSRoute,
    TLSRouteRule,
    duration_ms,
)
from stackway.resources.raw import ObjectKey
from stackway.translate.gatewayapi.routes import Ordered, RouteTranslator, precedence

SUPPORTED_FILTERS = frozenset(
    {"RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite", "RequestMirror", "CORS"}
)
BACKEND_FILTERS = frozenset({"RequestHeaderModifier", "ResponseHeaderModifier"})


def http_rules(tr: RouteTranslator, key: ObjectKey, route: HTTPRoute, age: int) -> list[Ordered]:
    out: list[Ordered] = []
    for r_index, rule in enumerate(route.spec.rules):
        filters = {f.type: f for f in rule.filters}
        request_headers = _header_modifier(filters.get("RequestHeaderModifier"), "request")
        response_headers = _header_modifier(filters.get("ResponseHeaderModifier"), "response")
        rule_id = rule.name or str(r_index)
        forward = None if "RequestRedirect" in filters else forward_action(tr, key, rule, r_index)
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
                match=http_match(match),
                action=action,
                request_headers=request_headers,
                response_headers=response_headers,
                cors=_cors(filters.get("CORS")),
                session=_session(rule.session_persistence, key),
            )
            irmatch = irroute.match
            order = precedence(irmatch.path, irmatch.method, len(irmatch.headers), len(irmatch.query_params))
            out.append(((*order, age, r_index, m_index), irroute))
    return out


def forward_action(
    tr: RouteTranslator,
    key: ObjectKey,
    rule: HTTPRouteRule | GRPCRouteRule | TLSRouteRule,
    r_index: int,
    h2c: bool = False,
) -> ir.Forward | None:
    """Backends, mirrors, timeouts and retries of one rule; None when no backend can take traffic."""
    weighted: list[ir.WeightedCluster] = []
    for b_index, ref in enumerate(rule.backend_refs):
        cluster = tr.resolve(key, ref, f"spec.rules[{r_index}].backendRefs[{b_index}]", h2c)
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
    for f_index, f in enumerate(getattr(rule, "filters", ())):
        if f.type == "RequestMirror" and f.request_mirror is not None:
            spec = f.request_mirror
            fld = f"spec.rules[{r_index}].filters[{f_index}].requestMirror.backendRef"
            cluster = tr.resolve(key, spec.backend_ref, fld, h2c)
            if cluster is not None:
                mirrors.append(ir.Mirror(cluster.name, _per_million(spec)))
    timeout_ms = per_try_ms = None
    timeouts = getattr(rule, "timeouts", None)
    if timeouts is not None:
        request = duration_ms(timeouts.request) if timeouts.request else None
        backend = duration_ms(timeouts.backend_request) if timeouts.backend_request else None
        timeout_ms = request if request is not None else backend
        per_try_ms = backend if request is not None and backend is not None else None
    retry = None
    spec_retry = getattr(rule, "retry", None)
    if spec_retry is not None and (spec_retry.attempts or spec_retry.codes):
        retry = ir.Retry(
            attempts=spec_retry.attempts if spec_retry.attempts is not None else 1,
            codes=spec_retry.codes,
            backoff_ms=duration_ms(spec_retry.backoff) if spec_retry.backoff else None,
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


def http_unsupported(route: HTTPRoute) -> tuple[str, str] | None:
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


def http_match(match: HTTPRouteMatch) -> ir.Match:
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


def _cors(f: HTTPRouteFilter | None) -> ir.Cors | None:
    if f is None or f.cors is None:
        return None
    spec = f.cors
    return ir.Cors(
        allow_origins=spec.allow_origins,
        allow_methods=spec.allow_methods,
        allow_headers=spec.allow_headers,
        expose_headers=spec.expose_headers,
        allow_credentials=bool(spec.allow_credentials),
        max_age_s=spec.max_age,
    )


def tls_rules(tr: RouteTranslator, key: ObjectKey, route: TLSRoute, age: int) -> list[Ordered]:
    """A TLSRoute becomes one catch-all "route" whose Forward names the TCP backends; the assembly turns it
    into a tcp_proxy filter chain per SNI hostname (the oldest route wins a hostname)."""
    out: list[Ordered] = []
    for r_index, rule in enumerate(route.spec.rules):
        forward = forward_action(tr, key, rule, r_index)
        action: ir.Action = forward if forward is not None else ir.DirectResponse(500)
        irroute = ir.Route(
            name=f"tlsroute/{key.namespace}/{key.name}/rule/{rule.name or r_index}", match=ir.Match(), action=action
        )
        out.append(((age, r_index), irroute))
    return out


def _session(spec: SessionPersistence | None, key: ObjectKey) -> ir.Session | None:
    if spec is None:
        return None
    if spec.type == "Header":
        return ir.Session("Header", spec.session_name or "x-stackway-session")
    permanent = spec.cookie_config is not None and spec.cookie_config.lifetime_type == "Permanent"
    ttl = duration_ms(spec.absolute_timeout) // 1000 if permanent and spec.absolute_timeout else None
    return ir.Session("Cookie", spec.session_name or f"stackway-{key.namespace}-{key.name}", ttl)
