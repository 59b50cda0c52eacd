"""Gateway API resources → IR + statuses. Pure: no clock, no I/O; user mistakes become conditions."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stackway.ir import model as ir
from stackway.resources.gatewayapi import GROUP
from stackway.translate import conditions as c
from stackway.translate.context import Context
from stackway.translate.gatewayapi.backends import backend_tls
from stackway.translate.gatewayapi.gateways import GatewayView, family, gateway_classes, gateway_status, gateways
from stackway.translate.gatewayapi.routes import Placed, RouteTranslator
from stackway.translate.hostnames import covers
from stackway.translate.ingress import translate_ingresses


@dataclass
class _Chain:
    server_names: tuple[str, ...]
    certificates: tuple[ir.Certificate, ...]
    #: True for TLS listeners (TLSRoute): the stream is proxied, not parsed as HTTP.
    tcp: bool = False
    client_validation: tuple[str, bool] | None = None
    vhosts: dict[str, list[Placed]] = field(default_factory=lambda: defaultdict(list))


@dataclass
class _Socket:
    address: str
    port: int
    protocol: str
    chains: dict[str, _Chain] = field(default_factory=dict)
    #: Hostnames of the listeners sharing this socket (None: a listener without hostname).
    hostnames: set[str | None] = field(default_factory=set)

    def owner(self, hostname: str) -> str | None:
        """The hostname of the listener that owns requests for `hostname`: the most specific one matching.

        Listener isolation: a request belongs to exactly one listener, and only routes attached to that
        listener may answer it, even where another listener's wildcard would also match.
        """
        matching = [
            h for h in self.hostnames if h is None or h == hostname or (h.startswith("*.") and covers(h, hostname))
        ]
        return max(matching, key=_specificity, default=None)


def translate_gateway_api(ctx: Context) -> ir.IR:
    ours = gateway_classes(ctx)
    views = gateways(ctx, ours)
    routes = RouteTranslator(ctx, views)
    routes.translate_all()
    for view in views:
        ctx.statuses[view.key] = gateway_status(ctx, view)
    _status_for_invalid(ctx, ours, views)
    views += translate_ingresses(ctx, routes)
    listeners = _assemble(ctx, views, routes.placed)
    used = {
        name
        for lst in listeners
        for fc in lst.filter_chains
        for vh in (fc.route_config.virtual_hosts if fc.route_config else ())
        for rt in vh.routes
        if isinstance(rt.action, ir.Forward)
        for name in (*(wc.cluster for wc in rt.action.clusters), *(m.cluster for m in rt.action.mirrors))
    } | {wc.cluster for lst in listeners for fc in lst.filter_chains for wc in fc.tcp}
    clusters = tuple(routes.clusters[name] for name in sorted(used))
    _backend_tls_status(ctx, routes.placed, routes.clusters)
    return ir.IR(listeners=listeners, clusters=clusters)


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


def _chain_key(protocol: str, hostname: str | None) -> str:
    return "*" if protocol == "HTTP" or hostname is None else hostname


def _assemble(ctx: Context, views: list[GatewayView], placed: list[Placed]) -> tuple[ir.Listener, ...]:
    sockets: dict[tuple[str, int], _Socket] = {}
    for view in views:
        if view.address_problem:
            continue
        for lv in view.listeners:
            if not lv.serving:
                continue
            for address in view.addresses:
                proto = family(lv.spec.protocol)
                sock = sockets.setdefault((address, lv.spec.port), _Socket(address, lv.spec.port, proto))
                if sock.protocol != proto:
                    # Only Ingress can get here (Gateways were checked): its ports are taken by a Gateway.
                    ctx.problem(view.key, lv.name, f"{address}:{lv.spec.port} already serves {sock.protocol}")
                    lv.accepted = (False, "PortUnavailable", "port taken")
                    continue
                sock.hostnames.add(lv.spec.hostname)
                key = _chain_key(sock.protocol, lv.spec.hostname)
                if key not in sock.chains:
                    names = (lv.spec.hostname,) if sock.protocol == "TLS" and lv.spec.hostname else ()
                    sock.chains[key] = _Chain(
                        names, lv.certificates, tcp=lv.spec.protocol == "TLS", client_validation=lv.client_validation
                    )
    for p in placed:
        view = p.listener.gateway
        if view.address_problem or not p.listener.serving:
            continue
        for address in view.addresses:
            sock = sockets[(address, p.listener.spec.port)]
            if sock.owner(p.hostname) != p.listener.spec.hostname:
                continue  # a more specific listener on this socket owns these requests
            sock.chains[_chain_key(sock.protocol, p.listener.spec.hostname)].vhosts[p.hostname].append(p)
    return tuple(_listener(sock) for _, sock in sorted(sockets.items()))


def _redirect_port(route: ir.Route, sock: _Socket) -> ir.Route:
    """A redirect without scheme and port keeps the listener's port (Gateway API), omitted when it is the
    scheme's default; Envoy would otherwise drop it from the Location."""
    action = route.action
    if not isinstance(action, ir.Redirect) or action.port is not None or action.scheme is not None:
        return route
    default = 80 if sock.protocol == "HTTP" else 443
    if sock.port == default:
        return route
    return dataclasses.replace(route, action=dataclasses.replace(action, port=sock.port))


