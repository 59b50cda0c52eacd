"""Serve the CSI services on a unix socket, and find out which Nova server this node is.

The CO (kubelet, the sidecars) dials ``unix:///...``; the spec allows nothing else. The server is gRPC's
threaded one: CSI calls block on OpenStack and on mkfs, and the sidecars send only a handful at once.
"""

from __future__ import annotations

import json
import os
import urllib.request
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc

from stackway.openstack.csi.controller import ControllerServicer
from stackway.openstack.csi.node import NodeServicer
from stackway.openstack.csi.proto import csi_pb2_grpc as csi_grpc
from stackway.openstack.csi.service import IdentityServicer

#: OpenStack's metadata service, reachable from every server that has not turned it off.
METADATA_URL = "http://169.254.169.254/openstack/latest/meta_data.json"


def socket_path(endpoint: str) -> str:
    """The filesystem path of a ``unix:///abs/path`` endpoint (``unix:/abs/path`` and a bare path too)."""
    if endpoint.startswith("unix://"):
        path = endpoint[len("unix://") :]
    elif endpoint.startswith("unix:"):
        path = endpoint[len("unix:") :]
    elif "://" in endpoint:
        raise ValueError(f"{endpoint!r}: CSI endpoints are unix sockets (unix:///path/csi.sock)")
    else:
        path = endpoint
    if not path.startswith("/"):
        raise ValueError(f"{endpoint!r}: the socket path must be absolute")
    return path


@dataclass(frozen=True)
class NodeIdentity:
    server_id: str
    availability_zone: str


def node_identity_from_metadata(url: str = METADATA_URL, timeout: float = 5.0) -> NodeIdentity:
    """This server's ID and AZ from the metadata service: what Nova calls the node, so the controller can
    attach to it without asking the Kubernetes API."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data = json.load(response)
    return NodeIdentity(server_id=str(data["uuid"]), availability_zone=str(data.get("availability_zone") or ""))


class CsiServer:
    """Identity plus the Controller and/or Node service on one socket."""

    def __init__(
        self,
        endpoint: str,
        identity: IdentityServicer,
        controller: ControllerServicer | None = None,
        node: NodeServicer | None = None,
        workers: int = 16,
    ) -> None:
        self.path = socket_path(endpoint)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="csi"))
        csi_grpc.add_IdentityServicer_to_server(identity, self.server)  # type: ignore[no-untyped-call]
        if controller is not None:
            csi_grpc.add_ControllerServicer_to_server(controller, self.server)  # type: ignore[no-untyped-call]
        if node is not None:
            csi_grpc.add_NodeServicer_to_server(node, self.server)  # type: ignore[no-untyped-call]

    def start(self) -> None:
        # A socket left by a previous run (the pod restarted) would make bind fail: it is ours to replace.
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.server.add_insecure_port(f"unix://{self.path}")
        self.server.start()

    def stop(self, grace: float = 5.0) -> None:
        self.server.stop(grace).wait()
        if os.path.exists(self.path):
            os.unlink(self.path)

    def wait(self) -> None:
        self.server.wait_for_termination()
