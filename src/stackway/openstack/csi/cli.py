"""``stackway csi``: the Cinder CSI driver as one command, in controller, node or all-in-one mode."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

DEFAULT_DRIVER_NAME = "cinder.csi.openstack.org"
MODES = ("controller", "node", "all")


def csi(
    endpoint: Annotated[
        str,
        typer.Option(envvar="CSI_ENDPOINT", help="Unix socket to serve on, as the CO dials it: unix:///path/csi.sock."),
    ] = "unix:///csi/csi.sock",
    mode: Annotated[
        str,
        typer.Option(
            help="controller: Identity + Controller (one Deployment, needs --os-cloud). node: Identity + Node "
            "(a DaemonSet pod on every node, needs no credentials). all: both, for a single machine or tests."
        ),
    ] = "all",
    os_cloud: Annotated[
        str | None,
        typer.Option(envvar="OS_CLOUD", help="clouds.yaml entry the controller uses (OS_CLIENT_CONFIG_FILE finds it)."),
    ] = None,
    driver_name: Annotated[
        str,
        typer.Option(help="Name the driver reports; keep the default to take over cloud-provider-openstack's PVs."),
    ] = DEFAULT_DRIVER_NAME,
    node_id: Annotated[
        str | None,
        typer.Option(envvar="NODE_ID", help="This node's Nova server ID (default: from the metadata service)."),
    ] = None,
    availability_zone: Annotated[
        str | None,
        typer.Option(help="This node's availability zone, its topology (default: from the metadata service)."),
    ] = None,
    max_volumes_per_node: Annotated[
        int,
        typer.Option(
            help="Node mode: volumes the CO may attach to this node. Controller mode: refuse attaching beyond it "
            "(0 leaves it to the CO)."
        ),
    ] = 256,
    topology: Annotated[
        bool,
        typer.Option(
            "--topology/--no-topology",
            help="Report zones as topology.cinder.csi.openstack.org/zone (turn off when Cinder and Nova zones differ).",
        ),
    ] = True,
    by_id_dir: Annotated[
        Path, typer.Option(help="Where the node looks for disks by serial (virtio-<volume id prefix>).")
    ] = Path("/dev/disk/by-id"),
    metrics: Annotated[
        str | None, typer.Option(help="HOST:PORT to serve Prometheus metrics on (CSI RPCs, OpenStack API calls).")
    ] = None,
    workers: Annotated[int, typer.Option(help="Concurrent RPCs served.")] = 16,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve the Cinder CSI driver (CSI spec 1.12) on a unix socket until SIGTERM.

    Volume IDs are Cinder volume IDs; requested sizes round up to whole GiB.
    ControllerPublish attaches the volume to the node's Nova server and waits until it is in-use.
    The node finds the disk by its serial under --by-id-dir, formats it if blank (ext4 or xfs), mounts it.

    StorageClass parameters: type (Cinder volume type), availability (Cinder zone).
    Multi-node access needs a volume type with multiattach='<is> True' (block volumes for writers).
    VolumeSnapshotClass parameters: force-create ('true' snapshots in-use volumes).

    Controller: stackway csi --mode controller --os-cloud mycloud --endpoint unix:///csi/csi.sock

    Node: stackway csi --mode node --endpoint unix:///csi/csi.sock (ID and zone from the metadata service)

    `stackway manifests --csi` prints the Kubernetes objects that run both with the usual CSI sidecars.
    """
    if mode not in MODES:
        raise typer.BadParameter(f"one of {', '.join(MODES)}", param_hint="--mode")
    from stackway.openstack.csi.server import CsiServer, socket_path
    from stackway.openstack.csi.service import IdentityServicer
    from stackway.service import configure_logging

    configure_logging(log_level)
    try:
        socket_path(endpoint)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--endpoint") from exc
    controller = _controller(os_cloud, driver_name, topology, max_volumes_per_node) if mode != "node" else None
    node = (
        _node(node_id, availability_zone, topology, max_volumes_per_node, by_id_dir) if mode != "controller" else None
    )
    if metrics:
        _serve_metrics(metrics)
    identity = IdentityServicer(driver_name, controller=controller is not None, topology=topology)
    server = CsiServer(endpoint, identity, controller, node, workers=workers)
    server.start()
    typer.echo(f"stackway csi: {driver_name} ({mode}) serving on {server.path}", err=True)
    stopping = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.wait()


def _controller(os_cloud: str | None, driver_name: str, topology: bool, max_volumes: int) -> Any:
    from stackway.openstack.clients.blockstorage import CinderClient
    from stackway.openstack.clients.compute import NovaClient
    from stackway.openstack.clients.connection import connect
    from stackway.openstack.csi.controller import ControllerConfig, ControllerServicer

    if not os_cloud:
        raise typer.BadParameter(
            "the controller needs credentials: --os-cloud NAME or OS_CLOUD", param_hint="--os-cloud"
        )
    conn = connect(os_cloud)
    limit = max_volumes if max_volumes > 0 else 0
    config = ControllerConfig(driver_name=driver_name, topology=topology, max_volumes_per_node=limit)
    return ControllerServicer(CinderClient(conn), NovaClient(conn), config)


def _node(node_id: str | None, zone: str | None, topology: bool, max_volumes: int, by_id_dir: Path) -> Any:
    from stackway.openstack.csi.host import NodeHost
    from stackway.openstack.csi.node import NodeConfig, NodeServicer
    from stackway.openstack.csi.server import node_identity_from_metadata

    if not node_id or zone is None:
        try:
            found = node_identity_from_metadata()
        except OSError as exc:
            raise typer.BadParameter(
                f"the metadata service did not answer ({exc}): give --node-id (the Nova server ID) and "
                "--availability-zone",
                param_hint="--node-id",
            ) from exc
        node_id = node_id or found.server_id
        zone = found.availability_zone if zone is None else zone
    config = NodeConfig(
        node_id=node_id, availability_zone=zone if topology else "", max_volumes_per_node=max(max_volumes, 0)
    )
    return NodeServicer(config, NodeHost(by_id_dir=by_id_dir))


def _serve_metrics(address: str) -> None:
    from prometheus_client import start_http_server

    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise typer.BadParameter(f"expected HOST:PORT, got {address!r}", param_hint="--metrics")
    start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0")
