"""Placed routes → sockets, filter chains and virtual hosts: the last step of a translation.

Several Gateway listeners (even of several Gateways) on one address and port share a socket; on a socket,
routes land in the virtual host of their hostname, in precedence order. Each virtual host's routes are kept
between translations in a `Book`, sorted, so that when a few routes change the assembly moves those few
entries instead of placing and sorting every route again; the IR VirtualHost of a book nothing touched is
the very object of the previous translation, which lets the xDS build skip it as well.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from stackway.ir import model as ir
from stackway.translate.context import Context
from stackway.translate.gatewayapi.backends import presenting_client_certificate
from stackway.translate.gatewayapi.gateways import GatewayView, ListenerView, family
from stackway.translate.gatewayapi.routes import Outcome, RouteTranslator
from stackway.translate.hostnames import covers

#: A virtual host: (address, port, filter chain key, hostname).
VhostKey = tuple[str, int, str, str]
#: A route's place in its virtual host: (precedence order, route name).
EntryKey = tuple[tuple[Any, ...], str]
Entry = tuple[VhostKey, EntryKey, ir.Route]


@dataclass
class _Chain:
    server_names: tuple[str, ...]
    certificates: tuple[ir.Certificate, ...]
    #: True for TLS listeners (TLSRoute): the stream is proxied, not parsed as HTTP.
    tcp: bool = False
    client_validation: tuple[str, bool] | None = None
    tls_parameters: ir.TLSParameters | None = None


@dataclass
class _Socket:
    address: str
    port: int
    protocol: str
    chains: dict[str, _Chain] = field(default_factory=dict)
    #: Hostnames of the listeners sharing this socket (None: a listener without hostname).
    hostnames: set[str | None] = field(default_factory=set)
    _owners: dict[str, str | None] = field(default_factory=dict)

    def owner(self, hostname: str) -> str | None:
        """The hostname of the listener that owns requests for `hostname`: the most specific one matching.

        Listener isolation: a request belongs to exactly one listener, and only routes attached to that
        listener may answer it, even where another listener's wildcard would also match.
        """
        if hostname not in self._owners:
            matching = [
                h for h in self.hostnames if h is None or h == hostname or (h.startswith("*.") and covers(h, hostname))
            ]
            self._owners[hostname] = max(matching, key=_specificity, default=None)
        return self._owners[hostname]


class Book:
    """One virtual host's routes, sorted by precedence, each distinct entry once with how often it was placed
    (a route attached twice to one listener lands twice). Changed only while a translation builds it."""

    __slots__ = ("_vhost", "clashes", "counts", "keys", "names", "references", "routes")

    def __init__(self) -> None:
        self.keys: list[EntryKey] = []
        self.routes: list[ir.Route] = []  # same index as keys
        self.counts: dict[EntryKey, int] = {}
        #: How many entries carry each route name; `clashes` counts names carried more than once (only the
        #: first of those is served, as in a full sort-and-deduplicate).
        self.names: dict[str, int] = {}
        self.clashes = 0
        self.references: dict[str, int] = {}  # cluster name → entries referring to it
        self._vhost: ir.VirtualHost | None = None

    @classmethod
    def of(cls, entries: list[tuple[EntryKey, ir.Route]]) -> Book:
        book = cls()
        first: dict[EntryKey, ir.Route] = {}
        for key, route in entries:
            book.counts[key] = book.counts.get(key, 0) + 1
            first.setdefault(key, route)
        book.keys = sorted(first)
        book.routes = [first[key] for key in book.keys]
        for route in book.routes:
            book._note(route, 1)
        return book

    def copy(self) -> Book:
        out = Book()
        out.keys, out.routes = list(self.keys), list(self.routes)
        out.counts, out.names, out.references = dict(self.counts), dict(self.names), dict(self.references)
        out.clashes = self.clashes
        return out

    def add(self, key: EntryKey, route: ir.Route) -> None:
        count = self.counts.get(key, 0)
        self.counts[key] = count + 1
        if count:
            return
        i = bisect.bisect_left(self.keys, key)
        self.keys.insert(i, key)
        self.routes.insert(i, route)
        self._note(route, 1)

    def remove(self, key: EntryKey) -> None:
        count = self.counts[key]
        if count > 1:
            self.counts[key] = count - 1
            return
        del self.counts[key]
        i = bisect.bisect_left(self.keys, key)
        route = self.routes[i]
        del self.keys[i], self.routes[i]
        self._note(route, -1)

    def _note(self, route: ir.Route, sign: int) -> None:
        self._vhost = None
        named = self.names.get(route.name, 0) + sign
        if named:
            self.names[route.name] = named
        else:
            del self.names[route.name]
        if (sign > 0 and named == 2) or (sign < 0 and named == 1):
            self.clashes += sign
        for name in _references(route):
            referred = self.references.get(name, 0) + sign
            if referred:
                self.references[name] = referred
            else:
                del self.references[name]

    def __bool__(self) -> bool:
        return bool(self.keys)

    def first(self) -> ir.Route:
        return self.routes[0]

    def virtual_host(self, hostname: str) -> ir.VirtualHost:
        if self._vhost is None:
            routes = tuple(self.routes) if not self.clashes else _first_of_each_name(self.routes)
            self._vhost = ir.VirtualHost(name=hostname, domains=(hostname,), routes=routes)
        return self._vhost

    def used(self) -> set[str]:
        """Clusters the served routes refer to."""
        if not self.clashes:
            return set(self.references)
        return {name for route in _first_of_each_name(self.routes) for name in _references(route)}


@dataclass(frozen=True)
class AssemblyMemo:
    """What the assembly keeps for the next translation (books are copied before any change)."""

    books: Mapping[VhostKey, Book]
    #: Entries from Ingress: Ingress is translated anew each time and its entries compared with these.
    ingress: tuple[Entry, ...]
    #: Virtual hosts without routes of their own (empty, 421), reused while equal.
    fixed: Mapping[tuple[str, str], ir.VirtualHost]


def assemble(
    ctx: Context, views: list[GatewayView], routes: RouteTranslator, previous: AssemblyMemo | None
) -> tuple[tuple[ir.Listener, ...], set[str], AssemblyMemo]:
    """Listeners for every socket, the names of the clusters they use, and the memo for the next time."""
    sockets = _sockets(ctx, views)
    ingress = tuple(
        entry
        for p in routes.placed
        for entry in _entries(sockets, routes.clusters, p.listener, p.hostname, p.order, p.route, redirect=True)
    )
    if previous is None or routes.changes.full:
        grouped: dict[VhostKey, list[tuple[EntryKey, ir.Route]]] = {}
        for outcome in routes.outcomes():
            for vkey, ekey, route in _outcome_entries(sockets, routes, outcome, redirect=True):
                grouped.setdefault(vkey, []).append((ekey, route))
        for vkey, ekey, route in ingress:
            grouped.setdefault(vkey, []).append((ekey, route))
        books = {vkey: Book.of(entries) for vkey, entries in grouped.items()}
    else:
        books = dict(previous.books)
        touched: dict[VhostKey, Book] = {}

        def book(vkey: VhostKey) -> Book:
            found = touched.get(vkey)
            if found is None:
                old = books.get(vkey)
                found = touched[vkey] = old.copy() if old is not None else Book()
            return found

        for old, new in routes.changes.pairs:
            if old is not None:
                for vkey, ekey, _ in _outcome_entries(sockets, routes, old, redirect=False):
                    book(vkey).remove(ekey)
            if new is not None:
                for vkey, ekey, route in _outcome_entries(sockets, routes, new, redirect=True):
                    book(vkey).add(ekey, route)
        if ingress == previous.ingress:
            ingress = previous.ingress  # the very objects the books hold
        else:
            for vkey, ekey, _ in previous.ingress:
                book(vkey).remove(ekey)
            for vkey, ekey, route in ingress:
                book(vkey).add(ekey, route)
        for vkey, changed in touched.items():
            if changed:
                books[vkey] = changed
            else:
                books.pop(vkey, None)
    fixed: dict[tuple[str, str], ir.VirtualHost] = {}
    old_fixed = previous.fixed if previous is not None else {}
    used: set[str] = set()
    by_chain: dict[tuple[str, int, str], list[str]] = {}
    for address, port, chain, hostname in books:
        by_chain.setdefault((address, port, chain), []).append(hostname)
    listeners = tuple(_listener(sock, books, by_chain, used, fixed, old_fixed) for _, sock in sorted(sockets.items()))
    return listeners, used, AssemblyMemo(books, ingress, fixed)


def _sockets(ctx: Context, views: list[GatewayView]) -> dict[tuple[str, int], _Socket]:
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
                key = chain_key(sock.protocol, lv.spec.hostname)
                if key not in sock.chains:
                    names = (lv.spec.hostname,) if sock.protocol == "TLS" and lv.spec.hostname else ()
                    sock.chains[key] = _Chain(
                        names,
                        lv.certificates,
                        tcp=lv.spec.protocol == "TLS",
                        client_validation=lv.client_validation,
                        tls_parameters=lv.tls_parameters,
                    )
    return sockets


def _outcome_entries(
    sockets: Mapping[tuple[str, int], _Socket], routes: RouteTranslator, outcome: Outcome, *, redirect: bool
) -> Iterator[Entry]:
    for p in outcome.placed:
        listener = routes.listeners[p.listener]
        yield from _entries(sockets, routes.clusters, listener, p.hostname, p.order, p.route, redirect=redirect)


def _entries(
    sockets: Mapping[tuple[str, int], _Socket],
    clusters: dict[str, ir.Cluster],
    listener: ListenerView,
    hostname: str,
    order: tuple[Any, ...],
    route: ir.Route,
    *,
    redirect: bool,
) -> Iterator[Entry]:
    """Where one placed route lands: on each address of its Gateway, if its listener owns the hostname
    there. `redirect=False` spares building the served route when only the entry's place is wanted."""
    view = listener.gateway
    if view.address_problem or not listener.serving:
        return
    if redirect:
        # The Gateway's backend client certificate: its TLS backends are reached through per-Gateway copies
        # of their clusters (added to `clusters`). The entry's key does not change, only the served route.
        route = presenting_client_certificate(route, view, clusters)
    for address in view.addresses:
        sock = sockets[(address, listener.spec.port)]
        if sock.owner(hostname) != listener.spec.hostname:
            continue  # a more specific listener on this socket owns these requests
        vkey = (address, sock.port, chain_key(sock.protocol, listener.spec.hostname), hostname)
        yield vkey, (order, route.name), _redirect_port(route, sock) if redirect else route


