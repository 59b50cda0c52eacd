"""IR route configs → Envoy RouteConfiguration."""

from __future__ import annotations

import re
from typing import Any

from envoy.config.core.v3 import base_pb2, extension_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.stateful_session.v3 import stateful_session_pb2
from envoy.extensions.http.stateful_session.cookie.v3 import cookie_pb2 as cookie_session_pb2
from envoy.extensions.http.stateful_session.header.v3 import header_pb2 as header_session_pb2
from envoy.type.http.v3 import cookie_pb2 as http_cookie_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.message import Message

from stackway.ir import model as ir

REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}


def _string_matcher(m: ir.StringMatch) -> string_pb2.StringMatcher:
    if m.type == "RegularExpression":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=m.value))
    return string_pb2.StringMatcher(exact=m.value)


def _route_match(match: ir.Match) -> rc.RouteMatch:
    out = rc.RouteMatch()
    path = match.path
    if path.type == "Exact":
        out.path = path.value
    elif path.type == "RegularExpression":
        out.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=path.value))
    else:
        # Gateway API prefixes match whole path segments ("/foo" matches "/foo/bar", not "/foobar")
        # and ignore a trailing slash: Envoy's path_separated_prefix means exactly that.
        trimmed = path.value.rstrip("/")
        if trimmed:
            out.path_separated_prefix = trimmed
        else:
            out.prefix = "/"
    for h in match.headers:
        out.headers.append(rc.HeaderMatcher(name=h.name, string_match=_string_matcher(h)))
    if match.method:
        out.headers.append(rc.HeaderMatcher(name=":method", string_match=string_pb2.StringMatcher(exact=match.method)))
    for q in match.query_params:
        out.query_parameters.append(rc.QueryParameterMatcher(name=q.name, string_match=_string_matcher(q)))
    return out


def _header_options(
    pairs: tuple[tuple[str, str], ...], action: base_pb2.HeaderValueOption.HeaderAppendAction.ValueType
) -> list[base_pb2.HeaderValueOption]:
    return [
        base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=v), append_action=action) for k, v in pairs
    ]


def _apply_headers(target: Any, mod: ir.HeaderModifier, direction: str) -> None:
    """Gateway API set/add/remove on a Route or a ClusterWeight (both carry the same header fields)."""
    to_add = getattr(target, f"{direction}_headers_to_add")
    to_add.extend(_header_options(mod.set, base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD))
    to_add.extend(_header_options(mod.add, base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD))
    getattr(target, f"{direction}_headers_to_remove").extend(mod.remove)


def path_rewrite(
    full_path: str | None, prefix: str | None, replacement: str | None
) -> regex_pb2.RegexMatchAndSubstitute | None:
    """Gateway API path rewrites as one RE2 substitution on the path (the query string is kept).

    Envoy's prefix_rewrite would turn "/prefix/x" with replacement "/" into "//x"; Gateway API wants
    "/x", and a trailing slash in either prefix or replacement is not significant.
    """
    if full_path is not None:
        return regex_pb2.RegexMatchAndSubstitute(pattern=regex_pb2.RegexMatcher(regex="^/.*$"), substitution=full_path)
    if prefix is None or replacement is None:
        return None
    matched, repl = prefix.rstrip("/"), replacement.rstrip("/")
    if not matched:
        pattern, substitution = "^/", repl + "/"
    elif not repl:
        pattern, substitution = f"^{re.escape(matched)}/*", "/"
    else:
        pattern, substitution = f"^{re.escape(matched)}", repl
    return regex_pb2.RegexMatchAndSubstitute(pattern=regex_pb2.RegexMatcher(regex=pattern), substitution=substitution)


def _redirect(r: ir.Redirect) -> rc.RedirectAction:
    out = rc.RedirectAction(response_code=REDIRECT_CODES[r.status_code])
    if r.scheme:
        out.scheme_redirect = r.scheme
    if r.hostname:
        out.host_redirect = r.hostname
    if r.port:
        out.port_redirect = r.port
    rewrite = path_rewrite(r.full_path, r.prefix, r.prefix_replacement)
    if rewrite is not None:
        out.regex_rewrite.CopyFrom(rewrite)
    return out


