"""IR → Snapshot. Pure and deterministic: the same IR always yields byte-identical resources.

Incremental by identity: `build_incremental` takes what the previous build kept (`BuildMemo`) and reuses
the work done for IR objects that are the very same objects (the translator hands unchanged routes over
as is). An edit of one route among 10,000 then builds and checks one route and joins the others' stored
bytes into the RouteConfiguration, instead of rebuilding and re-serialising all of them: the
RouteConfiguration is assembled as protobuf wire bytes, which is exactly what deterministic serialisation
of the same message gives (fields in number order), and parsed once into the message the snapshot holds.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from stackway.ir import model as ir
from stackway.xds.clusters import build_cluster, build_load_assignment
from stackway.xds.listeners import build_listener, listener_signature
from stackway.xds.routes import ROUTE_CONFIG_TRAILER, build_route, virtual_host_head
from stackway.xds.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE, Snapshot, resource_version
from stackway.xds.validate import listener_problems, route_references, route_sound, validate_ir


@dataclass(frozen=True)
class _Route:
    route: ir.Route
    data: bytes  # the serialised envoy Route as a VirtualHost.routes field (tag, length, bytes)
    sound: bool
    references: frozenset[str]


@dataclass(frozen=True)
class _VirtualHost:
    vhost: ir.VirtualHost
    head: bytes  # the serialised envoy VirtualHost without its routes
    parts: tuple[bytes, ...]  # each route's field bytes, in the order of vhost.routes
    data: bytes  # head and parts joined: the serialised envoy VirtualHost
    #: By id() of the IR route (each entry keeps its route alive, so ids stay unique): every route of
    #: `vhost`, and perhaps a few it no longer has.
    routes: Mapping[int, _Route]
    unsound: int  # routes (counted by position) with a problem of their own
    references: Mapping[str, int]  # cluster name → routes (by position) referring to it


@dataclass(frozen=True)
class _Built:
    """One built resource and its version, with the IR it came from (or a signature of it)."""

    source: Any
    message: Message
    version: str
    extra: Message | None = None  # a cluster's load assignment
    extra_version: str = ""
    encoded: bytes | None = None  # the message serialised, where the build assembled it as bytes


@dataclass(frozen=True)
class BuildMemo:
    """What a build keeps for the next one. Immutable: a failed build leaves the previous memo usable."""

    vhosts: Mapping[tuple[str, str], _VirtualHost] = field(default_factory=dict)
    route_configs: Mapping[str, _Built] = field(default_factory=dict)
    listeners: Mapping[str, _Built] = field(default_factory=dict)
    clusters: Mapping[str, _Built] = field(default_factory=dict)


def build_snapshot(config: ir.IR) -> Snapshot:
    """Raises `InvalidConfig` when the IR would be rejected by Envoy; the caller keeps the last snapshot."""
    return build_incremental(config, None)[0]


def build_incremental(config: ir.IR, previous: BuildMemo | None) -> tuple[Snapshot, BuildMemo]:
    """`build_snapshot`, reusing `previous` for IR objects it has seen; also returns the memo for the next."""
    old = previous or BuildMemo()
    cluster_names = {c.name for c in config.clusters}
    vhosts: dict[tuple[str, str], _VirtualHost] = {}
    sound = not listener_problems(config, cluster_names, routes=False)
    for listener in config.listeners:
        for chain in listener.filter_chains:
            rcfg = chain.route_config
            for vh in rcfg.virtual_hosts if rcfg is not None else ():
                key = (rcfg.name, vh.name)  # type: ignore[union-attr]
                built = vhosts[key] = _virtual_host(vh, old.vhosts.get(key))
                sound = sound and not built.unsound and built.references.keys() <= cluster_names
    if not sound:
        validate_ir(config)  # raises, with every problem spelled out
    versions: dict[str, dict[str, str]] = {LISTENER: {}, ROUTE: {}, CLUSTER: {}, ENDPOINT: {}}
    resources: dict[str, dict[str, Message]] = {LISTENER: {}, ROUTE: {}, CLUSTER: {}, ENDPOINT: {}}
    listeners: dict[str, _Built] = {}
    route_configs: dict[str, _Built] = {}
    for listener in sorted(config.listeners, key=lambda lst: lst.name):
        signature = listener_signature(listener)
        done = old.listeners.get(listener.name)
        if done is None or done.source != signature:
            msg = build_listener(listener)
            done = _Built(signature, msg, resource_version(msg))
        listeners[listener.name] = done
        _put(resources, versions, LISTENER, listener.name, done.message, done.version)
        for chain in listener.filter_chains:
            if chain.route_config is not None:
                done = route_configs[chain.route_config.name] = _route_config(
                    chain.route_config, vhosts, old.route_configs.get(chain.route_config.name)
                )
                _put(resources, versions, ROUTE, chain.route_config.name, done.message, done.version)
    clusters: dict[str, _Built] = {}
    for cluster in sorted(config.clusters, key=lambda c: c.name):
        done = old.clusters.get(cluster.name)
        if done is None or not (done.source is cluster or done.source == cluster):
            msg, cla = build_cluster(cluster), build_load_assignment(cluster)
            done = _Built(cluster, msg, resource_version(msg), cla, resource_version(cla))
        clusters[cluster.name] = done
        assert done.extra is not None
        _put(resources, versions, CLUSTER, cluster.name, done.message, done.version)
        _put(resources, versions, ENDPOINT, cluster.name, done.extra, done.extra_version)
    encoded = {ROUTE: {name: done.encoded for name, done in route_configs.items() if done.encoded is not None}}
    snapshot = Snapshot(resources=resources, known_versions=versions, encoded=encoded)
    return snapshot, BuildMemo(vhosts, route_configs, listeners, clusters)


def _put(
    resources: dict[str, dict[str, Message]],
    versions: dict[str, dict[str, str]],
    type_url: str,
    name: str,
    msg: Message,
    version: str,
) -> None:
    resources[type_url][name] = msg
    versions[type_url][name] = version


def _virtual_host(vh: ir.VirtualHost, old: _VirtualHost | None) -> _VirtualHost:
    """The built virtual host, from `old` where it can be: unchanged routes at the start and at the end
    (found by identity, in C loops) keep their bytes, and only those in between are looked at."""
    if old is not None and old.vhost is vh:
        return old
    head = virtual_host_head(vh).SerializeToString(deterministic=True)
    if old is None:
        return _virtual_host_afresh(vh, head, {})
    before, now = old.vhost.routes, vh.routes
    shortest = min(len(before), len(now))
    same = list(map(operator.is_, before, now))
    start = same.index(False) if False in same else shortest
    same = list(map(operator.is_, reversed(before), reversed(now)))[: shortest - start]
    end = same.index(False) if False in same else len(same)
    gone, came = before[start : len(before) - end], now[start : len(now) - end]
    if len(gone) + len(came) > max(64, len(now) // 4):
        return _virtual_host_afresh(vh, head, old.routes)
    routes = dict(old.routes)
    unsound, references = old.unsound, dict(old.references)
    for route in gone:
        done = old.routes[id(route)]
        unsound -= not done.sound
        _count(references, done.references, -1)
    middle: list[bytes] = []
    for route in came:
        found = routes.get(id(route))
        if found is None or found.route is not route:
            found = routes[id(route)] = _route(route)
        middle.append(found.data)
        unsound += not found.sound
        _count(references, found.references, 1)
    parts = old.parts[:start] + tuple(middle) + old.parts[len(before) - end :]
    if len(routes) > 2 * len(now) + 64:  # forget routes long gone
        routes = {id(route): routes[id(route)] for route in now}
    return _VirtualHost(vh, head, parts, b"".join((head, *parts)), routes, unsound, references)


def _virtual_host_afresh(vh: ir.VirtualHost, head: bytes, known: Mapping[int, _Route]) -> _VirtualHost:
    routes: dict[int, _Route] = {}
    parts: list[bytes] = []
    unsound = 0
    references: dict[str, int] = {}
    for route in vh.routes:  # the one loop over every route of a much changed virtual host: keep it lean
        done = known.get(id(route))
        if done is None or done.route is not route:
            done = routes.get(id(route)) or _route(route)
        routes[id(route)] = done
        parts.append(done.data)
        if not done.sound:
            unsound += 1
        if done.references:
            _count(references, done.references, 1)
    return _VirtualHost(vh, head, tuple(parts), b"".join((head, *parts)), routes, unsound, references)


def _count(counts: dict[str, int], names: frozenset[str], sign: int) -> None:
    for name in names:
        left = counts.get(name, 0) + sign
        if left:
            counts[name] = left
        else:
            del counts[name]


def _route(route: ir.Route) -> _Route:
    data = build_route(route).SerializeToString(deterministic=True)
    return _Route(route, _field(3, data), route_sound(route), route_references(route))  # VirtualHost.routes


def _route_config(config: ir.RouteConfig, vhosts: Mapping[tuple[str, str], _VirtualHost], old: _Built | None) -> _Built:
    built = tuple(vhosts[(config.name, vh.name)] for vh in config.virtual_hosts)
    if (
        old is not None
        and len(old.source) == len(built)
        and all(a is b for a, b in zip(old.source, built, strict=True))
    ):
        return old
    data = b"".join(
        [
            route_pb2.RouteConfiguration(name=config.name).SerializeToString(deterministic=True),
            *(_field(2, vh.data) for vh in built),  # RouteConfiguration.virtual_hosts
            ROUTE_CONFIG_TRAILER,
        ]
    )
    msg = route_pb2.RouteConfiguration.FromString(data)
    return _Built(built, msg, hashlib.sha256(data).hexdigest()[:16], encoded=data)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field: tag, length, payload."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def snapshot_as_data(snapshot: Snapshot) -> dict[str, dict[str, Any]]:
    """Plain dicts by short type name and resource name, as `translate` prints them and goldens store them."""
    return {
        type_url.rsplit(".", 1)[-1]: {
            name: json.loads(json_format.MessageToJson(msg, preserving_proto_field_name=True, sort_keys=True))
            for name, msg in sorted(by_name.items())
        }
        for type_url, by_name in sorted(snapshot.resources.items())
    }
