"""Cinder CSI driver: time and OpenStack API calls per CreateVolume, ControllerPublishVolume and NodeStageVolume,
then N volumes created and attached concurrently (total time, errors).

Set-up (printed with the results):
- The project's OpenStack test bed must be up (tests/openstack/testbed/up.sh): Keystone, Cinder with its
  fake volume driver (real API, scheduler and attachments; no disk), Nova with the fake virt driver and
  Placement, all on this machine. So Cinder and Nova API and scheduling latency is real, the storage back
  end and the hypervisor take no time: the numbers are the driver's and the control plane's share.
- The driver (Identity, Controller, Node) runs in this process behind a real unix-socket gRPC server, with
  its own connection from clouds.yaml (`--cloud`, default the application credential); RPCs are issued by
  a gRPC client over the socket. API calls are read from the driver's own counters
  (openstack_api_requests_total) before and after each RPC.
- NodeStageVolume runs on a loop device presented as by-id/virtio-<serial> (root needed): blkid, mkfs.ext4
  and mount are real; it makes no OpenStack call by design.
- The concurrent phase creates N volumes and attaches each to one of two Nova servers, N threads at once,
  and then detaches and deletes them the same way.

Usage: python benchmarks/csi.py [--rounds 10] [--concurrent 20] [--cloud testbed-appcred]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import openstack

from stackway.openstack.clients.blockstorage import CinderClient
from stackway.openstack.clients.calls import call_counts
from stackway.openstack.clients.compute import NovaClient
from stackway.openstack.clients.connection import connect
from stackway.openstack.csi.controller import ControllerServicer
from stackway.openstack.csi.host import NodeHost
from stackway.openstack.csi.node import NodeConfig, NodeServicer
from stackway.openstack.csi.proto import csi_pb2 as csi
from stackway.openstack.csi.proto import csi_pb2_grpc as csi_grpc
from stackway.openstack.csi.server import CsiServer
from stackway.openstack.csi.service import IdentityServicer
from stackway.service import configure_logging

GIB = 1 << 30
CAP = csi.VolumeCapability(
    access_mode=csi.VolumeCapability.AccessMode(mode=1), mount=csi.VolumeCapability.MountVolume()
)


def calls_total() -> float:
    return sum(call_counts().values())


def measured(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, seconds, OpenStack API calls) of one RPC; only valid while nothing else runs."""
    before, started = calls_total(), time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started, calls_total() - before


