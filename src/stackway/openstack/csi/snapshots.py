"""Snapshots for the CSI Controller (CreateSnapshot, DeleteSnapshot, ListSnapshots) and the marker paging that
ListVolumes shares with ListSnapshots.

A snapshot's CSI name is its Cinder name, which makes CreateSnapshot idempotent with no state of our own, as
CreateVolume is. Mixed into :class:`stackway.openstack.csi.controller.ControllerServicer`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from stackway.openstack.clients import errors as os_errors
from stackway.openstack.clients.blockstorage import BlockStorage, Snapshot, Volume
from stackway.openstack.csi import rules
from stackway.openstack.csi.proto import csi_pb2 as csi
from stackway.openstack.csi.rules import Code, CsiError
from stackway.openstack.csi.service import ControllerConfig, KeyedLocks, rpc, wait_for

#: Cinder's own page limit (osapi_max_limit); a listing without max_entries walks pages of this size.
PAGE = 1000


def _timestamp(text: str) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    if text:
        # Cinder writes UTC without an offset; protobuf reads a naive datetime as UTC.
        ts.FromDatetime(datetime.fromisoformat(text.replace("Z", "+00:00")))
    return ts


class SnapshotRPCs:
    """The snapshot RPCs and the helpers they share with the volume RPCs."""

    cinder: BlockStorage
    config: ControllerConfig
    locks: KeyedLocks

    def _get_volume(self, volume_id: str, what: str = "volume") -> Volume:
        try:
            return self.cinder.get_volume(volume_id)
        except os_errors.NotFound as err:
            raise CsiError(Code.NOT_FOUND, f"{what} {volume_id} does not exist") from err

    @staticmethod
    def _csi_snapshot(snap: Snapshot) -> csi.Snapshot:
        return csi.Snapshot(
            size_bytes=rules.gib_to_bytes(snap.size_gib),
            snapshot_id=snap.id,
            source_volume_id=snap.volume_id,
            creation_time=_timestamp(snap.created_at),
            ready_to_use=snap.status == "available",
        )

    def _page(self, fetch: Any, max_entries: int, token: str) -> tuple[list[Any], str]:
        """One CSI page from Cinder's marker pagination: ask for one entry more than the page to learn
        whether another page follows; a marker Cinder does not know is ABORTED (restart the listing)."""
        rules.check_max_entries(max_entries)
        marker = rules.check_token(token)
        try:
            if max_entries:
                items = list(fetch(max_entries + 1, marker))
                if len(items) > max_entries:
                    return items[:max_entries], items[max_entries - 1].id
                return items, ""
            items, page = [], list(fetch(PAGE, marker))
            while page:
                items += page
                page = list(fetch(PAGE, page[-1].id)) if len(page) == PAGE else []
            return items, ""
        except (os_errors.BadRequest, os_errors.NotFound) as err:
            raise CsiError(Code.ABORTED, f"starting_token {token!r} is no longer valid: {err.message}") from err

    # ---- snapshots ---------------------------------------------------------------------------------------------
    @rpc
    def CreateSnapshot(self, request: csi.CreateSnapshotRequest, context: grpc.ServicerContext) -> Any:
        rules.check_name(request.name)
        rules.require(request.source_volume_id, "source_volume_id")
        params = rules.parse_snapshot_parameters(request.parameters)
        with self.locks.hold(f"snapshot name {request.name}"):
            existing = [s for s in self.cinder.snapshots_named(request.name) if s.status != "deleting"]
            if existing:
                snap = existing[0]
                if snap.volume_id != request.source_volume_id:
                    raise CsiError(
                        Code.ALREADY_EXISTS,
                        f"snapshot {request.name!r} exists as {snap.id} of volume {snap.volume_id}, "
                        f"not of {request.source_volume_id}",
                    )
            else:
                self._get_volume(request.source_volume_id, "source volume")
                try:
                    snap = self.cinder.create_snapshot(
                        volume_id=request.source_volume_id,
                        name=request.name,
                        force=params.force,
                        metadata={"created-by": self.config.driver_name, **params.metadata},
                    )
                except os_errors.BadRequest as err:
                    raise CsiError(
                        Code.FAILED_PRECONDITION,
                        f"Cinder refused the snapshot: {err.message} (an in-use volume needs force-create: 'true')",
                    ) from err
            return csi.CreateSnapshotResponse(snapshot=self._csi_snapshot(self._wait_snapshot(snap)))

    def _wait_snapshot(self, snap: Snapshot) -> Snapshot:
        """Wait until the snapshot is cut; past the deadline answer ready_to_use=false (the CO asks again)."""
        if snap.status == "available":
            return snap
        if snap.status.startswith("error"):
            self.cinder.delete_snapshot(snap.id)
            raise CsiError(Code.INTERNAL, f"snapshot {snap.id} failed in Cinder ({snap.status}); deleted it")
        try:
            return wait_for(
                f"snapshot {snap.id}",
                lambda: self.cinder.get_snapshot(snap.id),
                lambda s: s.status == "available",
                deadline=self.config.waits.snapshot_ready,
                backoff=self.config.waits.backoff,
                failed=lambda s: f"Cinder reports status {s.status}" if s.status.startswith("error") else None,
            )
        except CsiError as err:
            if err.code is Code.DEADLINE_EXCEEDED:
                return self.cinder.get_snapshot(snap.id)
            raise

    @rpc
    def DeleteSnapshot(self, request: csi.DeleteSnapshotRequest, context: grpc.ServicerContext) -> Any:
        rules.require(request.snapshot_id, "snapshot_id")
        snap_id = request.snapshot_id
        with self.locks.hold(f"snapshot {snap_id}"):
            try:
                self.cinder.delete_snapshot(snap_id)
            except os_errors.NotFound:
                return csi.DeleteSnapshotResponse()
            except os_errors.BadRequest as err:
                raise CsiError(
                    Code.FAILED_PRECONDITION, f"snapshot {snap_id} cannot be deleted: {err.message}"
                ) from err

            def gone() -> Snapshot | None:
                try:
                    return self.cinder.get_snapshot(snap_id)
                except os_errors.NotFound:
                    return None

            # Waiting here lets the CO delete the source volume right after: Cinder refuses that while
            # a snapshot of it still exists, even one being deleted.
            wait_for(
                f"deletion of snapshot {snap_id}",
                gone,
                lambda s: s is None,
                deadline=self.config.waits.delete,
                backoff=self.config.waits.backoff,
                failed=lambda s: f"Cinder reports status {s.status}" if s and s.status == "error_deleting" else None,
            )
            return csi.DeleteSnapshotResponse()

    @rpc
    def ListSnapshots(self, request: csi.ListSnapshotsRequest, context: grpc.ServicerContext) -> Any:
        if request.snapshot_id:
            try:
                snaps = (
                    [self.cinder.get_snapshot(request.snapshot_id)] if rules.looks_like_id(request.snapshot_id) else []
                )
            except os_errors.NotFound:
                snaps = []
            snaps = [s for s in snaps if not request.source_volume_id or s.volume_id == request.source_volume_id]
            next_token = ""
        else:
            volume_id = request.source_volume_id or None

            def fetch(limit: int, marker: str | None) -> list[Snapshot]:
                return self.cinder.list_snapshots(limit, marker, volume_id)

            snaps, next_token = self._page(fetch, request.max_entries, request.starting_token)
        # A snapshot still being created is not cut yet, and one in error never will be: neither is listed.
        entries = [
            csi.ListSnapshotsResponse.Entry(snapshot=self._csi_snapshot(s)) for s in snaps if s.status == "available"
        ]
        return csi.ListSnapshotsResponse(entries=entries, next_token=next_token)
