"""Fixtures for the CSI driver's tests: the driver served on a real unix socket, real loop-device disks named
the way a hypervisor names them, and Nova servers standing in for Kubernetes nodes.

Everything a fixture creates (loop devices, mounts, servers, volumes, snapshots) is removed in its teardown,
also when the test failed half-way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from stackway.openstack.csi.controller import ControllerServicer
from stackway.openstack.csi.host import NodeHost
from stackway.openstack.csi.node import NodeConfig, NodeServicer
from stackway.openstack.csi.proto import csi_pb2 as csi
from stackway.openstack.csi.proto import csi_pb2_grpc as csi_grpc
from stackway.openstack.csi.server import CsiServer
from stackway.openstack.csi.service import IdentityServicer

DRIVER = "cinder.csi.openstack.org"
Mode = csi.VolumeCapability.AccessMode


def mount_cap(mode: int = Mode.SINGLE_NODE_WRITER, fs: str = "", flags: tuple[str, ...] = ()) -> csi.VolumeCapability:
    c = csi.VolumeCapability(access_mode=Mode(mode=mode))
    c.mount.fs_type = fs
    c.mount.mount_flags.extend(flags)
    return c


def block_cap(mode: int = Mode.SINGLE_NODE_WRITER) -> csi.VolumeCapability:
    c = csi.VolumeCapability(access_mode=Mode(mode=mode))
    c.block.SetInParent()
    return c


@dataclass
class Driver:
    """A running driver and a client for each of its services, over its unix socket."""

    server: CsiServer
    channel: grpc.Channel
    identity: csi_grpc.IdentityStub
    controller: csi_grpc.ControllerStub
    node: csi_grpc.NodeStub
    endpoint: str


@contextlib.contextmanager
def serve(
    *, controller: ControllerServicer | None = None, node: NodeServicer | None = None, topology: bool = True
) -> Iterator[Driver]:
    """Serve the given servicers on a fresh socket (short path: unix sockets hold about 100 bytes)."""
    sock_dir = tempfile.mkdtemp(prefix="csi-", dir="/tmp")
    endpoint = f"unix://{sock_dir}/csi.sock"
    identity = IdentityServicer(DRIVER, controller=controller is not None, topology=topology)
    server = CsiServer(endpoint, identity, controller, node, workers=32)
    server.start()
    channel = grpc.insecure_channel(endpoint)
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield Driver(
            server,
            channel,
            csi_grpc.IdentityStub(channel),  # type: ignore[no-untyped-call]
            csi_grpc.ControllerStub(channel),  # type: ignore[no-untyped-call]
            csi_grpc.NodeStub(channel),  # type: ignore[no-untyped-call]
            endpoint,
        )
    finally:
        channel.close()
        server.stop(grace=1)
        shutil.rmtree(sock_dir, ignore_errors=True)


def rpc_error(call: Callable[..., Any], request: Any, timeout: float = 60) -> grpc.RpcError:
    """The error an RPC must end with; fails the test if it succeeds."""
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=timeout)
    return info.value


def code_of(call: Callable[..., Any], request: Any, timeout: float = 60) -> grpc.StatusCode:
    err = rpc_error(call, request, timeout)
    return err.code()  # type: ignore[attr-defined,no-any-return]


# ---- loop devices as Cinder disks ------------------------------------------------------------------------------
def require_block_devices() -> None:
    if os.geteuid() != 0:
        pytest.skip("loop devices and mounts need root")
    for tool in ("losetup", "blkid", "mkfs.ext4", "mount"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


@dataclass
class Disk:
    """A loop device presented as the disk of Cinder volume ``volume_id``."""

    volume_id: str
    device: str
    backing: Path
    link: Path

    def grow(self, size: int) -> None:
        """What an online extend looks like from inside the guest: the disk simply becomes larger."""
        os.truncate(self.backing, size)
        subprocess.run(["losetup", "-c", self.device], check=True)


@dataclass
class Disks:
    root: Path
    by_id: Path
    made: list[Disk] = field(default_factory=list)

    def add(self, size: int = 512 << 20, volume_id: str | None = None, name: str = "virtio-{short}") -> Disk:
        """A sparse file on a new loop device, linked as by-id/virtio-<first 20 characters of the ID>."""
        vid = volume_id or str(uuid.uuid4())
        backing = self.root / f"{vid}.img"
        backing.touch()
        os.truncate(backing, size)
        device = subprocess.run(
            ["losetup", "--find", "--show", str(backing)], check=True, capture_output=True, text=True
        ).stdout.strip()
        link = self.by_id / name.format(short=vid[:20], id=vid)
        link.symlink_to(device)
        disk = Disk(vid, device, backing, link)
        self.made.append(disk)
        return disk

    def remove(self, disk: Disk) -> None:
        """Unplug: the by-id name disappears as it does after a detach."""
        disk.link.unlink(missing_ok=True)


def unmount_under(root: Path) -> None:
    """Unmount everything at or below ``root``, deepest first (bind mounts before what they bind)."""
    for _ in range(20):
        points = [m.mountpoint for m in NodeHost().mounts() if m.mountpoint.startswith(str(root))]
        if not points:
            return
        for point in sorted(set(points), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)


@pytest.fixture
def disks() -> Iterator[Disks]:
    require_block_devices()
    root = Path(tempfile.mkdtemp(prefix="csi-disks-", dir="/tmp"))
    by_id = root / "by-id"
    by_id.mkdir()
    made = Disks(root, by_id)
    try:
        yield made
    finally:
        unmount_under(root)
        for disk in made.made:
            unmount_under(Path(disk.device))
            subprocess.run(["losetup", "-d", disk.device], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def workdir() -> Iterator[Path]:
    """Staging and target paths for node RPCs; anything left mounted there is unmounted afterwards."""
    root = Path(tempfile.mkdtemp(prefix="csi-paths-", dir="/tmp"))
    try:
        yield root
    finally:
        unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def node_driver(disks: Disks) -> Iterator[Driver]:
    """The node service alone, looking for disks in the ``disks`` fixture's by-id directory."""
    config = NodeConfig(node_id="node-under-test", availability_zone="nova", max_volumes_per_node=16, device_wait=1.0)
    with serve(node=NodeServicer(config, NodeHost(by_id_dir=disks.by_id))) as driver:
        yield driver


