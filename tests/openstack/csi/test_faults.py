"""Cinder and Nova failing under the driver, through a fault-injecting proxy in front of the real services:
each fault reaches the CO as the code it can act on, transient ones are waited out, and an answer lost after
Cinder created the volume leaks nothing (the CO's retry finds the volume by name)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from stackway.openstack.csi.proto import csi_pb2 as csi
from tests.openstack.faultproxy import Fault, FaultProxy

from .conftest import Cleanup, Driver, make_controller, mount_cap, rpc_error, serve

Code = grpc.StatusCode


@pytest.fixture
def faulty(
    testbed: Any, fault_proxy: Callable[[str], FaultProxy], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Driver, FaultProxy, FaultProxy]]:
    """A controller whose Cinder and Nova calls go through fault proxies."""
    cinder, nova = fault_proxy("block-storage"), fault_proxy("compute")
    clouds = testbed.clouds_with_overrides(
        tmp_path / "clouds.yaml", {"block-storage": cinder.url, "compute": nova.url}, api_timeout=20
    )
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    with serve(controller=make_controller(testbed)) as driver:
        yield driver, cinder, nova


def create_request(name: str) -> csi.CreateVolumeRequest:
    return csi.CreateVolumeRequest(name=name, volume_capabilities=[mount_cap()])


def test_a_cinder_outage_is_unavailable_and_a_retry_succeeds(
    faulty: tuple[Driver, FaultProxy, FaultProxy], cleanup: Cleanup, admin_conn: Any
) -> None:
    driver, cinder, _ = faulty
    name = f"csi-fault-{uuid.uuid4().hex[:10]}"
    cinder.inject("POST", r"/volumes$", Fault.status(503, "Service Unavailable"))
    err = rpc_error(driver.controller.CreateVolume, create_request(name))
    assert err.code() == Code.UNAVAILABLE  # type: ignore[attr-defined]
    assert "volume_create" in err.details()  # type: ignore[attr-defined]
    volume = driver.controller.CreateVolume(create_request(name), timeout=300).volume
    cleanup.volumes.add(volume.volume_id)
    assert [v.id for v in admin_conn.block_storage.volumes(name=name)] == [volume.volume_id]


def test_a_lost_answer_leaks_no_volume(
    faulty: tuple[Driver, FaultProxy, FaultProxy], cleanup: Cleanup, admin_conn: Any
) -> None:
    driver, cinder, _ = faulty
    name = f"csi-fault-{uuid.uuid4().hex[:10]}"
    cinder.inject("POST", r"/volumes$", Fault.drop_response())
    err = rpc_error(driver.controller.CreateVolume, create_request(name))
    assert err.code() == Code.UNAVAILABLE  # type: ignore[attr-defined]
    made = [v.id for v in admin_conn.block_storage.volumes(name=name)]
    cleanup.volumes.update(made)
    assert len(made) == 1  # Cinder did create it; the driver could not know
    volume = driver.controller.CreateVolume(create_request(name), timeout=300).volume  # the CO retries
    assert volume.volume_id == made[0]
    assert [v.id for v in admin_conn.block_storage.volumes(name=name)] == made
    assert cinder.count("POST", r"/volumes$") == 1  # found by name: no second create


def test_transient_errors_while_waiting_are_waited_out(
    faulty: tuple[Driver, FaultProxy, FaultProxy], cleanup: Cleanup, nodes: list[str], admin_conn: Any
) -> None:
    driver, cinder, nova = faulty
    cinder.inject("GET", r"/volumes/[0-9a-f-]+$", Fault.status(502, "Bad Gateway"), times=2)
    volume = driver.controller.CreateVolume(create_request(f"csi-fault-{uuid.uuid4().hex[:10]}"), timeout=300).volume
    cleanup.volumes.add(volume.volume_id)
    assert cinder.count("GET", r"/volumes/[0-9a-f-]+$") >= 3
    # Nova busy with the server (409) when asked to attach: ABORTED, and the retry attaches.
    nova.inject("POST", r"/os-volume_attachments$", Fault.status(409, "Cannot attach while the instance is locked"))
    publish = csi.ControllerPublishVolumeRequest(
        volume_id=volume.volume_id, node_id=nodes[0], volume_capability=mount_cap()
    )
    assert rpc_error(driver.controller.ControllerPublishVolume, publish).code() == Code.ABORTED  # type: ignore[attr-defined]
    driver.controller.ControllerPublishVolume(publish, timeout=300)
    assert admin_conn.block_storage.get_volume(volume.volume_id).status == "in-use"
    driver.controller.ControllerUnpublishVolume(
        csi.ControllerUnpublishVolumeRequest(volume_id=volume.volume_id, node_id=nodes[0]), timeout=300
    )
