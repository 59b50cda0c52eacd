"""The Node service on real block devices: loop devices named by-id/virtio-<serial> as a hypervisor names a
Cinder disk, with the driver's own discovery, blkid, mkfs, mount, bind mount, resize2fs/xfs_growfs and
statvfs running on them, over the CSI unix socket (csi-sanity's Node groups, and the cases it lacks)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

from stackway.openstack.csi.host import NodeHost
from stackway.openstack.csi.proto import csi_pb2 as csi

from .conftest import Disk, Disks, Driver, Mode, block_cap, code_of, mount_cap, rpc_error

NodeRPC = csi.NodeServiceCapability.RPC
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def fs_of(device: str) -> str:
    return subprocess.run(
        ["blkid", "-p", "-s", "TYPE", "-o", "value", device], check=False, capture_output=True, text=True
    ).stdout.strip()


def can_resize_ext_online() -> bool:
    """Online ext4 growth needs CAP_SYS_RESOURCE, which a node plugin's privileged pod has and some
    sandboxes drop (xfs_growfs needs only CAP_SYS_ADMIN)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & (1 << 24))
    return False


def mounted(path: Path) -> bool:
    return NodeHost().mount_at(str(path)) is not None


def stage(driver: Driver, disk: Disk, staging: Path, cap: csi.VolumeCapability | None = None) -> None:
    staging.mkdir(exist_ok=True)
    driver.node.NodeStageVolume(
        csi.NodeStageVolumeRequest(
            volume_id=disk.volume_id,
            staging_target_path=str(staging),
            volume_capability=cap or mount_cap(),
            publish_context={"serial": disk.volume_id[:20]},
        ),
        timeout=120,
    )


def publish(
    driver: Driver,
    disk: Disk,
    staging: Path,
    target: Path,
    *,
    cap: csi.VolumeCapability | None = None,
    readonly: bool = False,
) -> None:
    driver.node.NodePublishVolume(
        csi.NodePublishVolumeRequest(
            volume_id=disk.volume_id,
            staging_target_path=str(staging),
            target_path=str(target),
            volume_capability=cap or mount_cap(),
            readonly=readonly,
        ),
        timeout=60,
    )


def unpublish(driver: Driver, disk: Disk, target: Path) -> None:
    driver.node.NodeUnpublishVolume(
        csi.NodeUnpublishVolumeRequest(volume_id=disk.volume_id, target_path=str(target)), timeout=60
    )


def unstage(driver: Driver, disk: Disk, staging: Path) -> None:
    driver.node.NodeUnstageVolume(
        csi.NodeUnstageVolumeRequest(volume_id=disk.volume_id, staging_target_path=str(staging)), timeout=60
    )


def stats(driver: Driver, disk: Disk, path: Path) -> dict[int, csi.VolumeUsage]:
    response = driver.node.NodeGetVolumeStats(
        csi.NodeGetVolumeStatsRequest(volume_id=disk.volume_id, volume_path=str(path)), timeout=30
    )
    return {u.unit: u for u in response.usage}


# ---- identity of the node -------------------------------------------------------------------------------------
def test_node_capabilities_and_info(node_driver: Driver) -> None:
    caps = node_driver.node.NodeGetCapabilities(csi.NodeGetCapabilitiesRequest())
    assert {c.rpc.type for c in caps.capabilities} == {
        NodeRPC.STAGE_UNSTAGE_VOLUME,
        NodeRPC.GET_VOLUME_STATS,
        NodeRPC.EXPAND_VOLUME,
        NodeRPC.SINGLE_NODE_MULTI_WRITER,
    }
    info = node_driver.node.NodeGetInfo(csi.NodeGetInfoRequest())
    assert info.node_id == "node-under-test"
    assert info.max_volumes_per_node == 16
    assert dict(info.accessible_topology.segments) == {"topology.cinder.csi.openstack.org/zone": "nova"}
    plugin = node_driver.identity.GetPluginCapabilities(csi.GetPluginCapabilitiesRequest())
    services = {c.service.type for c in plugin.capabilities if c.HasField("service")}
    assert csi.PluginCapability.Service.CONTROLLER_SERVICE not in services  # node mode serves no controller
    assert node_driver.identity.Probe(csi.ProbeRequest()).ready.value


