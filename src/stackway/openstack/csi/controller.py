"""The CSI Controller service on Cinder and Nova: volumes, attachments, expansion (snapshots: ``snapshots``).

Volume IDs are Cinder's, CSI names are Cinder names (that is what makes CreateVolume idempotent across
restarts: no state of our own), and a node ID is the node's Nova server ID. Each RPC checks its request with
:mod:`rules`, reads what Cinder and Nova say now, and only then acts, so a retried or repeated call finds
the work done and answers OK instead of doing it twice.
"""

from __future__ import annotations

import time
from typing import Any

import grpc

from stackway.openstack.clients import errors as os_errors
from stackway.openstack.clients.blockstorage import BlockStorage, Volume
from stackway.openstack.clients.compute import Compute
from stackway.openstack.csi import rules
from stackway.openstack.csi.proto import csi_pb2 as csi
from stackway.openstack.csi.proto import csi_pb2_grpc as csi_grpc
from stackway.openstack.csi.rules import Code, CsiError
from stackway.openstack.csi.service import ControllerConfig, KeyedLocks, rpc, wait_for
from stackway.openstack.csi.snapshots import SnapshotRPCs

#: Statuses in which another operation is still moving the volume; an attach waits them out.
TRANSITIONAL = frozenset({"attaching", "detaching", "reserved", "creating", "extending", "downloading"})
ZONES_TTL = 300.0

__all__ = ["CAPABILITIES", "ControllerConfig", "ControllerServicer"]

RPC = csi.ControllerServiceCapability.RPC
CAPABILITIES = (
    RPC.CREATE_DELETE_VOLUME,
    RPC.PUBLISH_UNPUBLISH_VOLUME,
    RPC.LIST_VOLUMES,
    RPC.LIST_VOLUMES_PUBLISHED_NODES,
    RPC.GET_VOLUME,
    RPC.GET_CAPACITY,
    RPC.CREATE_DELETE_SNAPSHOT,
    RPC.LIST_SNAPSHOTS,
    RPC.CLONE_VOLUME,
    RPC.EXPAND_VOLUME,
    RPC.SINGLE_NODE_MULTI_WRITER,
)