def _duration(ms: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def _forward(action: ir.Forward) -> rc.RouteAction:
    out = rc.RouteAction()
    plain = len(action.clusters) == 1 and not (
        action.clusters[0].request_headers or action.clusters[0].response_headers
    )
    if plain:
        out.cluster = action.clusters[0].cluster
    else:
        for wc in action.clusters:
            weight = rc.WeightedCluster.ClusterWeight(name=wc.cluster, weight=wrappers_pb2.UInt32Value(value=wc.weight))
            if wc.request_headers is not None:
                _apply_headers(weight, wc.request_headers, "request")
            if wc.response_headers is not None:
                _apply_headers(weight, wc.response_headers, "response")
            out.weighted_clusters.clusters.append(weight)
    for mirror in action.mirrors:
        policy = rc.RouteAction.RequestMirrorPolicy(cluster=mirror.cluster)
        if mirror.per_million < 1_000_000:
            policy.runtime_fraction.default_value.numerator = mirror.per_million
            policy.runtime_fraction.default_value.denominator = percent_pb2.FractionalPercent.MILLION
        out.request_mirror_policies.append(policy)
    if action.rewrite is not None:
        if action.rewrite.hostname:
            out.host_rewrite_literal = action.rewrite.hostname
        rewrite = path_rewrite(action.rewrite.full_path, action.rewrite.prefix, action.rewrite.prefix_replacement)
        if rewrite is not None:
            out.regex_rewrite.CopyFrom(rewrite)
    if action.timeout_ms is not None:
        out.timeout.CopyFrom(_duration(action.timeout_ms))
    if action.retry is not None:
        retry = action.retry
        policy = rc.RetryPolicy(
            retry_on="retriable-status-codes,connect-failure,refused-stream,reset",
            num_retries=wrappers_pb2.UInt32Value(value=retry.attempts),
            retriable_status_codes=list(retry.codes),
        )
        if retry.backoff_ms:
            policy.retry_back_off.base_interval.CopyFrom(_duration(retry.backoff_ms))
        if action.per_try_timeout_ms:
            policy.per_try_timeout.CopyFrom(_duration(action.per_try_timeout_ms))
        out.retry_policy.CopyFrom(policy)
    elif action.per_try_timeout_ms:
        out.retry_policy.per_try_timeout.CopyFrom(_duration(action.per_try_timeout_ms))
    return out


def build_route(route: ir.Route) -> rc.Route:
    out = rc.Route(name=route.name, match=_route_match(route.match))
    action = route.action
    if isinstance(action, ir.Forward):
        out.route.CopyFrom(_forward(action))
    elif isinstance(action, ir.Redirect):
        out.redirect.CopyFrom(_redirect(action))
    else:
        out.direct_response.status = action.status
        if action.body:
            out.direct_response.body.inline_string = action.body
    if route.request_headers is not None:
        _apply_headers(out, route.request_headers, "request")
    if route.response_headers is not None:
        _apply_headers(out, route.response_headers, "response")
    if route.cors is not None:
        packed = any_pb2.Any()
        packed.Pack(cors_policy(route.cors))
        out.typed_per_filter_config[CORS_FILTER].CopyFrom(packed)
    if route.session is not None:
        packed = any_pb2.Any()
        packed.Pack(session_policy(route.session))
        out.typed_per_filter_config[SESSION_FILTER].CopyFrom(packed)
    return out


SESSION_FILTER = "envoy.filters.http.stateful_session"


def session_policy(session: ir.Session) -> stateful_session_pb2.StatefulSessionPerRoute:
    """Per-route session persistence; the listener-level stateful_session filter is otherwise inert."""
    state: Message
    if session.type == "Header":
        state = header_session_pb2.HeaderBasedSessionState(name=session.name)
        extension = "envoy.http.stateful_session.header"
    else:
        cookie = http_cookie_pb2.Cookie(name=session.name, path="/")
        if session.ttl_s:
            cookie.ttl.CopyFrom(duration_pb2.Duration(seconds=session.ttl_s))
        state = cookie_session_pb2.CookieBasedSessionState(cookie=cookie)
        extension = "envoy.http.stateful_session.cookie"
    packed = any_pb2.Any()
    packed.Pack(state)
    return stateful_session_pb2.StatefulSessionPerRoute(
        stateful_session=stateful_session_pb2.StatefulSession(
            session_state=extension_pb2.TypedExtensionConfig(name=extension, typed_config=packed)
        )
    )


CORS_FILTER = "envoy.filters.http.cors"


def _origin(origin: str) -> string_pb2.StringMatcher:
    if origin == "*":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".*"))
    if "*" in origin:
        pattern = ".*".join(re.escape(part) for part in origin.split("*"))
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=pattern))
    return string_pb2.StringMatcher(exact=origin)


def cors_policy(cors: ir.Cors) -> cors_pb2.CorsPolicy:
    """Gateway API CORS → Envoy's per-route CorsPolicy (the cors HTTP filter is on every listener)."""
    return cors_pb2.CorsPolicy(
        allow_origin_string_match=[_origin(o) for o in cors.allow_origins],
        allow_methods=", ".join(cors.allow_methods),
        allow_headers=", ".join(cors.allow_headers),
        expose_headers=", ".join(cors.expose_headers),
        max_age=str(cors.max_age_s),
        allow_credentials=wrappers_pb2.BoolValue(value=cors.allow_credentials),
    )


#: RouteConfiguration fields besides name and virtual hosts (all numbered after virtual_hosts, so that an
#: incremental build can append them, serialised, after the virtual hosts' bytes).
#: Host headers may carry a port ("example.com:8080"); Gateway API hostnames never do. Match without it, but
#: leave the header itself untouched for the backend (stripping would rewrite it).
_ROUTE_CONFIG_OPTIONS: dict[str, Any] = {"ignore_port_in_host_matching": True}
ROUTE_CONFIG_TRAILER = route_pb2.RouteConfiguration(**_ROUTE_CONFIG_OPTIONS).SerializeToString(deterministic=True)


def virtual_host_head(vh: ir.VirtualHost) -> rc.VirtualHost:
    """A VirtualHost without its routes (routes are field 3, after everything set here)."""
    return rc.VirtualHost(name=vh.name, domains=list(vh.domains))


def build_route_config(config: ir.RouteConfig) -> route_pb2.RouteConfiguration:
    """The RouteConfiguration as one message. Snapshots assemble the same bytes from per-route parts
    (xds/build.py); this is the plain reference they are tested against."""
    out = route_pb2.RouteConfiguration(name=config.name, **_ROUTE_CONFIG_OPTIONS)
    for vh in config.virtual_hosts:
        built = out.virtual_hosts.add()
        built.CopyFrom(virtual_host_head(vh))
        built.routes.extend(build_route(r) for r in vh.routes)
    return out