# ---- stage / unstage ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fs", ["ext4", "xfs"])
def test_stage_formats_a_blank_disk_and_mounts_it_idempotently(
    node_driver: Driver, disks: Disks, workdir: Path, fs: str
) -> None:
    if shutil.which(f"mkfs.{fs}") is None:
        pytest.skip(f"mkfs.{fs} is not installed")
    disk = disks.add()
    staging = workdir / "staging"
    assert fs_of(disk.device) == ""
    stage(node_driver, disk, staging, mount_cap(fs=fs, flags=("noatime",)))
    entry = NodeHost().mount_at(str(staging))
    assert entry is not None
    assert entry.fstype == fs
    assert entry.dev == os.stat(disk.device).st_rdev
    assert "noatime" in entry.options
    assert fs_of(disk.device) == fs
    (staging / "data").write_text("kept")
    stage(node_driver, disk, staging, mount_cap(fs=fs))  # same request again: OK, nothing redone
    assert (staging / "data").read_text() == "kept"
    assert len([m for m in NodeHost().mounts() if m.mountpoint == str(staging)]) == 1
    other = "xfs" if fs == "ext4" else "ext4"
    assert (
        code_of(
            node_driver.node.NodeStageVolume,
            csi.NodeStageVolumeRequest(
                volume_id=disk.volume_id, staging_target_path=str(staging), volume_capability=mount_cap(fs=other)
            ),
        )
        == grpc.StatusCode.ALREADY_EXISTS
    )
    unstage(node_driver, disk, staging)
    assert not mounted(staging)
    assert staging.is_dir()  # the CO's directory stays
    unstage(node_driver, disk, staging)  # idempotent