def summary(name: str, seconds: list[float], calls: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return (
        f"{name:<24} n={len(ms):<3} median {statistics.median(ms):7.1f} ms  p90 {p90:7.1f} ms  "
        f"max {ms[-1]:7.1f} ms  API calls/op median {statistics.median(calls):.0f} (min {min(calls):.0f}, "
        f"max {max(calls):.0f})"
    )


@contextlib.contextmanager
def servers(conn: Any, count: int) -> Iterator[list[str]]:
    flavor = conn.compute.find_flavor("testbed.tiny", ignore_missing=False)
    image = conn.image.find_image("testbed-image", ignore_missing=False)
    tag = uuid.uuid4().hex[:6]
    made = [
        conn.compute.create_server(
            name=f"csi-bench-{tag}-{i}",
            flavor_id=flavor.id,
            image_id=image.id,
            networks="none",
            availability_zone="nova",
        )
        for i in range(count)
    ]
    try:
        for server in made:
            conn.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"], interval=0.5, wait=120)
        yield [s.id for s in made]
    finally:
        for server in made:
            with contextlib.suppress(Exception):
                conn.compute.delete_server(server)


@contextlib.contextmanager
def loop_disk(by_id: Path, volume_id: str, root: Path) -> Iterator[str]:
    backing = root / f"{volume_id}.img"
    backing.touch()
    os.truncate(backing, GIB)
    device = subprocess.run(["losetup", "--find", "--show", str(backing)], check=True, capture_output=True, text=True)
    dev = device.stdout.strip()
    (by_id / f"virtio-{volume_id[:20]}").symlink_to(dev)
    try:
        yield dev
    finally:
        subprocess.run(["umount", "-l", str(root / "stage" / volume_id)], check=False, capture_output=True)
        subprocess.run(["losetup", "-d", dev], check=False, capture_output=True)
        backing.unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="sequential RPCs measured per kind")
    parser.add_argument("--concurrent", type=int, default=20, help="volumes created and attached at once")
    parser.add_argument("--cloud", default="testbed-appcred")
    parser.add_argument(
        "--clouds-yaml", default=os.environ.get("OS_CLIENT_CONFIG_FILE", "/tmp/stackway-testbed/clouds.yaml")
    )
    args = parser.parse_args()
    os.environ["OS_CLIENT_CONFIG_FILE"] = args.clouds_yaml
    configure_logging("warning")
    warnings.simplefilter("ignore")  # openstacksdk's deprecation notices
    # keystoneauth's HTTP pool keeps 10 connections per host; with more threads urllib3 says so on each call.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    admin = openstack.connect(cloud="testbed-admin")
    work = Path(tempfile.mkdtemp(prefix="csi-bench-", dir="/tmp"))
    by_id = work / "by-id"
    by_id.mkdir()
    (work / "stage").mkdir()

    with servers(admin, 2) as nodes:
        conn = connect(args.cloud)
        controller = ControllerServicer(CinderClient(conn), NovaClient(conn))
        node = NodeServicer(NodeConfig(node_id=nodes[0], availability_zone="nova"), NodeHost(by_id_dir=by_id))
        endpoint = f"unix://{work}/csi.sock"
        server = CsiServer(
            endpoint,
            IdentityServicer("cinder.csi.openstack.org", controller=True, topology=True),
            controller,
            node,
            workers=64,
        )
        server.start()
        channel = grpc.insecure_channel(endpoint)
        stub = csi_grpc.ControllerStub(channel)  # type: ignore[no-untyped-call]
        node_stub = csi_grpc.NodeStub(channel)  # type: ignore[no-untyped-call]
        volumes: list[str] = []
        try:
            print(
                f"set-up: {os.cpu_count()} CPUs; test bed Cinder fake driver + Nova fake virt driver on this machine; "
                f"cloud {args.cloud}; driver in-process behind a unix socket; {args.rounds} rounds; "
                f"{args.concurrent} concurrent volumes on 2 servers"
            )
            create_s, create_c, pub_s, pub_c, stage_s, stage_c = [], [], [], [], [], []
            root_ok = os.geteuid() == 0
            for _ in range(args.rounds):
                request = csi.CreateVolumeRequest(
                    name=f"bench-{uuid.uuid4()}",
                    capacity_range=csi.CapacityRange(required_bytes=GIB),
                    volume_capabilities=[CAP],
                )
                response, secs, calls = measured(lambda r=request: stub.CreateVolume(r, timeout=300))
                vid = response.volume.volume_id
                volumes.append(vid)
                create_s.append(secs)
                create_c.append(calls)
                publish = csi.ControllerPublishVolumeRequest(volume_id=vid, node_id=nodes[0], volume_capability=CAP)
                context, secs, calls = measured(lambda p=publish: stub.ControllerPublishVolume(p, timeout=300))
                pub_s.append(secs)
                pub_c.append(calls)
                if root_ok:
                    with loop_disk(by_id, vid, work):
                        staging = work / "stage" / vid
                        staging.mkdir()
                        stage = csi.NodeStageVolumeRequest(
                            volume_id=vid,
                            publish_context=context.publish_context,
                            staging_target_path=str(staging),
                            volume_capability=CAP,
                        )
                        _, secs, calls = measured(lambda s=stage: node_stub.NodeStageVolume(s, timeout=120))
                        stage_s.append(secs)
                        stage_c.append(calls)
                        node_stub.NodeUnstageVolume(
                            csi.NodeUnstageVolumeRequest(volume_id=vid, staging_target_path=str(staging))
                        )
                stub.ControllerUnpublishVolume(
                    csi.ControllerUnpublishVolumeRequest(volume_id=vid, node_id=nodes[0]), timeout=300
                )
            print(summary("CreateVolume (1 GiB)", create_s, create_c))
            print(summary("ControllerPublishVolume", pub_s, pub_c))
            if stage_s:
                print(summary("NodeStageVolume (mkfs)", stage_s, stage_c))
            else:
                print("NodeStageVolume: skipped (needs root for loop devices)")

            # Concurrent: N volumes created and attached at once, spread over both servers.
            def create_and_attach(i: int) -> str:
                vol = stub.CreateVolume(
                    csi.CreateVolumeRequest(name=f"bench-c-{uuid.uuid4()}", volume_capabilities=[CAP]), timeout=600
                ).volume
                volumes.append(vol.volume_id)
                stub.ControllerPublishVolume(
                    csi.ControllerPublishVolumeRequest(
                        volume_id=vol.volume_id, node_id=nodes[i % 2], volume_capability=CAP
                    ),
                    timeout=600,
                )
                return vol.volume_id

            def detach_and_delete(vid: str) -> None:
                stub.ControllerUnpublishVolume(csi.ControllerUnpublishVolumeRequest(volume_id=vid), timeout=600)
                stub.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid), timeout=600)

            for label, work_fn, items in (("create+attach", create_and_attach, list(range(args.concurrent))),):
                before, started = calls_total(), time.perf_counter()
                with ThreadPoolExecutor(max_workers=args.concurrent) as pool:
                    futures = [pool.submit(work_fn, item) for item in items]
                    errors = [f.exception() for f in futures if f.exception() is not None]
                elapsed = time.perf_counter() - started
                done = [f.result() for f in futures if f.exception() is None]
                print(
                    f"concurrent {label}: {args.concurrent} volumes in {elapsed:.1f} s, {len(errors)} errors, "
                    f"{calls_total() - before:.0f} API calls"
                )
                for err in errors[:5]:
                    print(f"  error: {err}")
            attached = admin.block_storage.volumes(details=True)
            in_use = sum(1 for v in attached if v.id in done and v.status == "in-use")
            print(f"  Cinder after the phase: {in_use}/{len(done)} of them in-use")
            before, started = calls_total(), time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.concurrent) as pool:
                futures = [pool.submit(detach_and_delete, vid) for vid in done]
                errors = [f.exception() for f in futures if f.exception() is not None]
            print(
                f"concurrent detach+delete: {len(done)} volumes in {time.perf_counter() - started:.1f} s, "
                f"{len(errors)} errors, {calls_total() - before:.0f} API calls"
            )
            volumes[:] = [v for v in volumes if v not in done]
        finally:
            for vid in volumes:
                with contextlib.suppress(Exception):
                    stub.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid), timeout=120)
            channel.close()
            server.stop()
            subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
