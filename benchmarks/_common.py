"""Shared set-up for benchmarks: free ports, echo backends in a thread, a `stackway up` subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from stackway.demo.echo import start_echo
from stackway.demo.manifests import gateway, gateway_class, http_route, service_with_endpoints


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EchoThread:
    """Echo backends on their own event loop, so a blocking benchmark loop can share the process."""

    def __init__(self, names: list[str], namespace: str = "bench") -> None:
        self.ports = {name: free_port() for name in names}
        self.loop = asyncio.new_event_loop()
        self._servers: list[Any] = []
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            for name, port in self.ports.items():
                self._servers.append(
                    self.loop.run_until_complete(start_echo("127.0.0.1", port, f"{name}-0", namespace, name))
                )
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def http_get(
    host: str, port: int, path: str, host_header: str = "bench.local", timeout: float = 2.0
) -> tuple[int, bytes]:
    """One request on a fresh connection (so every probe sees the newest route), TCP_NODELAY."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, body


def service_of(body: bytes) -> str | None:
    with contextlib.suppress(ValueError):
        return str(json.loads(body).get("service"))
    return None


def write_atomic(path: Path, docs: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    os.replace(tmp, path)


@contextlib.contextmanager
def stackway_up(directory: Path, *extra: str) -> Iterator[dict[str, int]]:
    ports = {"admin": free_port(), "xds": free_port(), "envoy_admin": free_port()}
    cmd = [
        sys.executable,
        "-m",
        "stackway.cli",
        "up",
        str(directory),
        "--address",
        "127.0.0.1",
        "--admin",
        f"127.0.0.1:{ports['admin']}",
        "--xds",
        f"127.0.0.1:{ports['xds']}",
        "--envoy-admin",
        f"127.0.0.1:{ports['envoy_admin']}",
        "--log-level",
        "warning",
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            url = f"http://127.0.0.1:{ports['admin']}/readyz"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"stackway up exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.1)
        else:
            raise RuntimeError("stackway up did not become ready in 60 s")
        ports["pid"] = proc.pid
        yield ports
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def gateway_docs(port: int) -> list[dict[str, Any]]:
    return [gateway_class(), gateway("bench", "bench", port)]


def service_docs(name: str, target_port: int, address: str = "127.0.0.1") -> list[dict[str, Any]]:
    return service_with_endpoints(name, "bench", target_port, address=address)


def route_doc(name: str, path: str, backend: str) -> dict[str, Any]:
    return http_route(name, "bench", "bench", {backend: 1}, path=path)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