def test_a_disk_with_data_is_never_formatted_over(node_driver: Driver, disks: Disks, workdir: Path) -> None:
    if shutil.which("mkfs.xfs") is None:
        pytest.skip("mkfs.xfs is not installed")
    disk = disks.add()
    staging = workdir / "staging"
    stage(node_driver, disk, staging, mount_cap(fs="ext4"))
    (staging / "data").write_text("precious")
    unstage(node_driver, disk, staging)
    err = rpc_error(
        node_driver.node.NodeStageVolume,
        csi.NodeStageVolumeRequest(
            volume_id=disk.volume_id, staging_target_path=str(staging), volume_capability=mount_cap(fs="xfs")
        ),
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert "ext4" in err.details()  # type: ignore[attr-defined]
    assert fs_of(disk.device) == "ext4"
    stage(node_driver, disk, staging, mount_cap(fs="ext4"))  # restaged: the data is still there
    assert (staging / "data").read_text() == "precious"


def test_stage_of_a_disk_that_is_not_there_is_not_found(node_driver: Driver, workdir: Path) -> None:
    request = csi.NodeStageVolumeRequest(
        volume_id="0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
        staging_target_path=str(workdir),
        volume_capability=mount_cap(),
    )
    err = rpc_error(node_driver.node.NodeStageVolume, request)
    assert err.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert "virtio-0b1c2d3e-4f50-6172-8" in err.details()  # type: ignore[attr-defined]


def test_disks_are_found_by_scsi_serial_too(node_driver: Driver, disks: Disks, workdir: Path) -> None:
    disk = disks.add(name="scsi-0QEMU_QEMU_HARDDISK_{id}")
    stage(node_driver, disk, workdir / "staging")
    assert mounted(workdir / "staging")


# ---- publish / unpublish --------------------------------------------------------------------------------------
def test_publish_bind_mounts_the_staged_filesystem(node_driver: Driver, disks: Disks, workdir: Path) -> None:
    disk = disks.add()
    staging, target = workdir / "staging", workdir / "pod" / "mount"
    (workdir / "pod").mkdir()
    stage(node_driver, disk, staging)
    publish(node_driver, disk, staging, target)
    (target / "written-by-pod").write_text("hello")
    assert (staging / "written-by-pod").read_text() == "hello"
    publish(node_driver, disk, staging, target)  # idempotent
    assert len([m for m in NodeHost().mounts() if m.mountpoint == str(target)]) == 1
    # Same target, other read-only flag: incompatible with what is there.
    assert (
        code_of(
            node_driver.node.NodePublishVolume,
            csi.NodePublishVolumeRequest(
                volume_id=disk.volume_id,
                staging_target_path=str(staging),
                target_path=str(target),
                volume_capability=mount_cap(),
                readonly=True,
            ),
        )
        == grpc.StatusCode.ALREADY_EXISTS
    )
    # A second target on the node: refused for a single-writer mode, allowed for SINGLE_NODE_MULTI_WRITER.
    second = workdir / "pod" / "second"
    assert (
        code_of(
            node_driver.node.NodePublishVolume,
            csi.NodePublishVolumeRequest(
                volume_id=disk.volume_id,
                staging_target_path=str(staging),
                target_path=str(second),
                volume_capability=mount_cap(Mode.SINGLE_NODE_SINGLE_WRITER),
            ),
        )
        == grpc.StatusCode.FAILED_PRECONDITION
    )
    publish(node_driver, disk, staging, second, cap=mount_cap(Mode.SINGLE_NODE_MULTI_WRITER))
    assert (second / "written-by-pod").read_text() == "hello"
    for path in (target, second):
        unpublish(node_driver, disk, path)
        assert not path.exists()  # the target is the driver's to remove
        unpublish(node_driver, disk, path)  # idempotent
    assert mounted(staging)
    unstage(node_driver, disk, staging)


def test_readonly_publish_cannot_be_written(node_driver: Driver, disks: Disks, workdir: Path) -> None:
    disk = disks.add()
    staging, target = workdir / "staging", workdir / "ro"
    stage(node_driver, disk, staging)
    (staging / "file").write_text("data")
    publish(node_driver, disk, staging, target, readonly=True)
    assert (target / "file").read_text() == "data"
    with pytest.raises(OSError, match="Read-only file system") as info:
        (target / "new").write_text("x")
    assert info.value.errno == errno.EROFS
    (staging / "still-writable").write_text("rw")  # the staging mount is untouched
    reader = workdir / "reader"
    publish(node_driver, disk, staging, reader, cap=mount_cap(Mode.MULTI_NODE_READER_ONLY))
    assert NodeHost().mount_at(str(reader)).read_only  # type: ignore[union-attr]


def test_publish_needs_a_staged_volume(node_driver: Driver, disks: Disks, workdir: Path) -> None:
    disk = disks.add()
    staging = workdir / "staging"
    staging.mkdir()
    request = csi.NodePublishVolumeRequest(
        volume_id=disk.volume_id, target_path=str(workdir / "t"), volume_capability=mount_cap()
    )
    assert code_of(node_driver.node.NodePublishVolume, request) == grpc.StatusCode.FAILED_PRECONDITION
    request.staging_target_path = str(staging)  # given, but nothing staged there
    assert code_of(node_driver.node.NodePublishVolume, request) == grpc.StatusCode.FAILED_PRECONDITION


# ---- raw block ------------------------------------------------------------------------------------------------
def test_block_volume_is_published_as_the_device_itself(node_driver: Driver, disks: Disks, workdir: Path) -> None:
    disk = disks.add(size=64 << 20)
    staging, target = workdir / "staging", workdir / "dev" / "block"
    stage(node_driver, disk, staging, block_cap())
    assert not mounted(staging)
    assert fs_of(disk.device) == ""  # raw block is never formatted
    publish(node_driver, disk, staging, target, cap=block_cap())
    assert os.stat(target).st_rdev == os.stat(disk.device).st_rdev
    with open(target, "r+b") as f:
        f.write(b"raw bytes")
    with open(disk.device, "rb") as f:
        assert f.read(9) == b"raw bytes"
    publish(node_driver, disk, staging, target, cap=block_cap())  # idempotent
    other = workdir / "dev" / "other"
    assert (
        code_of(
            node_driver.node.NodePublishVolume,
            csi.NodePublishVolumeRequest(
                volume_id=disk.volume_id,
                staging_target_path=str(staging),
                target_path=str(other),
                volume_capability=block_cap(),
            ),
        )
        == grpc.StatusCode.FAILED_PRECONDITION
    )
    usage = stats(node_driver, disk, target)
    assert usage[csi.VolumeUsage.BYTES].total == 64 << 20
    unpublish(node_driver, disk, target)
    assert not target.exists()
    unstage(node_driver, disk, staging)


# ---- stats and expansion --------------------------------------------------------------------------------------
def test_volume_stats_are_the_filesystems(node_driver: Driver, disks: Disks, workdir: Path) -> None:
    disk = disks.add()
    staging = workdir / "staging"
    stage(node_driver, disk, staging)
    (staging / "blob").write_bytes(os.urandom(8 << 20))
    os.sync()
    usage = stats(node_driver, disk, staging)
    st = os.statvfs(staging)
    by_bytes, inodes = usage[csi.VolumeUsage.BYTES], usage[csi.VolumeUsage.INODES]
    assert by_bytes.total == st.f_blocks * st.f_frsize
    assert by_bytes.used >= 8 << 20
    assert by_bytes.available + by_bytes.used <= by_bytes.total
    assert inodes.total == st.f_files
    assert inodes.used >= 2
    assert (
        code_of(
            node_driver.node.NodeGetVolumeStats,
            csi.NodeGetVolumeStatsRequest(volume_id=disk.volume_id, volume_path=str(workdir / "nowhere")),
        )
        == grpc.StatusCode.NOT_FOUND
    )
    # A path that exists but does not hold this volume.
    assert (
        code_of(
            node_driver.node.NodeGetVolumeStats,
            csi.NodeGetVolumeStatsRequest(volume_id=disk.volume_id, volume_path=str(workdir)),
        )
        == grpc.StatusCode.NOT_FOUND
    )


@pytest.mark.parametrize("fs", ["ext4", "xfs"])
def test_expand_grows_the_mounted_filesystem(node_driver: Driver, disks: Disks, workdir: Path, fs: str) -> None:
    if shutil.which(f"mkfs.{fs}") is None:
        pytest.skip(f"mkfs.{fs} is not installed")
    if fs == "ext4" and not can_resize_ext_online():
        pytest.skip("online ext4 growth needs CAP_SYS_RESOURCE, which this process lacks")
    disk = disks.add(size=512 << 20)
    staging, target = workdir / "staging", workdir / "target"
    stage(node_driver, disk, staging, mount_cap(fs=fs))
    publish(node_driver, disk, staging, target)
    before = os.statvfs(target).f_blocks * os.statvfs(target).f_frsize
    disk.grow(1 << 30)
    request = csi.NodeExpandVolumeRequest(
        volume_id=disk.volume_id,
        volume_path=str(target),
        staging_target_path=str(staging),
        capacity_range=csi.CapacityRange(required_bytes=1 << 30),
        volume_capability=mount_cap(fs=fs),
    )
    response = node_driver.node.NodeExpandVolume(request, timeout=120)
    assert response.capacity_bytes == 1 << 30
    after = os.statvfs(target).f_blocks * os.statvfs(target).f_frsize
    assert after > before + (400 << 20), (before, after)
    node_driver.node.NodeExpandVolume(request, timeout=120)  # idempotent: already that large
    request.capacity_range.required_bytes = 2 << 30  # the disk has not grown that far
    assert code_of(node_driver.node.NodeExpandVolume, request) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("fs", ["ext4", "xfs"])
def test_stage_grows_a_filesystem_smaller_than_its_disk(
    node_driver: Driver, disks: Disks, workdir: Path, fs: str
) -> None:
    """A volume restored from a snapshot into a larger size, or extended while detached, arrives with a
    filesystem smaller than the disk; staging grows it to the size the CO was promised, keeping the data."""
    if shutil.which(f"mkfs.{fs}") is None:
        pytest.skip(f"mkfs.{fs} is not installed")
    disk = disks.add(size=512 << 20)
    staging = workdir / "staging"
    stage(node_driver, disk, staging, mount_cap(fs=fs))
    (staging / "data").write_text("restored")
    small = os.statvfs(staging).f_blocks * os.statvfs(staging).f_frsize
    unstage(node_driver, disk, staging)
    disk.grow(1 << 30)
    stage(node_driver, disk, staging, mount_cap(fs=fs))
    grown = os.statvfs(staging).f_blocks * os.statvfs(staging).f_frsize
    assert grown > small + (400 << 20), (small, grown)
    assert (staging / "data").read_text() == "restored"


# ---- bad input ------------------------------------------------------------------------------------------------
def test_missing_fields_are_invalid_argument(node_driver: Driver, workdir: Path) -> None:
    vid, path = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0", str(workdir)
    node = node_driver.node
    cases = [
        (node.NodeStageVolume, csi.NodeStageVolumeRequest(staging_target_path=path, volume_capability=mount_cap())),
        (node.NodeStageVolume, csi.NodeStageVolumeRequest(volume_id=vid, volume_capability=mount_cap())),
        (node.NodeStageVolume, csi.NodeStageVolumeRequest(volume_id=vid, staging_target_path=path)),
        (
            node.NodeStageVolume,
            csi.NodeStageVolumeRequest(volume_id=vid, staging_target_path=path, volume_capability=mount_cap(fs="ntfs")),
        ),
        (node.NodeUnstageVolume, csi.NodeUnstageVolumeRequest(staging_target_path=path)),
        (node.NodeUnstageVolume, csi.NodeUnstageVolumeRequest(volume_id=vid)),
        (
            node.NodePublishVolume,
            csi.NodePublishVolumeRequest(target_path=path, staging_target_path=path, volume_capability=mount_cap()),
        ),
        (
            node.NodePublishVolume,
            csi.NodePublishVolumeRequest(volume_id=vid, staging_target_path=path, volume_capability=mount_cap()),
        ),
        (
            node.NodePublishVolume,
            csi.NodePublishVolumeRequest(volume_id=vid, staging_target_path=path, target_path=path),
        ),
        (node.NodeUnpublishVolume, csi.NodeUnpublishVolumeRequest(target_path=path)),
        (node.NodeUnpublishVolume, csi.NodeUnpublishVolumeRequest(volume_id=vid)),
        (node.NodeGetVolumeStats, csi.NodeGetVolumeStatsRequest(volume_path=path)),
        (node.NodeGetVolumeStats, csi.NodeGetVolumeStatsRequest(volume_id=vid)),
        (node.NodeExpandVolume, csi.NodeExpandVolumeRequest(volume_path=path)),
        (node.NodeExpandVolume, csi.NodeExpandVolumeRequest(volume_id=vid)),
    ]
    for call, request in cases:
        err = rpc_error(call, request)
        assert err.code() == INVALID, (request, err)  # type: ignore[attr-defined]
        assert err.details()  # type: ignore[attr-defined]