def chain_key(protocol: str, hostname: str | None) -> str:
    return "*" if protocol == "HTTP" or hostname is None else hostname


def _references(route: ir.Route) -> tuple[str, ...]:
    action = route.action
    if not isinstance(action, ir.Forward):
        return ()
    return (*(wc.cluster for wc in action.clusters), *(m.cluster for m in action.mirrors))


def _first_of_each_name(routes: list[ir.Route]) -> tuple[ir.Route, ...]:
    seen: set[str] = set()
    out: list[ir.Route] = []
    for route in routes:
        if route.name not in seen:
            seen.add(route.name)
            out.append(route)
    return tuple(out)


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


def _tcp_chains(key: str, chain: _Chain, hosted: list[tuple[str, Book]]) -> list[ir.FilterChain]:
    """A TLS listener's routes: one filter chain per SNI hostname, proxied to the oldest route's backends."""
    out: list[ir.FilterChain] = []
    for hostname, book in hosted:
        first = book.first().action
        if not isinstance(first, ir.Forward):
            continue  # no usable backend: without a chain, Envoy closes the connection
        names = () if hostname == "*" else (hostname,)
        out.append(
            ir.FilterChain(
                name=f"{key}/{hostname}",
                server_names=names,
                certificates=chain.certificates,
                tcp=first.clusters,
                tls_parameters=chain.tls_parameters,
            )
        )
    return out


