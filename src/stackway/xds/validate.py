"""Checks on the IR before it becomes a snapshot: what Envoy would NACK, caught with a clear message.

Envoy validates with protoc-gen-validate rules and RE2; a NACK there would reject the whole resource
(for a listener: every route on that socket). Regexes are checked with RE2 itself, the engine Envoy uses.

The checks are split so that an incremental build can ask "is anything wrong?" per route once, remember
the answer with the route, and only run the full `validate_ir` (for its complete message) when it is.
"""

from __future__ import annotations

from stackway.ir import model as ir
from stackway.ir.regex import regex_problem


class InvalidConfig(ValueError):
    """A system error: the translator produced something Envoy cannot take. Never caused by user input alone."""


def validate_ir(config: ir.IR) -> None:
    clusters = {c.name for c in config.clusters}
    problems = listener_problems(config, clusters, routes=True)
    if problems:
        raise InvalidConfig("; ".join(problems))


def listener_problems(config: ir.IR, clusters: set[str], *, routes: bool) -> list[str]:
    """Everything wrong with the listeners and, if `routes`, with every route they hold, in a stable order."""
    problems: list[str] = []
    names: set[str] = set()
    for listener in config.listeners:
        if listener.name in names:
            problems.append(f"duplicate listener name {listener.name}")
        names.add(listener.name)
        if not 0 < listener.port < 65536:
            problems.append(f"{listener.name}: port {listener.port} out of range")
        for fc in listener.filter_chains:
            if (fc.route_config is None) == (not fc.tcp):
                problems.append(f"{listener.name}/{fc.name}: needs exactly one of routes and TCP clusters")
            problems.extend(
                f"{listener.name}/{fc.name}: unknown cluster {wc.cluster}"
                for wc in fc.tcp
                if wc.cluster not in clusters
            )
            if listener.protocol == "TLS" and fc.route_config is not None and not fc.certificates:
                problems.append(f"{listener.name}/{fc.name}: HTTPS filter chain without certificate")
            if not routes:
                continue
            for vh in fc.route_config.virtual_hosts if fc.route_config else ():
                for route in vh.routes:
                    problems.extend(f"{route.name}: {p}" for p in _route_problems(route, clusters))
    return problems


def route_references(route: ir.Route) -> frozenset[str]:
    """Names of the clusters a route sends or mirrors to."""
    if not isinstance(route.action, ir.Forward):
        return frozenset()
    return frozenset((*(wc.cluster for wc in route.action.clusters), *(m.cluster for m in route.action.mirrors)))


def route_sound(route: ir.Route) -> bool:
    """True when nothing is wrong with the route itself; its cluster references are checked apart."""
    return not _route_problems(route, set(route_references(route)))


def _route_problems(route: ir.Route, clusters: set[str]) -> list[str]:
    out: list[str] = []
    patterns = [m.value for m in (*route.match.headers, *route.match.query_params) if m.type == "RegularExpression"]
    if route.match.path.type == "RegularExpression":
        patterns.append(route.match.path.value)
    for pattern in patterns:
        why = regex_problem(pattern)
        if why:
            out.append(f"invalid regular expression {pattern!r}: {why}")
    if isinstance(route.action, ir.Forward):
        if not route.action.clusters:
            out.append("forward without clusters")
        referenced = [wc.cluster for wc in route.action.clusters] + [m.cluster for m in route.action.mirrors]
        out.extend(f"unknown cluster {name}" for name in referenced if name not in clusters)
        out.extend(f"weight {wc.weight} of {wc.cluster}" for wc in route.action.clusters if wc.weight <= 0)
    return out
