"""The driver's decisions that need no I/O: sizes, capabilities, parameters, topology and page tokens.

Kept pure so that every rule the CSI spec and Cinder impose is unit-tested exhaustively, and the servicers
only fetch state, call these and act. Violations raise :class:`CsiError` with the gRPC code the spec lists
for that case; the servicers turn it into the RPC's status.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from stackway.openstack.csi.proto import csi_pb2 as csi

GIB = 1 << 30
#: Cinder's smallest volume, and the size of a volume created without a capacity range.
DEFAULT_SIZE_GIB = 1
#: The topology segment key, cloud-provider-openstack's, so existing PVs' node affinity keeps matching.
TOPOLOGY_KEY = "topology.cinder.csi.openstack.org/zone"
#: Filesystems the node can make, mount and grow (mkfs.<type>, resize2fs or xfs_growfs).
FILESYSTEMS = ("ext4", "ext3", "ext2", "xfs")
DEFAULT_FILESYSTEM = "ext4"
#: StorageClass parameters the external-provisioner adds itself (``--extra-create-metadata``): stored as
#: Cinder metadata so an operator can tell which PVC a volume belongs to.
K8S_PREFIX = "csi.storage.k8s.io/"
#: StorageClass parameters the driver understands (cloud-provider-openstack's names).
VOLUME_PARAMETERS = ("type", "availability")
SNAPSHOT_PARAMETERS = ("force-create", "type")
#: Cinder serials are volume IDs; virtio-blk keeps only their first 20 characters.
VIRTIO_SERIAL_LEN = 20

Mode = csi.VolumeCapability.AccessMode
SINGLE_NODE_MODES = frozenset(
    {
        Mode.SINGLE_NODE_WRITER,
        Mode.SINGLE_NODE_READER_ONLY,
        Mode.SINGLE_NODE_SINGLE_WRITER,
        Mode.SINGLE_NODE_MULTI_WRITER,
    }
)
MULTI_NODE_MODES = frozenset({Mode.MULTI_NODE_READER_ONLY, Mode.MULTI_NODE_SINGLE_WRITER, Mode.MULTI_NODE_MULTI_WRITER})
READ_ONLY_MODES = frozenset({Mode.SINGLE_NODE_READER_ONLY, Mode.MULTI_NODE_READER_ONLY})


def mode_name(mode: int) -> str:
    """SINGLE_NODE_WRITER and so on, for messages (a mode from a newer CO prints as its number)."""
    try:
        return str(csi.VolumeCapability.AccessMode.Mode.Name(mode))
    except ValueError:
        return f"access mode {mode}"


_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_BANNED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


class Code(enum.Enum):
    """gRPC status codes by name (``grpc.StatusCode[code.name]``), so this module needs no gRPC import."""

    INVALID_ARGUMENT = 3
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DEADLINE_EXCEEDED = 4


class CsiError(Exception):
    """An RPC failure with the code the spec prescribes and a message for the person reading the event."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def require(value: object, what: str) -> None:
    """Every REQUIRED field the CO left empty is INVALID_ARGUMENT (spec, general error table)."""
    if not value:
        raise CsiError(Code.INVALID_ARGUMENT, f"{what} is required")


def check_name(name: str, what: str = "name") -> None:
    require(name, what)
    if _BANNED.search(name):
        raise CsiError(Code.INVALID_ARGUMENT, f"{what} contains control characters the CSI spec bans")
    if len(name) > 255:
        raise CsiError(Code.INVALID_ARGUMENT, f"{what} is {len(name)} characters; Cinder names hold 255")


# ---- sizes -------------------------------------------------------------------------------------------------
def gib_to_bytes(gib: int) -> int:
    return gib * GIB