def _listener(
    sock: _Socket,
    books: Mapping[VhostKey, Book],
    by_chain: Mapping[tuple[str, int, str], list[str]],
    used: set[str],
    fixed: dict[tuple[str, str], ir.VirtualHost],
    old_fixed: Mapping[tuple[str, str], ir.VirtualHost],
) -> ir.Listener:
    base = f"{sock.address}/{sock.port}"
    chains: list[ir.FilterChain] = []
    for key, chain in sorted(sock.chains.items()):
        hosted = [
            (hostname, books[(sock.address, sock.port, key, hostname)])
            for hostname in sorted(by_chain.get((sock.address, sock.port, key), ()))
        ]
        if chain.tcp:
            tcp = _tcp_chains(key, chain, hosted)
            used.update(wc.cluster for fc in tcp for wc in fc.tcp)
            chains.extend(tcp)
            continue
        rc_name = f"route/{base}" if sock.protocol == "HTTP" else f"route/{base}/{key}"
        vhosts = [book.virtual_host(hostname) for hostname, book in hosted]
        for _, book in hosted:
            used.update(book.used())
        # A listener hostname without routes still owns its requests: an empty virtual host answers 404
        # instead of letting a wider listener's wildcard answer for it.
        with_routes = {hostname for hostname, _ in hosted}
        owned = [h for h in sock.hostnames if h is not None and chain_key(sock.protocol, h) == key]
        extra = [ir.VirtualHost(name=h, domains=(h,), routes=()) for h in sorted(owned) if h not in with_routes]
        if sock.protocol == "TLS":
            extra.extend(_misdirected(sock, key, with_routes | set(owned)))
        for vh in extra:
            known = old_fixed.get((rc_name, vh.name))
            vhosts.append(fixed.setdefault((rc_name, vh.name), known if known == vh and known is not None else vh))
        chains.append(
            ir.FilterChain(
                name=key,
                server_names=chain.server_names,
                certificates=chain.certificates,
                route_config=ir.RouteConfig(rc_name, tuple(vhosts)),
                client_ca_pem=chain.client_validation[0] if chain.client_validation else "",
                client_cert_optional=bool(chain.client_validation and chain.client_validation[1]),
                tls_parameters=chain.tls_parameters,
            )
        )
    return ir.Listener(
        name=f"listener/{base}",
        address=sock.address,
        port=sock.port,
        protocol="TLS" if sock.protocol == "TLS" else "HTTP",
        filter_chains=tuple(chains),
    )
