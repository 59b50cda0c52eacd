"""The Envoy supervisor with a real Envoy: bootstrap accepted by Envoy itself, start/ready, restart after a
crash, graceful drain on stop, several Envoys side by side."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import aiohttp
import pytest
from xds_fixtures import HOST, running_stack, wait_served_by

from stackway.dataplane.bootstrap import render_bootstrap
from stackway.dataplane.envoy import EnvoyError, EnvoyProcess, envoy_binary

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(60)]


def test_binary_is_the_real_executable() -> None:
    """Not the Python console-script wrapper (slower start, and it goes through a contested package)."""
    with open(envoy_binary(), "rb") as f:
        assert f.read(4) == b"\x7fELF"


@pytest.mark.parametrize("delta", [False, True])
def test_bootstrap_is_accepted_by_envoy(delta: bool, tmp_path: Path) -> None:
    bootstrap = render_bootstrap("node-1", "gw", HOST, 18000, HOST, 19000, delta)
    ads = bootstrap["dynamic_resources"]["ads_config"]
    assert ads["api_type"] == ("DELTA_GRPC" if delta else "GRPC")
    assert ads["set_node_on_first_message_only"] is True
    assert bootstrap["admin"]["address"]["socket_address"] == {"address": HOST, "port_value": 19000}
    assert bootstrap["node"] == {"id": "node-1", "cluster": "gw"}
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(bootstrap))
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--use-dynamic-base-id"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_killed_envoy_is_restarted() -> None:
    async with running_stack(True) as stack:
        envoy = stack.envoy
        first_pid = envoy.pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        for _ in range(200):
            if envoy.restart_count == 1 and envoy.pid not in (None, first_pid):
                break
            await asyncio.sleep(0.05)
        assert envoy.restart_count == 1
        assert envoy.pid not in (None, first_pid)
        await envoy.wait_ready(10)
        await wait_served_by(stack.listen_port, "a")
        await stack.cache.wait_acked(stack.cache.snapshot.version, 10)
        assert len(stack.cache.status()["envoys"]) == 1  # the dead Envoy's stream is gone


async def test_stop_drains_connections_then_exits() -> None:
    async with running_stack(False) as stack:
        envoy = stack.envoy
        pid = envoy.pid
        assert pid is not None
        url = f"http://{HOST}:{stack.listen_port}/"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as resp:
                assert resp.status == 200
                assert resp.headers.get("Connection", "").lower() != "close"
            stopping = asyncio.create_task(envoy.stop())
            await asyncio.sleep(0.2)  # inside the drain window
            async with session.get(url) as resp:
                assert resp.status == 200  # still served while draining...
                assert resp.headers.get("Connection", "").lower() == "close"  # ...but told to go away
            await stopping
        assert envoy.pid is None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_two_envoys_side_by_side() -> None:
    async with running_stack(True) as stack:
        second = EnvoyProcess("second", (HOST, stack.server.port), (HOST, 0), delta=False)
        await second.start()
        try:
            assert second.admin_port not in (0, stack.envoy.admin_port)
            await stack.cache.wait_acked(stack.cache.snapshot.version, 10)
            envoys = stack.cache.status()["envoys"]
            assert sorted((e["node_id"], e["stream"]) for e in envoys) == [("second", "sotw"), ("test-delta", "delta")]
        finally:
            await second.stop()
        await stack.cache.notifier.wait_for(lambda: len(stack.cache.status()["envoys"]) == 1, 5)
        assert [e["node_id"] for e in stack.cache.status()["envoys"]] == ["test-delta"]


async def test_start_failure_is_reported_with_envoy_log() -> None:
    envoy = EnvoyProcess("broken", (HOST, 1), (HOST, 0), extra_args=["--no-such-flag"])
    with pytest.raises(EnvoyError, match="exited"):
        await envoy.start()
    assert envoy.pid is None