def size_for(capacity: csi.CapacityRange | None, default_gib: int = DEFAULT_SIZE_GIB) -> int:
    """The whole GiB to ask Cinder for: the required bytes rounded **up**, never beyond the limit.

    A 1.5 GiB claim gets 2 GiB and a 1-byte claim 1 GiB (rounding down would hand out less than asked, or
    nothing). A range that no whole GiB satisfies is OUT_OF_RANGE; a contradictory one INVALID_ARGUMENT.
    """
    required = capacity.required_bytes if capacity is not None else 0
    limit = capacity.limit_bytes if capacity is not None else 0
    if required < 0 or limit < 0:
        raise CsiError(Code.INVALID_ARGUMENT, "capacity_range bytes must not be negative")
    if limit and required > limit:
        raise CsiError(Code.INVALID_ARGUMENT, f"required_bytes {required} exceeds limit_bytes {limit}")
    gib = -(-required // GIB) if required else default_gib
    if limit and gib * GIB > limit:
        if required:
            raise CsiError(
                Code.OUT_OF_RANGE,
                f"{required} bytes round up to {gib} GiB (Cinder sizes are whole GiB), above limit_bytes {limit}",
            )
        if limit < GIB:
            raise CsiError(Code.OUT_OF_RANGE, f"limit_bytes {limit} is below Cinder's smallest volume, 1 GiB")
        gib = limit // GIB
    return gib


def size_fits(size_gib: int, capacity: csi.CapacityRange | None) -> bool:
    """Whether an existing volume of ``size_gib`` satisfies ``capacity`` (CreateVolume idempotency)."""
    if capacity is None:
        return True
    size = size_gib * GIB
    if capacity.required_bytes and size < capacity.required_bytes:
        return False
    return not (capacity.limit_bytes and size > capacity.limit_bytes)


# ---- capabilities ------------------------------------------------------------------------------------------
def check_capability_shape(cap: csi.VolumeCapability, what: str = "volume_capability") -> None:
    """A capability must name an access type and an access mode; fields we cannot honour are refused."""
    if not cap.HasField("access_mode") or cap.access_mode.mode == Mode.UNKNOWN:
        raise CsiError(Code.INVALID_ARGUMENT, f"{what}: access_mode is required")
    kind = cap.WhichOneof("access_type")
    if kind is None:
        raise CsiError(Code.INVALID_ARGUMENT, f"{what}: access_type (block or mount) is required")


def capability_problem(cap: csi.VolumeCapability, *, multiattach: bool) -> str | None:
    """Why a volume (multi-attachable or not) cannot be used as ``cap``; None when it can.

    Multi-node modes need a multi-attach volume type; a writer on several nodes is allowed only for raw
    block, since ext4 and xfs are not cluster filesystems and would be corrupted by two writers.
    """
    mode = cap.access_mode.mode
    if mode not in SINGLE_NODE_MODES | MULTI_NODE_MODES:
        return f"access mode {mode} is unknown to this driver"
    if cap.HasField("mount"):
        fs = cap.mount.fs_type or DEFAULT_FILESYSTEM
        if fs not in FILESYSTEMS:
            return f"filesystem {fs!r} is not supported (supported: {', '.join(FILESYSTEMS)})"
        if cap.mount.volume_mount_group:
            return "volume_mount_group is not supported (VOLUME_MOUNT_GROUP is not advertised)"
    if mode in MULTI_NODE_MODES:
        if not multiattach:
            return (
                f"{mode_name(mode)} needs a multi-attach volume type (extra spec multiattach='<is> True'); "
                "this volume's type is not"
            )
        if mode != Mode.MULTI_NODE_READER_ONLY and not cap.HasField("block"):
            return (
                f"{mode_name(mode)} is only supported for block volumes: a filesystem cannot have writers on two nodes"
            )
    return None


def capabilities_problem(caps: Iterable[csi.VolumeCapability], *, multiattach: bool) -> str | None:
    for cap in caps:
        problem = capability_problem(cap, multiattach=multiattach)
        if problem:
            return problem
    return None


def wants_multi_node(caps: Iterable[csi.VolumeCapability]) -> bool:
    return any(cap.access_mode.mode in MULTI_NODE_MODES for cap in caps)


def allows_several_targets(mode: int) -> bool:
    """NodePublish on a second target path of the same node: allowed for MULTI_NODE_* and
    SINGLE_NODE_MULTI_WRITER, FAILED_PRECONDITION for the single-writer modes (spec's table)."""
    return mode in MULTI_NODE_MODES or mode == Mode.SINGLE_NODE_MULTI_WRITER


# ---- parameters --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VolumeParameters:
    volume_type: str | None = None
    availability: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def parse_volume_parameters(params: Mapping[str, str]) -> VolumeParameters:
    """StorageClass parameters: ``type`` (Cinder volume type) and ``availability`` (Cinder AZ); the
    external-provisioner's own ``csi.storage.k8s.io/*`` keys become metadata. Anything else is a typo that
    would silently give the wrong volume, so it is refused."""
    unknown = sorted(k for k in params if k not in VOLUME_PARAMETERS and not k.startswith(K8S_PREFIX))
    if unknown:
        raise CsiError(
            Code.INVALID_ARGUMENT,
            f"unknown parameter(s) {', '.join(unknown)}; supported: {', '.join(VOLUME_PARAMETERS)}",
        )
    return VolumeParameters(
        volume_type=params.get("type") or None,
        availability=params.get("availability") or None,
        metadata={k: v for k, v in params.items() if k.startswith(K8S_PREFIX)},
    )


@dataclass(frozen=True)
class SnapshotParameters:
    force: bool = False
    metadata: dict[str, str] = field(default_factory=dict)


def parse_bool(value: str, what: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise CsiError(Code.INVALID_ARGUMENT, f"{what}: expected true or false, got {value!r}")


def parse_snapshot_parameters(params: Mapping[str, str]) -> SnapshotParameters:
    """VolumeSnapshotClass parameters: ``force-create`` (snapshot an in-use volume) and ``type``, of which
    only ``snapshot`` is implemented (Cinder backups are left out)."""
    unknown = sorted(k for k in params if k not in SNAPSHOT_PARAMETERS and not k.startswith(K8S_PREFIX))
    if unknown:
        raise CsiError(
            Code.INVALID_ARGUMENT,
            f"unknown parameter(s) {', '.join(unknown)}; supported: {', '.join(SNAPSHOT_PARAMETERS)}",
        )
    kind = params.get("type", "snapshot") or "snapshot"
    if kind != "snapshot":
        raise CsiError(Code.INVALID_ARGUMENT, f"snapshot type {kind!r} is not supported; only 'snapshot' is")
    return SnapshotParameters(
        force=parse_bool(params.get("force-create", ""), "force-create"),
        metadata={k: v for k, v in params.items() if k.startswith(K8S_PREFIX)},
    )


# ---- topology ----------------------------------------------------------------------------------------------
def zones_of(topologies: Iterable[csi.Topology]) -> list[str]:
    """The zones named by ``topologies``, in order, without repeats (segments of other keys ignored)."""
    seen: list[str] = []
    for topo in topologies:
        zone = topo.segments.get(TOPOLOGY_KEY)
        if zone and zone not in seen:
            seen.append(zone)
    return seen


def choose_zone(
    requirement: csi.TopologyRequirement | None, availability: str | None, known: Iterable[str]
) -> str | None:
    """The Cinder AZ to create in: the ``availability`` parameter if it is allowed, else the first preferred,
    then requisite, zone that Cinder has; None leaves the choice to Cinder (no topology asked for)."""
    known_zones = list(known)
    requisite = zones_of(requirement.requisite) if requirement is not None else []
    preferred = zones_of(requirement.preferred) if requirement is not None else []
    if availability:
        if requisite and availability not in requisite:
            raise CsiError(
                Code.INVALID_ARGUMENT,
                f"parameter availability={availability!r} is outside the requisite zones {requisite}",
            )
        return availability
    candidates = [z for z in preferred + requisite if z in known_zones]
    candidates = list(dict.fromkeys(candidates))
    if candidates:
        return candidates[0]
    if requisite:
        raise CsiError(
            Code.RESOURCE_EXHAUSTED,
            f"none of the requisite zones {requisite} is a Cinder availability zone ({', '.join(known_zones)})",
        )
    return None


def topology(zone: str) -> csi.Topology:
    return csi.Topology(segments={TOPOLOGY_KEY: zone})


# ---- pagination and identities ------------------------------------------------------------------------------
def check_max_entries(max_entries: int) -> None:
    if max_entries < 0:
        raise CsiError(Code.INVALID_ARGUMENT, f"max_entries must not be negative, got {max_entries}")


def check_token(token: str) -> str | None:
    """A page token is the ID of the last entry of the previous page (Cinder's marker); anything else is
    ABORTED so the CO restarts the listing, as the spec asks."""
    if not token:
        return None
    if not _UUID.match(token):
        raise CsiError(Code.ABORTED, f"starting_token {token!r} is not a token this driver issued")
    return token


def looks_like_id(value: str) -> bool:
    return bool(_UUID.match(value))


def device_names(volume_id: str) -> list[str]:
    """Names under /dev/disk/by-id that a hypervisor gives the disk of a Cinder volume: virtio-blk keeps
    the first 20 characters of the ID as the serial, virtio-scsi (QEMU) the whole ID."""
    short = volume_id[:VIRTIO_SERIAL_LEN]
    return [
        f"virtio-{short}",
        f"virtio-{volume_id}",
        f"scsi-0QEMU_QEMU_HARDDISK_{short}",
        f"scsi-0QEMU_QEMU_HARDDISK_{volume_id}",
    ]
