"""IR → Snapshot. Pure and deterministic: the same IR always yields byte-identical resources."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from stackway.ir import model as ir
from stackway.xds.clusters import build_cluster, build_load_assignment
from stackway.xds.listeners import build_listener
from stackway.xds.routes import build_route_config
from stackway.xds.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE, Snapshot
from stackway.xds.validate import validate_ir


def build_resources(config: ir.IR) -> dict[str, dict[str, Message]]:
    validate_ir(config)
    listeners: dict[str, Message] = {}
    routes: dict[str, Message] = {}
    for listener in sorted(config.listeners, key=lambda lst: lst.name):
        listeners[listener.name] = build_listener(listener)
        for chain in listener.filter_chains:
            if chain.route_config is not None:
                routes[chain.route_config.name] = build_route_config(chain.route_config)
    clusters: dict[str, Message] = {}
    endpoints: dict[str, Message] = {}
    for cluster in sorted(config.clusters, key=lambda c: c.name):
        clusters[cluster.name] = build_cluster(cluster)
        endpoints[cluster.name] = build_load_assignment(cluster)
    return {LISTENER: listeners, ROUTE: routes, CLUSTER: clusters, ENDPOINT: endpoints}


def build_snapshot(config: ir.IR) -> Snapshot:
    """Raises `InvalidConfig` when the IR would be rejected by Envoy; the caller keeps the last snapshot."""
    return Snapshot(resources=build_resources(config))


def snapshot_as_data(snapshot: Snapshot) -> dict[str, dict[str, Any]]:
    """Plain dicts by short type name and resource name, as `translate` prints them and goldens store them."""
    return {
        type_url.rsplit(".", 1)[-1]: {
            name: json.loads(json_format.MessageToJson(msg, preserving_proto_field_name=True, sort_keys=True))
            for name, msg in sorted(by_name.items())
        }
        for type_url, by_name in sorted(snapshot.resources.items())
    }
