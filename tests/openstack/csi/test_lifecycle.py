"""A volume's whole life as Kubernetes drives it, through `stackway csi --mode all` run as a process: create,
attach through Nova, stage and publish on the node, write, grow online, snapshot, and tear down.

The test bed's Nova runs the fake virt driver, which records the attachment but plugs no disk into any
guest; the test plays that one part of the hypervisor: once ControllerPublish reports the volume in-use,
it presents a loop device as by-id/virtio-<serial from the publish context>, and grows it when Cinder has
grown the volume. Everything else (Cinder, Nova, discovery, mkfs, mounts, xfs_growfs) is real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from stackway.openstack.csi.proto import csi_pb2 as csi
from stackway.openstack.csi.proto import csi_pb2_grpc as csi_grpc
from stackway.openstack.csi.rules import GIB, TOPOLOGY_KEY

from .conftest import Cleanup, Disks, Driver, mount_cap
from .test_node import can_resize_ext_online


@pytest.fixture
def cli_driver(testbed: Any, nodes: list[str], disks: Disks) -> Iterator[Driver]:
    """`stackway csi --mode all` as a child process, the node being the first test server."""
    sock_dir = tempfile.mkdtemp(prefix="csi-cli-", dir="/tmp")
    endpoint = f"unix://{sock_dir}/csi.sock"
    args = [
        *(sys.executable, "-m", "stackway.cli", "csi", "--mode", "all", "--endpoint", endpoint),
        *("--os-cloud", testbed.appcred_cloud, "--node-id", nodes[0], "--availability-zone", "nova"),
        *("--by-id-dir", str(disks.by_id), "--max-volumes-per-node", "32", "--log-level", "warning"),
    ]
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(testbed.clouds_yaml)}
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    channel = grpc.insecure_channel(endpoint)
    try:
        try:
            grpc.channel_ready_future(channel).result(timeout=30)
        except grpc.FutureTimeoutError:
            process.kill()
            pytest.fail(f"stackway csi did not start:\n{process.communicate()[0]}")
        yield Driver(
            None,  # type: ignore[arg-type]  # a process, not an in-process server
            channel,
            csi_grpc.IdentityStub(channel),  # type: ignore[no-untyped-call]
            csi_grpc.ControllerStub(channel),  # type: ignore[no-untyped-call]
            csi_grpc.NodeStub(channel),  # type: ignore[no-untyped-call]
            endpoint,
        )
    finally:
        channel.close()
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_volume_lifecycle_through_stackway_csi(
    cli_driver: Driver, disks: Disks, workdir: Path, cleanup: Cleanup, admin_conn: Any, nodes: list[str]
) -> None:
    # xfs grows online with CAP_SYS_ADMIN alone; ext4 also needs CAP_SYS_RESOURCE, which sandboxes may drop.
    fs = "xfs" if shutil.which("mkfs.xfs") else "ext4"
    grow_on_node = fs == "xfs" or can_resize_ext_online()
    controller, node = cli_driver.controller, cli_driver.node
    info = node.NodeGetInfo(csi.NodeGetInfoRequest())
    assert info.node_id == nodes[0]
    assert dict(info.accessible_topology.segments) == {TOPOLOGY_KEY: "nova"}
    cap = mount_cap(fs=fs)

    # Provision in the node's zone, as the external-provisioner does with WaitForFirstConsumer.
    volume = controller.CreateVolume(
        csi.CreateVolumeRequest(
            name=f"pvc-{uuid.uuid4()}",
            capacity_range=csi.CapacityRange(required_bytes=GIB),
            volume_capabilities=[cap],
            parameters={"csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "default"},
            accessibility_requirements=csi.TopologyRequirement(requisite=[info.accessible_topology]),
        ),
        timeout=300,
    ).volume
    cleanup.volumes.add(volume.volume_id)
    vid = volume.volume_id
    assert admin_conn.block_storage.get_volume(vid).metadata["csi.storage.k8s.io/pvc/name"] == "data"

    context = controller.ControllerPublishVolume(
        csi.ControllerPublishVolumeRequest(volume_id=vid, node_id=info.node_id, volume_capability=cap), timeout=300
    ).publish_context
    assert admin_conn.block_storage.get_volume(vid).status == "in-use"
    disk = disks.add(size=GIB, volume_id=vid)  # the hypervisor's part: the disk appears in the guest
    assert disk.link.name == f"virtio-{context['serial']}"

    staging, target = workdir / "staging", workdir / "pods" / "uid" / "volumes" / "data"
    staging.mkdir()
    target.parent.mkdir(parents=True)
    node.NodeStageVolume(
        csi.NodeStageVolumeRequest(
            volume_id=vid, publish_context=context, staging_target_path=str(staging), volume_capability=cap
        ),
        timeout=120,
    )
    node.NodePublishVolume(
        csi.NodePublishVolumeRequest(
            volume_id=vid,
            publish_context=context,
            staging_target_path=str(staging),
            target_path=str(target),
            volume_capability=cap,
        ),
        timeout=60,
    )
    (target / "payload").write_bytes(b"x" * (4 << 20))
    usage = node.NodeGetVolumeStats(csi.NodeGetVolumeStatsRequest(volume_id=vid, volume_path=str(target))).usage
    total_before = next(u.total for u in usage if u.unit == csi.VolumeUsage.BYTES)
    assert total_before < GIB

    grown = controller.ControllerExpandVolume(
        csi.ControllerExpandVolumeRequest(volume_id=vid, capacity_range=csi.CapacityRange(required_bytes=2 * GIB)),
        timeout=300,
    )
    assert grown.node_expansion_required
    assert admin_conn.block_storage.get_volume(vid).size == 2
    disk.grow(2 * GIB)  # the hypervisor passes the new size on
    if grow_on_node:
        expanded = node.NodeExpandVolume(
            csi.NodeExpandVolumeRequest(
                volume_id=vid,
                volume_path=str(target),
                staging_target_path=str(staging),
                capacity_range=csi.CapacityRange(required_bytes=2 * GIB),
            ),
            timeout=120,
        )
        assert expanded.capacity_bytes == 2 * GIB
        usage = node.NodeGetVolumeStats(csi.NodeGetVolumeStatsRequest(volume_id=vid, volume_path=str(target))).usage
        assert next(u.total for u in usage if u.unit == csi.VolumeUsage.BYTES) > total_before + (900 << 20)
        assert (target / "payload").stat().st_size == 4 << 20

    snapshot = controller.CreateSnapshot(
        csi.CreateSnapshotRequest(
            source_volume_id=vid, name=f"snap-{uuid.uuid4()}", parameters={"force-create": "true"}
        ),
        timeout=300,
    ).snapshot
    cleanup.snapshots.add(snapshot.snapshot_id)
    assert snapshot.ready_to_use
    assert snapshot.size_bytes == 2 * GIB

    node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(volume_id=vid, target_path=str(target)), timeout=60)
    node.NodeUnstageVolume(csi.NodeUnstageVolumeRequest(volume_id=vid, staging_target_path=str(staging)), timeout=60)
    disks.remove(disk)  # detached: the disk leaves the guest
    controller.ControllerUnpublishVolume(
        csi.ControllerUnpublishVolumeRequest(volume_id=vid, node_id=info.node_id), timeout=300
    )
    assert admin_conn.block_storage.get_volume(vid).status == "available"
    controller.DeleteSnapshot(csi.DeleteSnapshotRequest(snapshot_id=snapshot.snapshot_id), timeout=120)
    controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid), timeout=120)
    assert admin_conn.block_storage.find_volume(vid) is None
    if not grow_on_node:
        pytest.skip(
            "all steps passed but NodeExpandVolume: mkfs.xfs is missing and online ext4 growth needs "
            "CAP_SYS_RESOURCE (install xfsprogs)"
        )
