"""`stackway csi` refuses what cannot work before it binds a socket, naming the option to fix, and serves
Identity and Node on the socket it was given."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from stackway.cli import app
from stackway.openstack.csi.proto import csi_pb2 as csi
from stackway.openstack.csi.proto import csi_pb2_grpc as csi_grpc
from stackway.openstack.csi.server import socket_path

NO_CLOUD = {"OS_CLOUD": None, "CSI_ENDPOINT": None, "NODE_ID": None}


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["--mode", "controller"], "--os-cloud"),
        (["--mode", "everything"], "--mode"),
        (
            ["--mode", "node", "--node-id", "n1", "--availability-zone", "", "--endpoint", "tcp://127.0.0.1:1"],
            "--endpoint",
        ),
        (["--mode", "node", "--node-id", "n1", "--availability-zone", "", "--endpoint", "relative.sock"], "--endpoint"),
    ],
)
def test_refusals_name_the_option(args: list[str], hint: str) -> None:
    result = CliRunner().invoke(app, ["csi", *args], env=NO_CLOUD)
    assert result.exit_code == 2, result.output
    assert hint in result.output


def test_endpoints() -> None:
    assert socket_path("unix:///csi/csi.sock") == "/csi/csi.sock"
    assert socket_path("unix:/csi/csi.sock") == "/csi/csi.sock"
    assert socket_path("/csi/csi.sock") == "/csi/csi.sock"


def test_node_mode_serves_identity_and_node_until_sigterm() -> None:
    sock_dir = Path(tempfile.mkdtemp(prefix="csi-cli-", dir="/tmp"))
    endpoint = f"unix://{sock_dir}/csi.sock"
    args = [sys.executable, "-m", "stackway.cli", "csi", "--mode", "node", "--endpoint", endpoint]
    args += ["--node-id", "server-1", "--availability-zone", "az1", "--max-volumes-per-node", "24"]
    env = {k: v for k, v in os.environ.items() if k not in NO_CLOUD}
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with grpc.insecure_channel(endpoint) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            identity = csi_grpc.IdentityStub(channel)  # type: ignore[no-untyped-call]
            node = csi_grpc.NodeStub(channel)  # type: ignore[no-untyped-call]
            assert identity.GetPluginInfo(csi.GetPluginInfoRequest()).name == "cinder.csi.openstack.org"
            info = node.NodeGetInfo(csi.NodeGetInfoRequest())
            assert (info.node_id, info.max_volumes_per_node) == ("server-1", 24)
            assert dict(info.accessible_topology.segments) == {"topology.cinder.csi.openstack.org/zone": "az1"}
            controller = csi_grpc.ControllerStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.RpcError) as info_err:
                controller.ControllerGetCapabilities(csi.ControllerGetCapabilitiesRequest())
            assert info_err.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        deadline = time.monotonic() + 5
        while (sock_dir / "csi.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not (sock_dir / "csi.sock").exists()  # the socket is removed on the way out
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
        shutil.rmtree(sock_dir, ignore_errors=True)