def _specificity(hostname: str | None) -> tuple[int, int]:
    if hostname is None:
        return (0, 0)
    return (1, len(hostname)) if hostname.startswith("*.") else (2, len(hostname))


def _misdirected(sock: _Socket, chain: str, taken: set[str]) -> list[ir.VirtualHost]:
    """421 answers for an HTTPS chain: hosts that belong to another listener's certificate and SNI.

    A client may reuse a TLS connection for another hostname (HTTP/2 connection coalescing); the Gateway
    API asks for 421 Misdirected Request then, so the client retries on a connection with the right SNI.
    """
    own = None if chain == "*" else chain
    others = [
        h
        for h in sock.hostnames
        if h is not None and h != own and h not in taken and (own is None or (own.startswith("*.") and covers(own, h)))
    ]
    hosts = sorted(others) + ([] if own is None else ["*"])
    reject = ir.Route(name="misdirected-request", match=ir.Match(), action=ir.DirectResponse(421))
    return [ir.VirtualHost(name=f"misdirected/{h}", domains=(h,), routes=(reject,)) for h in hosts]


def _tcp_chains(key: str, chain: _Chain) -> list[ir.FilterChain]:
    """A TLS listener's routes: one filter chain per SNI hostname, proxied to the oldest route's backends."""
    out: list[ir.FilterChain] = []
    for hostname, entries in sorted(chain.vhosts.items()):
        first = min(entries, key=lambda e: e.order).route.action
        if not isinstance(first, ir.Forward):
            continue  # no usable backend: without a chain, Envoy closes the connection
        names = () if hostname == "*" else (hostname,)
        out.append(
            ir.FilterChain(
                name=f"{key}/{hostname}", server_names=names, certificates=chain.certificates, tcp=first.clusters
            )
        )
    return out


def _listener(sock: _Socket) -> ir.Listener:
    base = f"{sock.address}/{sock.port}"
    chains: list[ir.FilterChain] = []
    for key, chain in sorted(sock.chains.items()):
        if chain.tcp:
            chains.extend(_tcp_chains(key, chain))
            continue
        rc_name = f"route/{base}" if sock.protocol == "HTTP" else f"route/{base}/{key}"
        vhosts: list[ir.VirtualHost] = []
        for hostname, entries in sorted(chain.vhosts.items()):
            seen: set[str] = set()
            routes: list[ir.Route] = []
            for entry in sorted(entries, key=lambda e: e.order):
                if entry.route.name not in seen:
                    seen.add(entry.route.name)
                    routes.append(_redirect_port(entry.route, sock))
            vhosts.append(ir.VirtualHost(name=hostname, domains=(hostname,), routes=tuple(routes)))
        # A listener hostname without routes still owns its requests: an empty virtual host answers 404
        # instead of letting a wider listener's wildcard answer for it.
        owned = [h for h in sock.hostnames if h is not None and _chain_key(sock.protocol, h) == key]
        vhosts.extend(ir.VirtualHost(name=h, domains=(h,), routes=()) for h in sorted(owned) if h not in chain.vhosts)
        if sock.protocol == "TLS":
            vhosts.extend(_misdirected(sock, key, set(chain.vhosts) | set(owned)))
        chains.append(
            ir.FilterChain(
                name=key,
                server_names=chain.server_names,
                certificates=chain.certificates,
                route_config=ir.RouteConfig(rc_name, tuple(vhosts)),
                client_ca_pem=chain.client_validation[0] if chain.client_validation else "",
                client_cert_optional=bool(chain.client_validation and chain.client_validation[1]),
            )
        )
    return ir.Listener(
        name=f"listener/{base}",
        address=sock.address,
        port=sock.port,
        protocol="TLS" if sock.protocol == "TLS" else "HTTP",
        filter_chains=tuple(chains),
    )


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
