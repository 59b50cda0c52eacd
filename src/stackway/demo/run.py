"""`stackway demo`: a canary release you can watch.

Two demo backends (checkout-v1 and checkout-v2) sit behind one Gateway; the HTTPRoute sends 90 % to v1
and 10 % to the canary. A load loop sends requests through Envoy and a live table shows where the last
second of traffic went. Halfway through, the demo promotes the canary to 50 % by rewriting the route on
disk, exactly as a user would, and the table follows within milliseconds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from stackway.demo.echo import start_echo
from stackway.demo.manifests import NAMESPACE, demo_manifests
from stackway.standalone import Standalone, StandaloneConfig, configure_logging

BACKENDS = ("checkout-v1", "checkout-v2")
WINDOW_S = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_route(directory: Path, port: int, backends: dict[str, int], weights: dict[str, int]) -> Path:
    path = directory / "demo.yaml"
    tmp = directory / ".demo.yaml.tmp"
    tmp.write_text(yaml.safe_dump_all(demo_manifests(port, backends, weights), sort_keys=False))
    tmp.replace(path)  # atomic: the watcher never sees half a file
    return path


class Traffic:
    """Sends requests in a loop and remembers, per backend, when its recent answers came."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.recent: collections.deque[tuple[float, str]] = collections.deque()
        self.totals: collections.Counter[str] = collections.Counter()
        self.started = time.monotonic()

    async def run(self, concurrency: int = 4) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            await asyncio.gather(*(self._worker(session) for _ in range(concurrency)))

    async def _worker(self, session: aiohttp.ClientSession) -> None:
        while True:
            try:
                async with session.get(self.url, headers={"Host": "shop.example"}) as resp:
                    body = await resp.json(content_type=None) if resp.status == 200 else {}
                    who = str(body.get("service") or f"HTTP {resp.status}")
            except (aiohttp.ClientError, TimeoutError, ValueError):
                who = "error"
                await asyncio.sleep(0.05)
            now = time.monotonic()
            self.recent.append((now, who))
            self.totals[who] += 1
            while self.recent and self.recent[0][0] < now - WINDOW_S:
                self.recent.popleft()

    def window(self) -> collections.Counter[str]:
        return collections.Counter(who for _, who in self.recent)


def render(traffic: Traffic, weights: dict[str, int], phase: str, route_file: Path, remaining: float | None) -> Group:
    window = traffic.window()
    total = sum(window.values()) or 1
    table = Table(expand=True, title=f"Traffic through the gateway, last {WINDOW_S:.0f} s")
    table.add_column("backend")
    table.add_column("route weight", justify="right")
    table.add_column("req/s", justify="right")
    table.add_column("share", justify="right")
    table.add_column("", ratio=1)
    for name in (*BACKENDS, *sorted(set(window) - set(BACKENDS))):
        share = window.get(name, 0) / total
        colour = "green" if name == BACKENDS[0] else "magenta" if name == BACKENDS[1] else "red"
        table.add_row(
            Text(name, style=colour),
            f"{weights.get(name, 0)}",
            f"{window.get(name, 0) / WINDOW_S:.0f}",
            f"{share:6.1%}",
            Text("█" * round(share * 50), style=colour),
        )
    left = f"  ·  {remaining:.0f}s left" if remaining is not None else "  ·  Ctrl-C to stop"
    header = Text.from_markup(
        f"[bold]{phase}[/bold]{left}\nRoute file: {route_file}  (edit the weights and watch the split follow)"
    )
    total_line = Text(
        f"requests so far: {sum(traffic.totals.values())}, errors: {traffic.totals.get('error', 0)}", style="dim"
    )
    return Group(Panel(header, title="stackway demo: canary release"), table, total_line)


async def run_demo(port: int, duration: float, admin: tuple[str, int]) -> None:
    configure_logging("warning")
    console = Console()
    backend_ports = {name: free_port() for name in BACKENDS}
    echoes = [await start_echo("127.0.0.1", p, f"{name}-7d9f8", NAMESPACE, name) for name, p in backend_ports.items()]
    weights = {BACKENDS[0]: 90, BACKENDS[1]: 10}
    with tempfile.TemporaryDirectory(prefix="stackway-demo-") as tmp:
        directory = Path(tmp)
        route_file = write_route(directory, port, backend_ports, weights)
        gateway = Standalone(
            StandaloneConfig(
                directory=directory,
                address="127.0.0.1",
                admin=admin,
                xds=("127.0.0.1", free_port()),
                envoy_admin=("127.0.0.1", free_port()),
                log_level="warning",
            )
        )
        with console.status("Starting the control plane and Envoy..."):
            await gateway.start()
            await gateway.cache.wait_acked(gateway.control.snapshot.version, timeout=30)
        console.print(
            f"Gateway listening on [bold]http://127.0.0.1:{port}/[/bold]; "
            f"admin API on http://{admin[0]}:{admin[1]}/api/status"
        )
        traffic = Traffic(f"http://127.0.0.1:{port}/cart")
        load = asyncio.create_task(traffic.run())
        started = time.monotonic()
        phase = "Canary: 90 % to v1, 10 % to v2"
        promoted = False
        try:
            with Live(console=console, refresh_per_second=8) as live:
                while True:
                    elapsed = time.monotonic() - started
                    if duration and elapsed >= duration:
                        break
                    if duration and not promoted and elapsed >= duration / 2:
                        weights = {BACKENDS[0]: 50, BACKENDS[1]: 50}
                        write_route(directory, port, backend_ports, weights)
                        phase, promoted = "Canary promoted to 50 % (route file rewritten)", True
                    remaining = duration - elapsed if duration else None
                    live.update(render(traffic, weights, phase, route_file, remaining))
                    await asyncio.sleep(0.125)
        finally:
            load.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load
            await gateway.stop()
            for echo in echoes:
                await echo.close()
    totals = traffic.totals
    console.print(
        f"Done: {sum(totals.values())} requests, " + ", ".join(f"{k}: {v}" for k, v in sorted(totals.items()))
    )