# ---- the real test bed: Cinder and Nova ------------------------------------------------------------------------
@dataclass
class Cleanup:
    """IDs of what a test made in OpenStack; removed afterwards whatever state the test left them in."""

    conn: Any
    volumes: set[str] = field(default_factory=set)
    snapshots: set[str] = field(default_factory=set)

    def run(self) -> None:
        from stackway.openstack.clients.errors import OpenStackError

        bs, compute = self.conn.block_storage, self.conn.compute
        for snap_id in self.snapshots:
            with contextlib.suppress(Exception):
                bs.delete_snapshot(snap_id, ignore_missing=True)
        for snap_id in self.snapshots:
            with contextlib.suppress(Exception):
                bs.wait_for_delete(bs.get_snapshot(snap_id), interval=0.5, wait=60)
        for vol_id in self.volumes:
            try:
                vol = bs.get_volume(vol_id)
            except Exception:
                continue
            for attachment in vol.attachments or []:
                with contextlib.suppress(Exception):
                    compute.delete_volume_attachment(attachment["server_id"], vol_id)
            with contextlib.suppress(Exception, OpenStackError):
                bs.wait_for_status(vol, status="available", failures=["error"], interval=0.5, wait=60)
            with contextlib.suppress(Exception):
                bs.delete_volume(vol_id, ignore_missing=True, force=True)


@pytest.fixture(scope="session")
def admin_conn(testbed: Any) -> Any:
    testbed.require("cinder", "nova")
    return testbed.connect(testbed.admin_cloud)


@pytest.fixture(scope="session")
def nodes(testbed: Any, admin_conn: Any) -> Iterator[list[str]]:
    """Two Nova servers (fake virt driver, no network, AZ nova) standing in for Kubernetes nodes."""
    compute = admin_conn.compute
    flavor = compute.find_flavor(testbed.flavor, ignore_missing=False)
    image = admin_conn.image.find_image(testbed.image, ignore_missing=False)
    tag = uuid.uuid4().hex[:8]
    servers = [
        compute.create_server(
            name=f"csi-node-{tag}-{i}",
            flavor_id=flavor.id,
            image_id=image.id,
            networks="none",
            availability_zone="nova",
        )
        for i in range(2)
    ]
    try:
        for server in servers:
            compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"], interval=0.5, wait=120)
        yield [s.id for s in servers]
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                compute.delete_server(server, ignore_missing=True)
        for server in servers:
            with contextlib.suppress(Exception):
                compute.wait_for_delete(server, interval=0.5, wait=120)


def make_controller(testbed: Any, **config: Any) -> ControllerServicer:
    """The controller as deployed: its own connection from clouds.yaml (the application credential)."""
    from stackway.openstack.clients.blockstorage import CinderClient
    from stackway.openstack.clients.compute import NovaClient
    from stackway.openstack.clients.connection import connect
    from stackway.openstack.csi.controller import ControllerConfig

    conn = connect(testbed.appcred_cloud)
    return ControllerServicer(CinderClient(conn), NovaClient(conn), ControllerConfig(**config))


@pytest.fixture(scope="session")
def cloud_driver(testbed: Any) -> Iterator[Driver]:
    """Identity + Controller against the test bed's Cinder and Nova, on a unix socket."""
    with serve(controller=make_controller(testbed)) as driver:
        yield driver


@pytest.fixture
def cleanup(admin_conn: Any) -> Iterator[Cleanup]:
    made = Cleanup(admin_conn)
    try:
        yield made
    finally:
        made.run()
