"""IR route configs → Envoy RouteConfiguration."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import wrappers_pb2

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


def _apply_request_headers(route: rc.Route, mod: ir.HeaderModifier) -> None:
    route.request_headers_to_add.extend(_header_options(mod.set, base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD))
    route.request_headers_to_add.extend(_header_options(mod.add, base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD))
    route.request_headers_to_remove.extend(mod.remove)


def _apply_response_headers(route: rc.Route, mod: ir.HeaderModifier) -> None:
    route.response_headers_to_add.extend(
        _header_options(mod.set, base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)
    )
    route.response_headers_to_add.extend(_header_options(mod.add, base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD))
    route.response_headers_to_remove.extend(mod.remove)


def _redirect(r: ir.Redirect) -> rc.RedirectAction:
    out = rc.RedirectAction(response_code=REDIRECT_CODES[r.status_code])
    if r.scheme:
        out.scheme_redirect = r.scheme
    if r.hostname:
        out.host_redirect = r.hostname
    if r.port:
        out.port_redirect = r.port
    if r.full_path is not None:
        out.path_redirect = r.full_path
    elif r.prefix_replacement is not None:
        out.prefix_rewrite = r.prefix_replacement
    return out


def build_route(route: ir.Route) -> rc.Route:
    out = rc.Route(name=route.name, match=_route_match(route.match))
    action = route.action
    if isinstance(action, ir.Forward):
        if len(action.clusters) == 1:
            out.route.cluster = action.clusters[0].cluster
        else:
            out.route.weighted_clusters.clusters.extend(
                rc.WeightedCluster.ClusterWeight(name=wc.cluster, weight=wrappers_pb2.UInt32Value(value=wc.weight))
                for wc in action.clusters
            )
    elif isinstance(action, ir.Redirect):
        out.redirect.CopyFrom(_redirect(action))
    else:
        out.direct_response.status = action.status
        if action.body:
            out.direct_response.body.inline_string = action.body
    if route.request_headers is not None:
        _apply_request_headers(out, route.request_headers)
    if route.response_headers is not None:
        _apply_response_headers(out, route.response_headers)
    return out


def build_route_config(config: ir.RouteConfig) -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(
        name=config.name,
        virtual_hosts=[
            rc.VirtualHost(name=vh.name, domains=list(vh.domains), routes=[build_route(r) for r in vh.routes])
            for vh in config.virtual_hosts
        ],
    )