class ControllerServicer(SnapshotRPCs, csi_grpc.ControllerServicer):
    def __init__(self, cinder: BlockStorage, nova: Compute, config: ControllerConfig | None = None) -> None:
        self.cinder = cinder
        self.nova = nova
        self.config = config or ControllerConfig()
        self.locks = KeyedLocks()
        self._zones: tuple[float, list[str]] = (0.0, [])

    # ---- helpers ---------------------------------------------------------------------------------------------
    def _known_zones(self) -> list[str]:
        fetched_at, zones = self._zones
        if not zones or time.monotonic() - fetched_at > ZONES_TTL:
            zones = self.cinder.availability_zones()
            self._zones = (time.monotonic(), zones)
        return zones

    def _csi_volume(self, vol: Volume) -> csi.Volume:
        out = csi.Volume(capacity_bytes=rules.gib_to_bytes(vol.size_gib), volume_id=vol.id)
        if vol.snapshot_id:
            out.content_source.snapshot.snapshot_id = vol.snapshot_id
        elif vol.source_volume_id:
            out.content_source.volume.volume_id = vol.source_volume_id
        if self.config.topology and vol.availability_zone:
            out.accessible_topology.append(rules.topology(vol.availability_zone))
        return out

    def _wait_volume(self, volume_id: str, what: str, done: Any, deadline: float, failed: Any = None) -> Volume:
        vol: Volume = wait_for(
            what,
            lambda: self.cinder.get_volume(volume_id),
            done,
            deadline=deadline,
            backoff=self.config.waits.backoff,
            failed=failed or (lambda v: None),
        )
        return vol

    def _wait_available(self, vol: Volume) -> Volume:
        if vol.status == "available":
            return vol

        def failed(v: Volume) -> str | None:
            return f"Cinder reports status {v.status}" if v.status.startswith("error") else None

        return self._wait_volume(
            vol.id, f"volume {vol.id}", lambda v: v.status == "available", self.config.waits.volume_ready, failed
        )

    # ---- volumes -----------------------------------------------------------------------------------------------
    @rpc
    def CreateVolume(self, request: csi.CreateVolumeRequest, context: grpc.ServicerContext) -> Any:
        rules.check_name(request.name)
        rules.require(request.volume_capabilities, "volume_capabilities")
        for cap in request.volume_capabilities:
            rules.check_capability_shape(cap, "volume_capabilities")
        params = rules.parse_volume_parameters(request.parameters)
        capacity = request.capacity_range if request.HasField("capacity_range") else None
        size = rules.size_for(capacity)
        requirement = request.accessibility_requirements if request.HasField("accessibility_requirements") else None
        with self.locks.hold(f"volume name {request.name}"):
            existing = [v for v in self.cinder.volumes_named(request.name) if v.status != "deleting"]
            if existing:
                vol = self._adopt(existing[0], request, params, capacity, requirement)
            else:
                vol = self._create(request, params, capacity, size, requirement)
            return csi.CreateVolumeResponse(volume=self._csi_volume(vol))

    def _adopt(
        self,
        vol: Volume,
        request: csi.CreateVolumeRequest,
        params: rules.VolumeParameters,
        capacity: csi.CapacityRange | None,
        requirement: csi.TopologyRequirement | None,
    ) -> Volume:
        """A volume of this name exists: it is the answer if it matches the request, else ALREADY_EXISTS."""
        incompatible = []
        if not rules.size_fits(vol.size_gib, capacity):
            incompatible.append(f"its size {vol.size_gib} GiB is outside the requested capacity range")
        source = request.volume_content_source
        if (source.snapshot.snapshot_id or "") != vol.snapshot_id:
            incompatible.append("its content source (snapshot) differs")
        if (source.volume.volume_id or "") != vol.source_volume_id:
            incompatible.append("its content source (volume) differs")
        if params.volume_type and params.volume_type != vol.volume_type:
            vtype = self.cinder.find_type(params.volume_type)
            if vtype is None or vol.volume_type not in (vtype.name, vtype.id):
                incompatible.append(f"its type is {vol.volume_type!r}, not {params.volume_type!r}")
        problem = rules.capabilities_problem(request.volume_capabilities, multiattach=vol.multiattach)
        if problem:
            incompatible.append(problem)
        requisite = rules.zones_of(requirement.requisite) if requirement is not None else []
        if (requisite and vol.availability_zone not in requisite) or (
            params.availability and params.availability != vol.availability_zone
        ):
            incompatible.append(f"it is in zone {vol.availability_zone!r}")
        if incompatible:
            raise CsiError(
                Code.ALREADY_EXISTS, f"volume {request.name!r} exists as {vol.id} but " + "; ".join(incompatible)
            )
        if vol.status.startswith("error"):
            self.cinder.delete_volume(vol.id)
            raise CsiError(
                Code.INTERNAL,
                f"volume {request.name!r} ({vol.id}) failed in Cinder ({vol.status}); deleted it, "
                "a retry creates it again",
            )
        return self._wait_available(vol)

    def _source_size(self, request: csi.CreateVolumeRequest) -> tuple[int, str | None, str | None, str | None]:
        """(size GiB, snapshot id, source volume id, zone the source pins) of the requested content source."""
        source = request.volume_content_source
        kind = source.WhichOneof("type") if request.HasField("volume_content_source") else None
        if kind == "snapshot":
            snap_id = source.snapshot.snapshot_id
            rules.require(snap_id, "volume_content_source.snapshot.snapshot_id")
            try:
                snap = self.cinder.get_snapshot(snap_id)
            except os_errors.NotFound as err:
                raise CsiError(Code.NOT_FOUND, f"source snapshot {snap_id} does not exist") from err
            if snap.status != "available":
                raise CsiError(Code.UNAVAILABLE, f"source snapshot {snap_id} is {snap.status}, not available yet")
            return snap.size_gib, snap_id, None, None
        if kind == "volume":
            src_id = source.volume.volume_id
            rules.require(src_id, "volume_content_source.volume.volume_id")
            src = self._get_volume(src_id, "source volume")
            if src.status not in ("available", "in-use"):
                raise CsiError(Code.UNAVAILABLE, f"source volume {src_id} is {src.status}, cannot clone it now")
            return src.size_gib, None, src_id, src.availability_zone or None
        if request.HasField("volume_content_source"):
            raise CsiError(Code.INVALID_ARGUMENT, "volume_content_source names neither a snapshot nor a volume")
        return 0, None, None, None

    def _create(
        self,
        request: csi.CreateVolumeRequest,
        params: rules.VolumeParameters,
        capacity: csi.CapacityRange | None,
        size: int,
        requirement: csi.TopologyRequirement | None,
    ) -> Volume:
        multiattach = False
        if params.volume_type:
            vtype = self.cinder.find_type(params.volume_type)
            if vtype is None:
                raise CsiError(Code.INVALID_ARGUMENT, f"volume type {params.volume_type!r} does not exist in Cinder")
            multiattach = vtype.multiattach
        elif rules.wants_multi_node(request.volume_capabilities):
            raise CsiError(
                Code.INVALID_ARGUMENT,
                "multi-node access modes need the StorageClass parameter 'type' naming a multi-attach volume type",
            )
        problem = rules.capabilities_problem(request.volume_capabilities, multiattach=multiattach)
        if problem:
            raise CsiError(Code.INVALID_ARGUMENT, problem)

        source_gib, snapshot_id, source_volume_id, source_zone = self._source_size(request)
        if source_gib:
            if not (capacity and capacity.required_bytes):
                size = max(size, source_gib)
            if size < source_gib:
                raise CsiError(
                    Code.OUT_OF_RANGE, f"{size} GiB is smaller than the {source_gib} GiB source; a volume cannot be"
                )
            if capacity and capacity.limit_bytes and rules.gib_to_bytes(size) > capacity.limit_bytes:
                raise CsiError(Code.OUT_OF_RANGE, f"the source is {source_gib} GiB, above limit_bytes")

        zones = self._known_zones() if requirement is not None else []
        zone = rules.choose_zone(requirement, params.availability, zones)
        if source_zone:
            if zone and zone != source_zone:
                raise CsiError(
                    Code.INVALID_ARGUMENT, f"a clone stays in its source's zone {source_zone!r}, not {zone!r}"
                )
            zone = source_zone
        metadata = {"created-by": self.config.driver_name, **params.metadata}
        vol = self.cinder.create_volume(
            name=request.name,
            size_gib=size,
            volume_type=params.volume_type,
            availability_zone=zone,
            snapshot_id=snapshot_id,
            source_volume_id=source_volume_id,
            metadata=metadata,
        )
        try:
            return self._wait_available(vol)
        except CsiError as err:
            if err.code is Code.INTERNAL:  # the volume went to error: remove it so a retry starts clean
                self.cinder.delete_volume(vol.id)
            raise

    @rpc
    def DeleteVolume(self, request: csi.DeleteVolumeRequest, context: grpc.ServicerContext) -> Any:
        rules.require(request.volume_id, "volume_id")
        with self.locks.hold(f"volume {request.volume_id}"):
            try:
                vol = self.cinder.get_volume(request.volume_id)
            except os_errors.NotFound:
                return csi.DeleteVolumeResponse()
            if vol.attachments:
                raise CsiError(
                    Code.FAILED_PRECONDITION,
                    f"volume {vol.id} is still attached to node(s) {', '.join(vol.attached_server_ids)}",
                )
            if vol.status != "deleting":  # a retried delete finds Cinder still at it: wait with it
                try:
                    self.cinder.delete_volume(vol.id)
                except os_errors.NotFound:
                    return csi.DeleteVolumeResponse()
                except os_errors.BadRequest as err:
                    # Cinder refuses while snapshots depend on the volume or it is busy: the spec's "in use".
                    message = f"volume {vol.id} cannot be deleted: {err.message}"
                    raise CsiError(Code.FAILED_PRECONDITION, message) from err
            self._wait_gone(vol.id)
            return csi.DeleteVolumeResponse()

    def _wait_gone(self, volume_id: str) -> None:
        """Answer OK only once Cinder has removed the volume: a deletion that fails (error_deleting) would
        otherwise leak it with nobody told. Past the deadline the CO retries and waits again."""

        def fetch() -> Volume | None:
            try:
                return self.cinder.get_volume(volume_id)
            except os_errors.NotFound:
                return None

        wait_for(
            f"deletion of volume {volume_id}",
            fetch,
            lambda v: v is None,
            deadline=self.config.waits.delete,
            backoff=self.config.waits.backoff,
            failed=lambda v: f"Cinder reports status {v.status}" if v and v.status == "error_deleting" else None,
        )

    # ---- attachments -------------------------------------------------------------------------------------------
    @rpc
    def ControllerPublishVolume(
        self, request: csi.ControllerPublishVolumeRequest, context: grpc.ServicerContext
    ) -> Any:
        rules.require(request.volume_id, "volume_id")
        rules.require(request.node_id, "node_id")
        if not request.HasField("volume_capability"):
            raise CsiError(Code.INVALID_ARGUMENT, "volume_capability is required")
        cap = request.volume_capability
        rules.check_capability_shape(cap)
        node, volume_id = request.node_id, request.volume_id
        with self.locks.hold(f"volume {volume_id}"):
            vol = self._get_volume(volume_id)
            try:
                self.nova.get_server(node)
            except os_errors.NotFound as err:
                raise CsiError(Code.NOT_FOUND, f"node {node} does not exist (no such Nova server)") from err
            problem = rules.capability_problem(cap, multiattach=vol.multiattach)
            if problem:
                raise CsiError(Code.INVALID_ARGUMENT, problem)
            if node not in vol.attached_server_ids:
                others = vol.attached_server_ids
                if others and cap.access_mode.mode not in rules.MULTI_NODE_MODES:
                    raise CsiError(
                        Code.FAILED_PRECONDITION,
                        f"volume {volume_id} is published to node {', '.join(others)}; "
                        f"{rules.mode_name(cap.access_mode.mode)} allows one node",
                    )
                vol = self._attach(vol, node)
            elif vol.status != "in-use":
                vol = self._wait_attached(volume_id, node)
            device = next((a.device for a in vol.attachments if a.server_id == node), "")
            context_out = {"serial": volume_id[: rules.VIRTIO_SERIAL_LEN]}
            if device:
                context_out["device"] = device  # Nova's name for it: a hint only, the serial is authoritative
            return csi.ControllerPublishVolumeResponse(publish_context=context_out)

    def _attach(self, vol: Volume, node: str) -> Volume:
        waits = self.config.waits
        if vol.status in TRANSITIONAL:
            vol = self._wait_volume(
                vol.id, f"volume {vol.id} to settle", lambda v: v.status not in TRANSITIONAL, waits.attach
            )
            if node in vol.attached_server_ids:
                return self._wait_attached(vol.id, node)
        if self.config.max_volumes_per_node:
            attached = self.nova.server_volumes(node)
            if len(attached) >= self.config.max_volumes_per_node:
                raise CsiError(
                    Code.RESOURCE_EXHAUSTED,
                    f"node {node} already has {len(attached)} volumes, the limit is {self.config.max_volumes_per_node}",
                )
        try:
            self.nova.attach_volume(node, vol.id)
        except os_errors.BadRequest as err:
            raise CsiError(Code.FAILED_PRECONDITION, f"Nova refused to attach {vol.id}: {err.message}") from err
        except os_errors.Forbidden as err:
            # Nova answers 403 when the server has no free device slot: the spec's "max volumes attached".
            raise CsiError(Code.RESOURCE_EXHAUSTED, f"Nova refused to attach {vol.id}: {err.message}") from err
        return self._wait_attached(vol.id, node)

    def _wait_attached(self, volume_id: str, node: str) -> Volume:
        def failed(v: Volume) -> str | None:
            if v.status.startswith("error"):
                return f"Cinder reports status {v.status}"
            if v.status == "available" and node not in v.attached_server_ids:
                return "Nova gave the attachment up (the volume is available again); see nova-compute's log"
            return None

        started = time.monotonic()

        def failed_after_start(v: Volume) -> str | None:
            # Right after the request Cinder may still say "available" before Nova reserves the volume.
            return failed(v) if time.monotonic() - started > 5.0 else None

        return self._wait_volume(
            volume_id,
            f"attach of {volume_id} to {node}",
            lambda v: v.status == "in-use" and node in v.attached_server_ids,
            self.config.waits.attach,
            failed_after_start,
        )

    @rpc
    def ControllerUnpublishVolume(
        self, request: csi.ControllerUnpublishVolumeRequest, context: grpc.ServicerContext
    ) -> Any:
        rules.require(request.volume_id, "volume_id")
        volume_id = request.volume_id
        with self.locks.hold(f"volume {volume_id}"):
            try:
                vol = self.cinder.get_volume(volume_id)
            except os_errors.NotFound:
                return csi.ControllerUnpublishVolumeResponse()
            nodes = [request.node_id] if request.node_id else vol.attached_server_ids
            detaching = []
            for node in nodes:
                if node not in vol.attached_server_ids:
                    continue
                try:
                    self.nova.detach_volume(node, volume_id)
                except os_errors.NotFound:
                    continue  # the server is gone, or Nova no longer has it attached
                except os_errors.Conflict:
                    pass  # a detach is already under way: wait for it like for ours
                detaching.append(node)
            if detaching:
                self._wait_volume(
                    volume_id,
                    f"detach of {volume_id} from {', '.join(detaching)}",
                    lambda v: not set(detaching) & set(v.attached_server_ids) and v.status != "detaching",
                    self.config.waits.detach,
                )
            return csi.ControllerUnpublishVolumeResponse()

    # ---- inspection --------------------------------------------------------------------------------------------
    @rpc
    def ValidateVolumeCapabilities(
        self, request: csi.ValidateVolumeCapabilitiesRequest, context: grpc.ServicerContext
    ) -> Any:
        rules.require(request.volume_id, "volume_id")
        rules.require(request.volume_capabilities, "volume_capabilities")
        for cap in request.volume_capabilities:
            rules.check_capability_shape(cap, "volume_capabilities")
        params = rules.parse_volume_parameters(request.parameters)
        vol = self._get_volume(request.volume_id)
        problem = rules.capabilities_problem(request.volume_capabilities, multiattach=vol.multiattach)
        if problem is None and params.volume_type and params.volume_type != vol.volume_type:
            problem = f"the volume's type is {vol.volume_type!r}, not {params.volume_type!r}"
        if problem:
            return csi.ValidateVolumeCapabilitiesResponse(message=problem)
        confirmed = csi.ValidateVolumeCapabilitiesResponse.Confirmed(
            volume_context=request.volume_context,
            volume_capabilities=request.volume_capabilities,
            parameters=request.parameters,
        )
        return csi.ValidateVolumeCapabilitiesResponse(confirmed=confirmed)

    @rpc
    def ListVolumes(self, request: csi.ListVolumesRequest, context: grpc.ServicerContext) -> Any:
        vols, next_token = self._page(self.cinder.list_volumes, request.max_entries, request.starting_token)
        entries = [
            csi.ListVolumesResponse.Entry(
                volume=self._csi_volume(v),
                status=csi.ListVolumesResponse.VolumeStatus(published_node_ids=v.attached_server_ids),
            )
            for v in vols
        ]
        return csi.ListVolumesResponse(entries=entries, next_token=next_token)

    @rpc
    def ControllerGetVolume(self, request: csi.ControllerGetVolumeRequest, context: grpc.ServicerContext) -> Any:
        rules.require(request.volume_id, "volume_id")
        vol = self._get_volume(request.volume_id)
        status = csi.ControllerGetVolumeResponse.VolumeStatus(published_node_ids=vol.attached_server_ids)
        return csi.ControllerGetVolumeResponse(volume=self._csi_volume(vol), status=status)

    @rpc
    def GetCapacity(self, request: csi.GetCapacityRequest, context: grpc.ServicerContext) -> Any:
        """What the project's Cinder quota still allows (gigabytes and volume count). Cinder tells a
        non-admin nothing about backend pools, so the quota is the one figure it can always answer; an
        unlimited quota is reported as the largest size (Kubernetes then never blocks on capacity)."""
        for cap in request.volume_capabilities:
            rules.check_capability_shape(cap, "volume_capabilities")
        rules.parse_volume_parameters(request.parameters)
        if request.HasField("accessible_topology"):
            zone = request.accessible_topology.segments.get(rules.TOPOLOGY_KEY)
            if zone and zone not in self._known_zones():
                return csi.GetCapacityResponse(available_capacity=0)
        limits = self.cinder.limits()
        unlimited = (1 << 63) - 1
        if 0 <= limits.max_volumes <= limits.used_volumes:
            return csi.GetCapacityResponse(available_capacity=0)
        if limits.max_gigabytes < 0:
            return csi.GetCapacityResponse(available_capacity=unlimited)
        free = max(0, limits.max_gigabytes - max(limits.used_gigabytes, 0))
        return csi.GetCapacityResponse(available_capacity=rules.gib_to_bytes(free))

    @rpc
    def ControllerGetCapabilities(
        self, request: csi.ControllerGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> Any:
        caps = [csi.ControllerServiceCapability(rpc=RPC(type=t)) for t in CAPABILITIES]
        return csi.ControllerGetCapabilitiesResponse(capabilities=caps)

    # ---- expansion ---------------------------------------------------------------------------------------------
    @rpc
    def ControllerExpandVolume(self, request: csi.ControllerExpandVolumeRequest, context: grpc.ServicerContext) -> Any:
        rules.require(request.volume_id, "volume_id")
        if not request.HasField("capacity_range"):
            raise CsiError(Code.INVALID_ARGUMENT, "capacity_range is required")
        size = rules.size_for(request.capacity_range)
        block = request.HasField("volume_capability") and request.volume_capability.HasField("block")
        if request.HasField("volume_capability"):
            rules.check_capability_shape(request.volume_capability)
        with self.locks.hold(f"volume {request.volume_id}"):
            vol = self._get_volume(request.volume_id)
            if vol.size_gib < size:
                try:
                    self.cinder.extend_volume(vol.id, size)
                except os_errors.BadRequest as err:
                    raise CsiError(
                        Code.FAILED_PRECONDITION, f"Cinder refused to extend {vol.id}: {err.message}"
                    ) from err

                def failed(v: Volume) -> str | None:
                    return f"Cinder reports status {v.status}" if v.status.startswith("error") else None

                vol = self._wait_volume(
                    vol.id,
                    f"extension of {vol.id} to {size} GiB",
                    lambda v: v.size_gib >= size and v.status in ("available", "in-use"),
                    self.config.waits.extend,
                    failed,
                )
            return csi.ControllerExpandVolumeResponse(
                capacity_bytes=rules.gib_to_bytes(vol.size_gib), node_expansion_required=not block
            )
