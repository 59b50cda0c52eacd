"""The sanity suite's Identity and Controller groups (csi-sanity's, and stricter), over the CSI unix socket,
against the test bed's real Keystone, Cinder (fake volume driver: real API, scheduler, attachments) and Nova
(fake virt driver): every volume, attachment and snapshot here exists in Cinder and is checked there."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest

from stackway.openstack.csi.proto import csi_pb2 as csi
from stackway.openstack.csi.rules import GIB, TOPOLOGY_KEY

from .conftest import Cleanup, Driver, Mode, block_cap, code_of, mount_cap, rpc_error, serve

RPC = csi.ControllerServiceCapability.RPC
Code = grpc.StatusCode
MISSING = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"  # a well-formed ID nothing has


def name() -> str:
    return f"csi-sanity-{uuid.uuid4().hex[:12]}"


def create(
    driver: Driver,
    cleanup: Cleanup,
    vol_name: str | None = None,
    *,
    required: int = 0,
    limit: int = 0,
    caps: list[csi.VolumeCapability] | None = None,
    params: dict[str, str] | None = None,
    source: csi.VolumeContentSource | None = None,
    topology: csi.TopologyRequirement | None = None,
) -> csi.Volume:
    request = csi.CreateVolumeRequest(
        name=vol_name or name(),
        capacity_range=csi.CapacityRange(required_bytes=required, limit_bytes=limit),
        volume_capabilities=caps or [mount_cap()],
        parameters=params or {},
    )
    if source is not None:
        request.volume_content_source.CopyFrom(source)
    if topology is not None:
        request.accessibility_requirements.CopyFrom(topology)
    volume = driver.controller.CreateVolume(request, timeout=300).volume
    cleanup.volumes.add(volume.volume_id)
    return volume


def publish(driver: Driver, volume_id: str, node: str, cap: csi.VolumeCapability | None = None) -> dict[str, str]:
    response = driver.controller.ControllerPublishVolume(
        csi.ControllerPublishVolumeRequest(volume_id=volume_id, node_id=node, volume_capability=cap or mount_cap()),
        timeout=300,
    )
    return dict(response.publish_context)


def unpublish(driver: Driver, volume_id: str, node: str = "") -> None:
    driver.controller.ControllerUnpublishVolume(
        csi.ControllerUnpublishVolumeRequest(volume_id=volume_id, node_id=node), timeout=300
    )


def zone_req(requisite: list[str], preferred: list[str] | None = None) -> csi.TopologyRequirement:
    return csi.TopologyRequirement(
        requisite=[csi.Topology(segments={TOPOLOGY_KEY: z}) for z in requisite],
        preferred=[csi.Topology(segments={TOPOLOGY_KEY: z}) for z in preferred or []],
    )


# ---- Identity ------------------------------------------------------------------------------------------------
def test_identity(cloud_driver: Driver) -> None:
    info = cloud_driver.identity.GetPluginInfo(csi.GetPluginInfoRequest())
    assert info.name == "cinder.csi.openstack.org"
    assert info.vendor_version
    caps = cloud_driver.identity.GetPluginCapabilities(csi.GetPluginCapabilitiesRequest()).capabilities
    services = {c.service.type for c in caps if c.HasField("service")}
    assert services == {
        csi.PluginCapability.Service.CONTROLLER_SERVICE,
        csi.PluginCapability.Service.VOLUME_ACCESSIBILITY_CONSTRAINTS,
    }
    assert [c.volume_expansion.type for c in caps if c.HasField("volume_expansion")] == [
        csi.PluginCapability.VolumeExpansion.ONLINE
    ]
    assert cloud_driver.identity.Probe(csi.ProbeRequest()).ready.value


def test_controller_capabilities_and_capacity(cloud_driver: Driver) -> None:
    caps = cloud_driver.controller.ControllerGetCapabilities(csi.ControllerGetCapabilitiesRequest()).capabilities
    assert {c.rpc.type for c in caps} >= {
        RPC.CREATE_DELETE_VOLUME,
        RPC.PUBLISH_UNPUBLISH_VOLUME,
        RPC.LIST_VOLUMES,
        RPC.LIST_VOLUMES_PUBLISHED_NODES,
        RPC.GET_CAPACITY,
        RPC.CREATE_DELETE_SNAPSHOT,
        RPC.LIST_SNAPSHOTS,
        RPC.CLONE_VOLUME,
        RPC.EXPAND_VOLUME,
    }
    # The test bed's project quota is unlimited: the driver says so with the largest size.
    capacity = cloud_driver.controller.GetCapacity(csi.GetCapacityRequest(volume_capabilities=[mount_cap()]))
    assert capacity.available_capacity > 1 << 40
    elsewhere = csi.GetCapacityRequest(accessible_topology=csi.Topology(segments={TOPOLOGY_KEY: "no-such-zone"}))
    assert cloud_driver.controller.GetCapacity(elsewhere).available_capacity == 0


# ---- CreateVolume / DeleteVolume -----------------------------------------------------------------------------
def test_create_volume_rounds_up_and_returns_cinders_id(
    cloud_driver: Driver, cleanup: Cleanup, admin_conn: Any
) -> None:
    vol_name = name()
    volume = create(cloud_driver, cleanup, vol_name, required=GIB * 3 // 2)
    assert volume.capacity_bytes == 2 * GIB  # 1.5 GiB asked: 2 GiB given, never 1
    cinder = admin_conn.block_storage.get_volume(volume.volume_id)  # the ID is Cinder's own
    assert cinder.name == vol_name
    assert cinder.size == 2
    assert cinder.status == "available"
    assert cinder.metadata["created-by"] == "cinder.csi.openstack.org"
    assert [dict(t.segments) for t in volume.accessible_topology] == [{TOPOLOGY_KEY: "nova"}]
    again = create(cloud_driver, cleanup, vol_name, required=GIB * 3 // 2)  # idempotent by name
    assert again.volume_id == volume.volume_id
    assert len(list(admin_conn.block_storage.volumes(name=vol_name))) == 1
    err = rpc_error(
        cloud_driver.controller.CreateVolume,
        csi.CreateVolumeRequest(
            name=vol_name, capacity_range=csi.CapacityRange(required_bytes=5 * GIB), volume_capabilities=[mount_cap()]
        ),
    )
    assert err.code() == Code.ALREADY_EXISTS  # type: ignore[attr-defined]
    assert volume.volume_id in err.details()  # type: ignore[attr-defined]


def test_create_volume_sizes_and_topology(cloud_driver: Driver, cleanup: Cleanup) -> None:
    assert create(cloud_driver, cleanup).capacity_bytes == GIB  # no range: Cinder's smallest
    assert create(cloud_driver, cleanup, required=1).capacity_bytes == GIB  # a byte is a whole GiB, not 0
    zoned = create(cloud_driver, cleanup, topology=zone_req(["nova"], ["nova"]))
    assert [dict(t.segments) for t in zoned.accessible_topology] == [{TOPOLOGY_KEY: "nova"}]
    assert (
        create(cloud_driver, cleanup, params={"availability": "nova"}).accessible_topology[0].segments[TOPOLOGY_KEY]
        == "nova"
    )


def test_create_volume_bad_input(cloud_driver: Driver) -> None:
    create_call = cloud_driver.controller.CreateVolume

    def req(**kw: Any) -> csi.CreateVolumeRequest:
        kw.setdefault("name", name())
        kw.setdefault("volume_capabilities", [mount_cap()])
        return csi.CreateVolumeRequest(**kw)

    cases = {
        "no name": (req(name=""), Code.INVALID_ARGUMENT),
        "no capabilities": (req(volume_capabilities=[]), Code.INVALID_ARGUMENT),
        "capability without mode": (req(volume_capabilities=[csi.VolumeCapability()]), Code.INVALID_ARGUMENT),
        "unknown parameter": (req(parameters={"tpye": "x"}), Code.INVALID_ARGUMENT),
        "unknown volume type": (req(parameters={"type": "no-such-type"}), Code.INVALID_ARGUMENT),
        "unknown filesystem": (req(volume_capabilities=[mount_cap(fs="ntfs")]), Code.INVALID_ARGUMENT),
        "multi-node without a type": (
            req(volume_capabilities=[block_cap(Mode.MULTI_NODE_MULTI_WRITER)]),
            Code.INVALID_ARGUMENT,
        ),
        "multi-writer filesystem": (
            req(volume_capabilities=[mount_cap(Mode.MULTI_NODE_MULTI_WRITER)], parameters={"type": "multiattach"}),
            Code.INVALID_ARGUMENT,
        ),
        "multi-node on a plain type": (
            req(volume_capabilities=[block_cap(Mode.MULTI_NODE_MULTI_WRITER)], parameters={"type": "__DEFAULT__"}),
            Code.INVALID_ARGUMENT,
        ),
        "range no GiB fits": (
            req(capacity_range=csi.CapacityRange(required_bytes=GIB + 1, limit_bytes=GIB + 2)),
            Code.OUT_OF_RANGE,
        ),
        "limit under 1 GiB": (req(capacity_range=csi.CapacityRange(limit_bytes=GIB // 2)), Code.OUT_OF_RANGE),
        "negative size": (req(capacity_range=csi.CapacityRange(required_bytes=-1)), Code.INVALID_ARGUMENT),
        "zone Cinder lacks": (req(accessibility_requirements=zone_req(["no-such-zone"])), Code.RESOURCE_EXHAUSTED),
        "availability outside requisite": (
            req(accessibility_requirements=zone_req(["nova"]), parameters={"availability": "az9"}),
            Code.INVALID_ARGUMENT,
        ),
        "missing source snapshot": (
            req(
                volume_content_source=csi.VolumeContentSource(
                    snapshot=csi.VolumeContentSource.SnapshotSource(snapshot_id=MISSING)
                )
            ),
            Code.NOT_FOUND,
        ),
        "missing source volume": (
            req(
                volume_content_source=csi.VolumeContentSource(
                    volume=csi.VolumeContentSource.VolumeSource(volume_id=MISSING)
                )
            ),
            Code.NOT_FOUND,
        ),
    }
    for what, (request, code) in cases.items():
        err = rpc_error(create_call, request)
        assert err.code() == code, (what, err)  # type: ignore[attr-defined]
        assert err.details(), what  # type: ignore[attr-defined]


def test_multiattach_type_allows_multi_node_block(cloud_driver: Driver, cleanup: Cleanup, admin_conn: Any) -> None:
    volume = create(
        cloud_driver, cleanup, caps=[block_cap(Mode.MULTI_NODE_MULTI_WRITER)], params={"type": "multiattach"}
    )
    assert admin_conn.block_storage.get_volume(volume.volume_id).is_multiattach


def test_delete_volume(cloud_driver: Driver, cleanup: Cleanup, admin_conn: Any) -> None:
    volume = create(cloud_driver, cleanup)
    delete = cloud_driver.controller.DeleteVolume
    delete(csi.DeleteVolumeRequest(volume_id=volume.volume_id), timeout=60)
    assert admin_conn.block_storage.find_volume(volume.volume_id) is None  # OK means gone from Cinder
    delete(csi.DeleteVolumeRequest(volume_id=volume.volume_id), timeout=60)  # idempotent
    delete(csi.DeleteVolumeRequest(volume_id=MISSING), timeout=60)  # never existed: OK too
    assert code_of(delete, csi.DeleteVolumeRequest()) == Code.INVALID_ARGUMENT


# ---- ListVolumes / ValidateVolumeCapabilities / ControllerGetVolume ------------------------------------------
def test_list_volumes_pages_with_tokens(cloud_driver: Driver, cleanup: Cleanup) -> None:
    made = {create(cloud_driver, cleanup).volume_id for _ in range(3)}
    seen: list[str] = []
    token, pages = "", 0
    while True:
        page = cloud_driver.controller.ListVolumes(csi.ListVolumesRequest(max_entries=2, starting_token=token))
        assert len(page.entries) <= 2
        seen += [e.volume.volume_id for e in page.entries]
        pages += 1
        token = page.next_token
        if not token:
            break
    assert made <= set(seen)
    assert len(seen) == len(set(seen))
    assert pages >= 2
    everything = cloud_driver.controller.ListVolumes(csi.ListVolumesRequest())
    assert made <= {e.volume.volume_id for e in everything.entries}
    assert not everything.next_token
    list_call = cloud_driver.controller.ListVolumes
    assert code_of(list_call, csi.ListVolumesRequest(starting_token="not-a-token")) == Code.ABORTED
    assert code_of(list_call, csi.ListVolumesRequest(starting_token=MISSING)) == Code.ABORTED
    assert code_of(list_call, csi.ListVolumesRequest(max_entries=-1)) == Code.INVALID_ARGUMENT


def test_validate_volume_capabilities(cloud_driver: Driver, cleanup: Cleanup) -> None:
    volume = create(cloud_driver, cleanup)
    validate = cloud_driver.controller.ValidateVolumeCapabilities
    ok = validate(csi.ValidateVolumeCapabilitiesRequest(volume_id=volume.volume_id, volume_capabilities=[mount_cap()]))
    assert list(ok.confirmed.volume_capabilities) == [mount_cap()]
    multi = validate(
        csi.ValidateVolumeCapabilitiesRequest(
            volume_id=volume.volume_id, volume_capabilities=[block_cap(Mode.MULTI_NODE_MULTI_WRITER)]
        )
    )
    assert not multi.HasField("confirmed")
    assert "multi-attach" in multi.message
    assert (
        code_of(validate, csi.ValidateVolumeCapabilitiesRequest(volume_id=MISSING, volume_capabilities=[mount_cap()]))
        == Code.NOT_FOUND
    )
    assert code_of(validate, csi.ValidateVolumeCapabilitiesRequest(volume_capabilities=[mount_cap()])) == (
        Code.INVALID_ARGUMENT
    )
    assert code_of(validate, csi.ValidateVolumeCapabilitiesRequest(volume_id=volume.volume_id)) == (
        Code.INVALID_ARGUMENT
    )


# ---- ControllerPublish / ControllerUnpublish -----------------------------------------------------------------
def test_publish_attaches_through_nova(
    cloud_driver: Driver, cleanup: Cleanup, nodes: list[str], admin_conn: Any
) -> None:
    node_a, node_b = nodes
    volume = create(cloud_driver, cleanup)
    vid = volume.volume_id
    context = publish(cloud_driver, vid, node_a)
    assert context["serial"] == vid[:20]
    cinder = admin_conn.block_storage.get_volume(vid)
    assert cinder.status == "in-use"
    assert [a["server_id"] for a in cinder.attachments] == [node_a]
    assert vid in [a.volume_id for a in admin_conn.compute.volume_attachments(node_a)]
    assert publish(cloud_driver, vid, node_a) == context  # idempotent
    err = rpc_error(
        cloud_driver.controller.ControllerPublishVolume,
        csi.ControllerPublishVolumeRequest(volume_id=vid, node_id=node_b, volume_capability=mount_cap()),
    )
    assert err.code() == Code.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert node_a in err.details()  # type: ignore[attr-defined]  # the spec asks to name where it is published
    listed = cloud_driver.controller.ListVolumes(csi.ListVolumesRequest())
    assert [list(e.status.published_node_ids) for e in listed.entries if e.volume.volume_id == vid] == [[node_a]]
    got = cloud_driver.controller.ControllerGetVolume(csi.ControllerGetVolumeRequest(volume_id=vid))
    assert list(got.status.published_node_ids) == [node_a]
    err = rpc_error(cloud_driver.controller.DeleteVolume, csi.DeleteVolumeRequest(volume_id=vid))
    assert err.code() == Code.FAILED_PRECONDITION  # type: ignore[attr-defined]  # still attached
    unpublish(cloud_driver, vid, node_b)  # not attached there: OK
    unpublish(cloud_driver, vid, node_a)
    cinder = admin_conn.block_storage.get_volume(vid)
    assert cinder.status == "available"
    assert not cinder.attachments
    unpublish(cloud_driver, vid, node_a)  # idempotent
    unpublish(cloud_driver, MISSING, node_a)  # no such volume: it is not published anywhere
    unpublish(cloud_driver, vid, MISSING)  # no such node: likewise


def test_publish_bad_input(cloud_driver: Driver, cleanup: Cleanup, nodes: list[str]) -> None:
    volume = create(cloud_driver, cleanup)
    call = cloud_driver.controller.ControllerPublishVolume

    def req(**kw: Any) -> csi.ControllerPublishVolumeRequest:
        return csi.ControllerPublishVolumeRequest(**kw)

    vid, node = volume.volume_id, nodes[0]
    assert code_of(call, req(node_id=node, volume_capability=mount_cap())) == Code.INVALID_ARGUMENT
    assert code_of(call, req(volume_id=vid, volume_capability=mount_cap())) == Code.INVALID_ARGUMENT
    assert code_of(call, req(volume_id=vid, node_id=node)) == Code.INVALID_ARGUMENT
    assert code_of(call, req(volume_id=MISSING, node_id=node, volume_capability=mount_cap())) == Code.NOT_FOUND
    assert code_of(call, req(volume_id=vid, node_id=MISSING, volume_capability=mount_cap())) == Code.NOT_FOUND
    multi = req(volume_id=vid, node_id=node, volume_capability=block_cap(Mode.MULTI_NODE_MULTI_WRITER))
    assert code_of(call, multi) == Code.INVALID_ARGUMENT  # not a multi-attach volume
    unpublish_call = cloud_driver.controller.ControllerUnpublishVolume
    assert code_of(unpublish_call, csi.ControllerUnpublishVolumeRequest(node_id=node)) == Code.INVALID_ARGUMENT


def test_multiattach_volume_is_published_to_two_nodes(
    cloud_driver: Driver, cleanup: Cleanup, nodes: list[str], admin_conn: Any
) -> None:
    cap = block_cap(Mode.MULTI_NODE_MULTI_WRITER)
    volume = create(cloud_driver, cleanup, caps=[cap], params={"type": "multiattach"})
    for node in nodes:
        publish(cloud_driver, volume.volume_id, node, cap)
    got = cloud_driver.controller.ControllerGetVolume(csi.ControllerGetVolumeRequest(volume_id=volume.volume_id))
    assert sorted(got.status.published_node_ids) == sorted(nodes)
    unpublish(cloud_driver, volume.volume_id)  # no node: unpublished from every node
    cinder = admin_conn.block_storage.get_volume(volume.volume_id)
    assert cinder.status == "available"
    assert not cinder.attachments


def test_attach_limit_per_node(testbed: Any, cleanup: Cleanup, nodes: list[str]) -> None:
    from .conftest import make_controller

    with serve(controller=make_controller(testbed, max_volumes_per_node=1)) as limited:
        first, second = create(limited, cleanup), create(limited, cleanup)
        publish(limited, first.volume_id, nodes[1])
        try:
            err = rpc_error(
                limited.controller.ControllerPublishVolume,
                csi.ControllerPublishVolumeRequest(
                    volume_id=second.volume_id, node_id=nodes[1], volume_capability=mount_cap()
                ),
            )
            assert err.code() == Code.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        finally:
            unpublish(limited, first.volume_id, nodes[1])


# ---- snapshots and clones ------------------------------------------------------------------------------------
def test_snapshot_lifecycle_and_restore(cloud_driver: Driver, cleanup: Cleanup, admin_conn: Any) -> None:
    source = create(cloud_driver, cleanup, required=2 * GIB)
    snap_name = name()
    request = csi.CreateSnapshotRequest(source_volume_id=source.volume_id, name=snap_name)
    snapshot = cloud_driver.controller.CreateSnapshot(request, timeout=300).snapshot
    cleanup.snapshots.add(snapshot.snapshot_id)
    assert snapshot.ready_to_use
    assert snapshot.source_volume_id == source.volume_id
    assert snapshot.size_bytes == 2 * GIB
    assert snapshot.creation_time.seconds > 0
    assert admin_conn.block_storage.get_snapshot(snapshot.snapshot_id).name == snap_name
    assert cloud_driver.controller.CreateSnapshot(request, timeout=300).snapshot.snapshot_id == snapshot.snapshot_id
    other = create(cloud_driver, cleanup)
    err = rpc_error(
        cloud_driver.controller.CreateSnapshot,
        csi.CreateSnapshotRequest(source_volume_id=other.volume_id, name=snap_name),
    )
    assert err.code() == Code.ALREADY_EXISTS  # type: ignore[attr-defined]

    listing = cloud_driver.controller.ListSnapshots
    by_id = listing(csi.ListSnapshotsRequest(snapshot_id=snapshot.snapshot_id)).entries
    assert [e.snapshot.snapshot_id for e in by_id] == [snapshot.snapshot_id]
    by_source = listing(csi.ListSnapshotsRequest(source_volume_id=source.volume_id)).entries
    assert [e.snapshot.snapshot_id for e in by_source] == [snapshot.snapshot_id]
    assert not listing(csi.ListSnapshotsRequest(snapshot_id=MISSING)).entries
    assert not listing(csi.ListSnapshotsRequest(snapshot_id="nonsense")).entries
    assert snapshot.snapshot_id in {e.snapshot.snapshot_id for e in listing(csi.ListSnapshotsRequest()).entries}
    assert code_of(listing, csi.ListSnapshotsRequest(starting_token="x")) == Code.ABORTED

    from_snapshot = csi.VolumeContentSource(
        snapshot=csi.VolumeContentSource.SnapshotSource(snapshot_id=snapshot.snapshot_id)
    )
    restored = create(cloud_driver, cleanup, source=from_snapshot)  # no size asked: the snapshot's
    assert restored.capacity_bytes == 2 * GIB
    assert restored.content_source.snapshot.snapshot_id == snapshot.snapshot_id
    assert admin_conn.block_storage.get_volume(restored.volume_id).snapshot_id == snapshot.snapshot_id
    larger = create(cloud_driver, cleanup, required=3 * GIB, source=from_snapshot)
    assert larger.capacity_bytes == 3 * GIB
    err = rpc_error(
        cloud_driver.controller.CreateVolume,
        csi.CreateVolumeRequest(
            name=name(),
            capacity_range=csi.CapacityRange(required_bytes=GIB),
            volume_capabilities=[mount_cap()],
            volume_content_source=from_snapshot,
        ),
    )
    assert err.code() == Code.OUT_OF_RANGE  # type: ignore[attr-defined]  # smaller than the snapshot

    delete = cloud_driver.controller.DeleteSnapshot
    delete(csi.DeleteSnapshotRequest(snapshot_id=snapshot.snapshot_id), timeout=120)
    assert admin_conn.block_storage.find_snapshot(snapshot.snapshot_id) is None
    delete(csi.DeleteSnapshotRequest(snapshot_id=snapshot.snapshot_id), timeout=120)  # idempotent
    assert code_of(delete, csi.DeleteSnapshotRequest()) == Code.INVALID_ARGUMENT
    cloud_driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=source.volume_id), timeout=60)


def test_snapshot_bad_input(cloud_driver: Driver) -> None:
    call = cloud_driver.controller.CreateSnapshot
    assert code_of(call, csi.CreateSnapshotRequest(source_volume_id=MISSING)) == Code.INVALID_ARGUMENT
    assert code_of(call, csi.CreateSnapshotRequest(name=name())) == Code.INVALID_ARGUMENT
    assert code_of(call, csi.CreateSnapshotRequest(name=name(), source_volume_id=MISSING)) == Code.NOT_FOUND
    params = csi.CreateSnapshotRequest(name=name(), source_volume_id=MISSING, parameters={"type": "backup"})
    assert code_of(call, params) == Code.INVALID_ARGUMENT


def test_clone_a_volume(cloud_driver: Driver, cleanup: Cleanup, admin_conn: Any) -> None:
    source = create(cloud_driver, cleanup, required=2 * GIB)
    from_volume = csi.VolumeContentSource(volume=csi.VolumeContentSource.VolumeSource(volume_id=source.volume_id))
    clone = create(cloud_driver, cleanup, source=from_volume)
    assert clone.capacity_bytes == 2 * GIB
    assert clone.content_source.volume.volume_id == source.volume_id
    assert admin_conn.block_storage.get_volume(clone.volume_id).source_volume_id == source.volume_id
    err = rpc_error(
        cloud_driver.controller.CreateVolume,
        csi.CreateVolumeRequest(
            name=name(),
            capacity_range=csi.CapacityRange(required_bytes=GIB, limit_bytes=GIB),
            volume_capabilities=[mount_cap()],
            volume_content_source=from_volume,
        ),
    )
    assert err.code() == Code.OUT_OF_RANGE  # type: ignore[attr-defined]


# ---- expansion -----------------------------------------------------------------------------------------------
def test_controller_expand_volume(cloud_driver: Driver, cleanup: Cleanup, nodes: list[str], admin_conn: Any) -> None:
    volume = create(cloud_driver, cleanup)
    expand = cloud_driver.controller.ControllerExpandVolume
    grown = expand(
        csi.ControllerExpandVolumeRequest(
            volume_id=volume.volume_id, capacity_range=csi.CapacityRange(required_bytes=GIB * 3 // 2)
        ),
        timeout=300,
    )
    assert grown.capacity_bytes == 2 * GIB
    assert grown.node_expansion_required
    assert admin_conn.block_storage.get_volume(volume.volume_id).size == 2
    same = expand(
        csi.ControllerExpandVolumeRequest(
            volume_id=volume.volume_id,
            capacity_range=csi.CapacityRange(required_bytes=GIB),
            volume_capability=block_cap(),
        ),
        timeout=300,
    )
    assert same.capacity_bytes == 2 * GIB  # already larger: OK, nothing done
    assert not same.node_expansion_required  # raw block has no filesystem to grow
    publish(cloud_driver, volume.volume_id, nodes[0])  # online: the volume is in use
    online = expand(
        csi.ControllerExpandVolumeRequest(
            volume_id=volume.volume_id, capacity_range=csi.CapacityRange(required_bytes=3 * GIB)
        ),
        timeout=300,
    )
    assert online.capacity_bytes == 3 * GIB
    cinder = admin_conn.block_storage.get_volume(volume.volume_id)
    assert (cinder.size, cinder.status) == (3, "in-use")
    unpublish(cloud_driver, volume.volume_id, nodes[0])
    assert code_of(expand, csi.ControllerExpandVolumeRequest(volume_id=volume.volume_id)) == Code.INVALID_ARGUMENT
    missing = csi.ControllerExpandVolumeRequest(volume_id=MISSING, capacity_range=csi.CapacityRange(required_bytes=GIB))
    assert code_of(expand, missing) == Code.NOT_FOUND
    too_tight = csi.ControllerExpandVolumeRequest(
        volume_id=volume.volume_id, capacity_range=csi.CapacityRange(required_bytes=GIB + 1, limit_bytes=GIB + 2)
    )
    assert code_of(expand, too_tight) == Code.OUT_OF_RANGE


@pytest.mark.parametrize("rpc_name", ["ControllerGetVolume"])
def test_get_volume_of_a_missing_volume(cloud_driver: Driver, rpc_name: str) -> None:
    call = getattr(cloud_driver.controller, rpc_name)
    assert code_of(call, csi.ControllerGetVolumeRequest(volume_id=MISSING)) == Code.NOT_FOUND
    assert code_of(call, csi.ControllerGetVolumeRequest()) == Code.INVALID_ARGUMENT


def test_concurrent_creates_of_one_name_make_one_volume(
    cloud_driver: Driver, cleanup: Cleanup, admin_conn: Any
) -> None:
    """A CO that lost track may send the same CreateVolume twice at once: one volume, never two; the call
    that finds the other in progress answers ABORTED (retry), and a retry returns the same volume."""
    from concurrent.futures import ThreadPoolExecutor

    vol_name = name()
    request = csi.CreateVolumeRequest(name=vol_name, volume_capabilities=[mount_cap()])

    def call() -> str:
        try:
            return str(cloud_driver.controller.CreateVolume(request, timeout=300).volume.volume_id)
        except grpc.RpcError as err:
            return str(err.code())  # type: ignore[attr-defined]

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(lambda _: call(), range(4)))
    ids = {o for o in outcomes if not o.startswith("StatusCode")}
    for vid in ids:
        cleanup.volumes.add(vid)
    assert len(ids) == 1, outcomes
    assert set(outcomes) - ids <= {str(Code.ABORTED)}, outcomes
    assert [v.id for v in admin_conn.block_storage.volumes(name=vol_name)] == list(ids)
    assert create(cloud_driver, cleanup, vol_name).volume_id in ids
