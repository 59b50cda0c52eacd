"""The CSI Node service: stage (format if blank, mount), publish (bind mount), their reverses, stats, growth.

The node never talks to OpenStack: the disk of a volume is found by its serial (the Cinder volume ID) under
/dev/disk/by-id, and every "is this already done?" question is answered from the kernel's mount table, so a
driver restarted in the middle of an operation picks up from what is really mounted.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from stackway.openstack.csi import rules
from stackway.openstack.csi.host import MountEntry, NodeHost
from stackway.openstack.csi.proto import csi_pb2 as csi
from stackway.openstack.csi.proto import csi_pb2_grpc as csi_grpc
from stackway.openstack.csi.rules import Code, CsiError
from stackway.openstack.csi.service import KeyedLocks, rpc

NodeRPC = csi.NodeServiceCapability.RPC
CAPABILITIES = (
    NodeRPC.STAGE_UNSTAGE_VOLUME,
    NodeRPC.GET_VOLUME_STATS,
    NodeRPC.EXPAND_VOLUME,
    NodeRPC.SINGLE_NODE_MULTI_WRITER,
)


@dataclass(frozen=True)
class NodeConfig:
    #: The node's Nova server ID: what ControllerPublishVolume attaches to.
    node_id: str
    availability_zone: str = ""
    #: Volumes the CO may publish here (Nova and the guest's bus have limits; 256 as cloud-provider-openstack).
    max_volumes_per_node: int = 256
    #: Seconds to wait for udev to name a just-attached disk before answering NOT_FOUND.
    device_wait: float = 15.0


def _is_block(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


class NodeServicer(csi_grpc.NodeServicer):
    def __init__(self, config: NodeConfig, host: NodeHost | None = None) -> None:
        self.config = config
        self.host = host or NodeHost()
        self.locks = KeyedLocks()

    def _device(self, volume_id: str, wait: bool = True) -> str:
        device = self.host.wait_for_device(volume_id, self.config.device_wait if wait else 0.0)
        if device is None:
            raise CsiError(
                Code.NOT_FOUND,
                f"no disk of volume {volume_id} on this node (looked for {', '.join(rules.device_names(volume_id))} "
                f"in {self.host.by_id_dir}); is it attached to this server?",
            )
        return device

    @staticmethod
    def _check_capability(cap: csi.VolumeCapability) -> None:
        rules.check_capability_shape(cap)
        # Multi-attach was the controller's to check; here only what the node itself must honour counts.
        problem = rules.capability_problem(cap, multiattach=True)
        if problem:
            raise CsiError(Code.INVALID_ARGUMENT, problem)

    # ---- stage -------------------------------------------------------------------------------------------------
    @rpc
    def NodeStageVolume(self, request: csi.NodeStageVolumeRequest, context: grpc.ServicerContext) -> Any:
        rules.require(request.volume_id, "volume_id")
        rules.require(request.staging_target_path, "staging_target_path")
        if not request.HasField("volume_capability"):
            raise CsiError(Code.INVALID_ARGUMENT, "volume_capability is required")
        cap = request.volume_capability
        self._check_capability(cap)
        with self.locks.hold(f"volume {request.volume_id}"):
            device = self._device(request.volume_id)
            if cap.HasField("block"):
                return csi.NodeStageVolumeResponse()  # raw block: the device itself is what gets published
            self._stage_filesystem(request, device, cap)
            return csi.NodeStageVolumeResponse()

    def _stage_filesystem(self, request: csi.NodeStageVolumeRequest, device: str, cap: csi.VolumeCapability) -> None:
        staging = request.staging_target_path
        wanted = cap.mount.fs_type or rules.DEFAULT_FILESYSTEM
        rdev = self.host.device_number(device)
        mounted = self.host.mount_at(staging)
        if mounted is not None:
            if mounted.dev == rdev and mounted.fstype == wanted:
                return
            raise CsiError(
                Code.ALREADY_EXISTS,
                f"{staging} already has {mounted.source} ({mounted.fstype}) mounted, not {device} as {wanted}",
            )
        existing = self.host.fs_type(device)
        if not existing:
            self.host.make_fs(device, wanted)
        elif existing != wanted:
            raise CsiError(
                Code.FAILED_PRECONDITION,
                f"volume {request.volume_id} already holds a {existing} filesystem; it will not be formatted as "
                f"{wanted} (that would destroy its data)",
            )
        elif existing.startswith("ext") and self._fs_smaller_than_disk(device, existing):
            # A volume restored from a snapshot or cloned into a larger size, or extended while detached:
            # the filesystem must fill the size the CO was promised. Unmounted, ext grows without privileges.
            self.host.grow_unmounted_ext(device)
        Path(staging).mkdir(parents=True, exist_ok=True)
        self.host.mount(device, staging, wanted, list(cap.mount.mount_flags))
        if wanted == "xfs" and existing and self._fs_smaller_than_disk(device, wanted, staging):
            self.host.resize_fs(device, staging, wanted)  # xfs grows only while mounted

    def _fs_smaller_than_disk(self, device: str, fs_type: str, mountpoint: str | None = None) -> bool:
        fs_size = self.host.fs_size(device, fs_type, mountpoint)
        return fs_size is not None and self.host.device_size(device) - fs_size >= 1 << 20

    @rpc
    def NodeUnstageVolume(self, request: csi.NodeUnstageVolumeRequest, context: grpc.ServicerContext) -> Any:
        rules.require(request.volume_id, "volume_id")
        rules.require(request.staging_target_path, "staging_target_path")
        with self.locks.hold(f"volume {request.volume_id}"):
            # The CO made the staging directory and removes it; only the mount is ours to undo.
            self.host.unmount(request.staging_target_path)
            return csi.NodeUnstageVolumeResponse()

    # ---- publish -----------------------------------------------------------------------------------------------
    @rpc
    def NodePublishVolume(self, request: csi.NodePublishVolumeRequest, context: grpc.ServicerContext) -> Any:
        rules.require(request.volume_id, "volume_id")
        rules.require(request.target_path, "target_path")
        if not request.HasField("volume_capability"):
            raise CsiError(Code.INVALID_ARGUMENT, "volume_capability is required")
        if not request.staging_target_path:
            raise CsiError(
                Code.FAILED_PRECONDITION, "staging_target_path is required: this driver stages volumes first"
            )
        cap = request.volume_capability
        self._check_capability(cap)
        read_only = request.readonly or cap.access_mode.mode in rules.READ_ONLY_MODES
        with self.locks.hold(f"volume {request.volume_id}"):
            if cap.HasField("block"):
                self._publish_block(request, cap, read_only)
            else:
                self._publish_mount(request, cap, read_only)
            return csi.NodePublishVolumeResponse()

    def _already_published(self, target: str, same: Callable[[MountEntry], bool], read_only: bool) -> bool:
        """True if ``target`` already shows this very publish (idempotent OK); ALREADY_EXISTS if it shows
        another (a different volume, or the same one with the other read-only setting)."""
        mounted = self.host.mount_at(target)
        if mounted is None:
            return False
        if same(mounted) and mounted.read_only == read_only:
            return True
        raise CsiError(
            Code.ALREADY_EXISTS,
            f"{target} is already published ({mounted.source}, {'ro' if mounted.read_only else 'rw'}), "
            f"incompatible with this request ({'ro' if read_only else 'rw'})",
        )

    @staticmethod
    def _refuse_second_target(cap: csi.VolumeCapability, volume_id: str, others: list[str]) -> None:
        if others and not rules.allows_several_targets(cap.access_mode.mode):
            raise CsiError(
                Code.FAILED_PRECONDITION,
                f"volume {volume_id} is already published at {', '.join(others)}; "
                f"{rules.mode_name(cap.access_mode.mode)} allows one target on a node",
            )

    def _publish_mount(self, request: csi.NodePublishVolumeRequest, cap: csi.VolumeCapability, read_only: bool) -> None:
        staging, target = request.staging_target_path, os.path.realpath(request.target_path)
        staged = self.host.mount_at(staging)
        if staged is None:
            raise CsiError(
                Code.FAILED_PRECONDITION,
                f"volume {request.volume_id} is not staged at {staging} (NodeStageVolume first)",
            )
        device = self.host.find_device(request.volume_id)
        if device is None:
            raise CsiError(Code.NOT_FOUND, f"no disk of volume {request.volume_id} on this node")
        if self.host.device_number(device) != staged.dev:
            raise CsiError(Code.FAILED_PRECONDITION, f"{staging} holds {staged.source}, not volume {request.volume_id}")
        if self._already_published(target, lambda m: m.dev == staged.dev, read_only):
            return
        staging_real = os.path.realpath(staging)
        others = [m.mountpoint for m in self.host.mounts_of(staged.dev) if m.mountpoint not in (staging_real, target)]
        self._refuse_second_target(cap, request.volume_id, others)
        Path(target).mkdir(parents=True, exist_ok=True)
        self.host.bind_mount(staging, target, read_only)

    def _publish_block(self, request: csi.NodePublishVolumeRequest, cap: csi.VolumeCapability, read_only: bool) -> None:
        target = os.path.realpath(request.target_path)
        device = self._device(request.volume_id)
        rdev = self.host.device_number(device)
        if self._already_published(target, lambda m: self.host.device_number(target) == rdev, read_only):
            return
        others = [p for p in self.host.block_binds_of(rdev or 0) if p != target] if rdev else []
        self._refuse_second_target(cap, request.volume_id, others)
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).touch(exist_ok=True)
        self.host.bind_mount(device, target, read_only)

    @rpc
    def NodeUnpublishVolume(self, request: csi.NodeUnpublishVolumeRequest, context: grpc.ServicerContext) -> Any:
        rules.require(request.volume_id, "volume_id")
        rules.require(request.target_path, "target_path")
        target = request.target_path
        with self.locks.hold(f"volume {request.volume_id}"):
            self.host.unmount(target)
            # The target is ours to remove (spec): a directory for a mount, a file for a raw block device.
            if os.path.isdir(target) and not os.path.islink(target):
                os.rmdir(target)
            elif os.path.lexists(target):
                os.unlink(target)
            return csi.NodeUnpublishVolumeResponse()

    # ---- stats and growth --------------------------------------------------------------------------------------
    def _volume_at(self, volume_id: str, path: str) -> tuple[str, bool]:
        """(device, is_block) for ``volume_id`` at ``path``; NOT_FOUND unless the path really holds it."""
        if not os.path.exists(path):
            raise CsiError(Code.NOT_FOUND, f"{path} does not exist")
        device = self.host.find_device(volume_id)
        if device is None:
            raise CsiError(Code.NOT_FOUND, f"no disk of volume {volume_id} on this node")
        rdev = self.host.device_number(device)
        if _is_block(path):
            if self.host.device_number(path) != rdev:
                raise CsiError(Code.NOT_FOUND, f"{path} is not the block device of volume {volume_id}")
            return device, True
        mounted = self.host.mount_at(path)
        if mounted is None or mounted.dev != rdev:
            raise CsiError(Code.NOT_FOUND, f"volume {volume_id} is not mounted at {path}")
        return device, False

    @rpc
    def NodeGetVolumeStats(self, request: csi.NodeGetVolumeStatsRequest, context: grpc.ServicerContext) -> Any:
        rules.require(request.volume_id, "volume_id")
        rules.require(request.volume_path, "volume_path")
        device, block = self._volume_at(request.volume_id, request.volume_path)
        Unit = csi.VolumeUsage.Unit
        if block:
            usage = [csi.VolumeUsage(total=self.host.device_size(device), unit=Unit.BYTES)]
            return csi.NodeGetVolumeStatsResponse(usage=usage)
        st = self.host.statvfs(request.volume_path)
        usage = [
            csi.VolumeUsage(
                total=st.f_blocks * st.f_frsize,
                available=st.f_bavail * st.f_frsize,
                used=(st.f_blocks - st.f_bfree) * st.f_frsize,
                unit=Unit.BYTES,
            ),
            csi.VolumeUsage(total=st.f_files, available=st.f_favail, used=st.f_files - st.f_ffree, unit=Unit.INODES),
        ]
        return csi.NodeGetVolumeStatsResponse(usage=usage)

    @rpc
    def NodeExpandVolume(self, request: csi.NodeExpandVolumeRequest, context: grpc.ServicerContext) -> Any:
        rules.require(request.volume_id, "volume_id")
        rules.require(request.volume_path, "volume_path")
        if request.HasField("volume_capability"):
            self._check_capability(request.volume_capability)
        with self.locks.hold(f"volume {request.volume_id}"):
            device, block = self._volume_at(request.volume_id, request.volume_path)
            self.host.rescan(device)
            size = self.host.device_size(device)
            required = request.capacity_range.required_bytes if request.HasField("capacity_range") else 0
            if required and size < required:
                raise CsiError(
                    Code.UNAVAILABLE,
                    f"the disk of {request.volume_id} is {size} bytes on this node, less than the {required} asked; "
                    "the hypervisor has not passed the extension on yet",
                )
            if not block and not (
                request.HasField("volume_capability") and request.volume_capability.HasField("block")
            ):
                fs = self.host.fs_type(device)
                self.host.resize_fs(device, request.volume_path, fs)
            return csi.NodeExpandVolumeResponse(capacity_bytes=size)

    # ---- identity of the node ----------------------------------------------------------------------------------
    @rpc
    def NodeGetCapabilities(self, request: csi.NodeGetCapabilitiesRequest, context: grpc.ServicerContext) -> Any:
        caps = [csi.NodeServiceCapability(rpc=NodeRPC(type=t)) for t in CAPABILITIES]
        return csi.NodeGetCapabilitiesResponse(capabilities=caps)

    @rpc
    def NodeGetInfo(self, request: csi.NodeGetInfoRequest, context: grpc.ServicerContext) -> Any:
        response = csi.NodeGetInfoResponse(
            node_id=self.config.node_id, max_volumes_per_node=self.config.max_volumes_per_node
        )
        if self.config.availability_zone:
            response.accessible_topology.CopyFrom(rules.topology(self.config.availability_zone))
        return response
