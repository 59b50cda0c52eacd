"""xDS fan-out: how long one published snapshot takes to be ACKed by every connected node, and what it costs
the control plane in CPU and memory, at 10 and 100 nodes and 100 / 1,000 routes.

Set-up (printed with the results):
- The control plane (SnapshotCache + XdsServer, grpc.aio, optionally mutual TLS) runs in *this* process and
  does nothing else while measuring; all client load runs in other processes: real Envoys (EnvoyProcess,
  `--concurrency 1`) and, beyond `--real`, simulated nodes (xds_client_sim.py: one connection and one ADS
  stream per node, subscribing and ACKing like Envoy) in `--sim-procs` subprocesses. Server CPU is
  `time.process_time()` of this process (every thread, gRPC's included) over the push; RSS is VmRSS.
- Snapshot: one listener (port 0, so any number of Envoys can hold it), one RouteConfiguration with N routes
  (10 per virtual host), N/10 EDS clusters with one ClusterLoadAssignment each. Every push re-points route 0
  to another cluster: only the RouteConfiguration changes, and it is re-sent whole to every node (SotW and
  Delta alike, it is a single resource).
- Push time: from `cache.set()` until every stream has ACKed the push (each stream's `applied_view` reaches the
  new version, the condition the cache itself uses for make-before-break); afterwards every node is checked
  to be in sync with no NACK. Snapshot building happens before the clock starts.

Usage: python benchmarks/fanout.py [--nodes 10,100] [--routes 100,1000] [--modes delta,sotw] [--real 10]
    [--pushes 20] [--plaintext]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import envoy.extensions.filters.http.router.v3.router_pb2
import envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2  # noqa: F401
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from stackway import certs
from stackway.dataplane.bootstrap import XdsClientTls
from stackway.dataplane.envoy import EnvoyProcess
from stackway.xds.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE, Snapshot
from stackway.xds_server import SnapshotCache
from stackway.xds_server.server import ServerTls, XdsServer
from stackway.xds_server.stream import Stream

HOST = "127.0.0.1"
SERVER_NAME = "stackway.stackway-system.svc"
ADS = {"ads": {}, "resource_api_version": "V3"}
SIM = Path(__file__).with_name("xds_client_sim.py")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- snapshot -------------------------------------------------------------------------------------------------
def _listener() -> Message:
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
        "HttpConnectionManager",
        "stat_prefix": "http",
        "rds": {"route_config_name": "routes", "config_source": ADS},
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    return json_format.ParseDict(
        {
            "name": "http",
            "address": {"socket_address": {"address": HOST, "port_value": 0}},
            "filter_chains": [
                {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
            ],
        },
        listener_pb2.Listener(),
    )


def _routes(routes: int, clusters: int, flip: int) -> Message:
    hosts: list[dict[str, Any]] = []
    for i in range(routes):
        if i % 10 == 0:
            hosts.append({"name": f"h{i // 10}", "domains": [f"h{i // 10}.bench.test"], "routes": []})
        target = (i // 10 + (flip if i == 0 else 0)) % clusters
        hosts[-1]["routes"].append(
            {"match": {"prefix": f"/r{i}/"}, "route": {"cluster": f"c{target}", "timeout": "5s"}, "name": f"r{i}"}
        )
    return json_format.ParseDict({"name": "routes", "virtual_hosts": hosts}, route_pb2.RouteConfiguration())


def build_snapshot(routes: int) -> Snapshot:
    clusters = max(1, routes // 10)
    cluster_msgs = {
        f"c{j}": json_format.ParseDict(
            {"name": f"c{j}", "type": "EDS", "connect_timeout": "1s", "eds_cluster_config": {"eds_config": ADS}},
            cluster_pb2.Cluster(),
        )
        for j in range(clusters)
    }
    cla = {
        f"c{j}": json_format.ParseDict(
            {
                "cluster_name": f"c{j}",
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {"endpoint": {"address": {"socket_address": {"address": HOST, "port_value": 20000 + k}}}}
                            for k in range(2)
                        ]
                    }
                ],
            },
            endpoint_pb2.ClusterLoadAssignment(),
        )
        for j in range(clusters)
    }
    resources: dict[str, dict[str, Message]] = {
        LISTENER: {"http": _listener()},
        ROUTE: {"routes": _routes(routes, clusters, 0)},
        CLUSTER: cluster_msgs,
        ENDPOINT: cla,
    }
    return Snapshot(resources=resources)


# ---- measurement helpers --------------------------------------------------------------------------------------
def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pids: list[int]) -> float:
    """utime + stime of other processes (the clients), to see whether they, not the server, set the pace."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def node_streams(cache: SnapshotCache) -> list[Stream]:
    # Read-only look at the cache's streams: cheap per-stream checks instead of `ready()`, whose cost grows
    # with nodes x resources and would be charged to the very CPU figure measured here.
    return [s for s in cache._streams if s.node_id]


def all_applied(streams: list[Stream], version: str) -> Callable[[], bool]:
    """True once every stream has answered the push of `version` (its clusters, then listeners and routes)."""
    return lambda: all(s.applied_view == version for s in streams)


@dataclass
class Result:
    mode: str
    tls: bool
    routes: int
    real: int
    sim: int
    route_kb: float
    sync_s: float
    push_ms: list[float]
    cpu_ms: list[float]
    client_cpu_ms: float
    rss_mb: float
    rss_delta_mb: float
    envoy_rss_mb: float
    ready_ms: float


@contextlib.asynccontextmanager
async def fleet(
    port: int, real: int, sim: int, delta: bool, pki: Path | None, sim_procs: int
) -> AsyncIterator[tuple[list[EnvoyProcess], list[asyncio.subprocess.Process]]]:
    """Real Envoys (started concurrently) and simulator processes, all connecting to `port`."""
    tls = XdsClientTls(pki / "client.crt", pki / "client.key", pki / "ca.crt", SERVER_NAME) if pki else None
    envoys = [
        EnvoyProcess(f"envoy-{i}", (HOST, port), (HOST, 0), delta=delta, xds_tls=tls, ready_timeout_s=120)
        for i in range(real)
    ]
    sims: list[asyncio.subprocess.Process] = []
    try:
        await asyncio.gather(*(e.start(wait_ready=False) for e in envoys))
        per_proc = [sim // sim_procs + (1 if i < sim % sim_procs else 0) for i in range(sim_procs)]
        for i, count in enumerate(c for c in per_proc if c):
            args = ["--target", f"{HOST}:{port}", "--nodes", str(count), "--prefix", f"sim{i}"]
            args += ["--delta"] if delta else []
            args += ["--tls-dir", str(pki), "--server-name", SERVER_NAME] if pki else []
            sims.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, str(SIM), *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
                )
            )
        yield envoys, sims
    finally:
        for proc in sims:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in sims:
            out, _ = await proc.communicate()
            if b'"errors": []' not in out:
                print(f"  simulator reported: {out.decode().strip()}", file=sys.stderr)
        await asyncio.gather(*(e.stop() for e in envoys))


async def measure(routes: int, real: int, sim: int, delta: bool, pki: Path | None, args: argparse.Namespace) -> Result:
    snap = build_snapshot(routes)
    clusters = max(1, routes // 10)
    flips = [snap.with_changes({ROUTE: {"routes": _routes(routes, clusters, k)}}) for k in range(1, args.pushes + 1)]
    nodes = real + sim
    cache = SnapshotCache()
    server_tls = ServerTls(pki / "server.crt", pki / "server.key", pki / "ca.crt") if pki else None
    server = XdsServer(cache, HOST, 0, tls=server_tls)
    await server.start()
    await cache.set(snap)
    rss_before = rss_mb()
    try:
        started = time.perf_counter()
        async with fleet(server.port, real, sim, delta, pki, args.sim_procs) as (envoys, sims):

            def synced() -> bool:
                streams = node_streams(cache)
                return len(streams) == nodes and all(s.in_sync(snap) for s in streams)

            while not synced():  # set-up only: a coarse poll is fine here
                if time.perf_counter() - started > 180:
                    raise RuntimeError(f"only {len(node_streams(cache))} of {nodes} nodes in sync after 180 s")
                await asyncio.sleep(0.1)
            sync_s = time.perf_counter() - started
            client_pids = [p.pid for p in sims] + [e.pid for e in envoys if e.pid]
            await asyncio.sleep(0.5)
            push_ms, cpu_ms = [], []
            client_cpu_before = cpu_s(client_pids)
            for flip in flips:
                streams = node_streams(cache)
                cpu0, t0 = time.process_time(), time.perf_counter()
                await cache.set(flip)
                done = await cache.notifier.wait_for(all_applied(streams, flip.version), 30)
                t1, cpu1 = time.perf_counter(), time.process_time()
                if not done:
                    raise RuntimeError("push not ACKed by every node within 30 s")
                push_ms.append((t1 - t0) * 1000)
                cpu_ms.append((cpu1 - cpu0) * 1000)
                await asyncio.sleep(0.05)  # let stragglers' bookkeeping finish outside the next window
            client_cpu_ms = (cpu_s(client_pids) - client_cpu_before) * 1000 / len(flips)
            status = cache.status()
            bad = [e["node_id"] for e in status["envoys"] if not e["in_sync"]]
            nacks = [e["node_id"] for e in status["envoys"] for t in e["types"].values() if t["last_nack"]]
            if bad or nacks or len(status["envoys"]) != nodes:
                raise RuntimeError(f"after the pushes: out of sync {bad[:5]}, NACKs {nacks[:5]}")
            r0 = time.perf_counter()
            cache.ready()
            ready_ms = (time.perf_counter() - r0) * 1000
            rss = rss_mb()
            envoy_rss = statistics.mean(rss_mb(e.pid) for e in envoys if e.pid) if envoys else 0.0
    finally:
        await server.stop(0.5)
        await cache.close()
    route_kb = len(snap.of_type(ROUTE)["routes"].SerializeToString()) / 1024
    return Result(
        "delta" if delta else "sotw",
        pki is not None,
        routes,
        real,
        sim,
        route_kb,
        sync_s,
        push_ms,
        cpu_ms,
        client_cpu_ms,
        rss,
        rss - rss_before,
        envoy_rss,
        ready_ms,
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def print_table(results: list[Result]) -> None:
    head = (
        "| mode | mTLS | routes | nodes (real+sim) | initial sync s | push p50 ms | p90 ms | max ms "
        "| server CPU ms/push | CPU µs/node/push | clients CPU ms/push | server RSS MB (Δ) | Envoy RSS MB "
        "| one ready() ms |"
    )
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for r in results:
        nodes = r.real + r.sim
        cpu = statistics.median(r.cpu_ms)
        print(
            f"| {r.mode} | {'yes' if r.tls else 'no'} | {r.routes:,} | {nodes} ({r.real}+{r.sim}) | {r.sync_s:.2f} "
            f"| {statistics.median(r.push_ms):.1f} | {pct(r.push_ms, 90):.1f} | {max(r.push_ms):.1f} "
            f"| {cpu:.1f} | {cpu * 1000 / nodes:.0f} | {r.client_cpu_ms:.1f} "
            f"| {r.rss_mb:.0f} ({r.rss_delta_mb:+.0f}) | {r.envoy_rss_mb:.0f} | {r.ready_ms:.2f} |"
        )


async def main(args: argparse.Namespace) -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only: logs cost CPU
    results = []
    with tempfile.TemporaryDirectory(prefix="stackway-fanout-") as tmp:
        pki = None if args.plaintext else Path(tmp)
        if pki is not None:
            certs.ensure_files(pki)
        print(
            f"set-up: {os.cpu_count()} CPUs; server in this process (pid {os.getpid()}), clients in other processes; "
            f"{args.pushes} pushes per row; real Envoys up to {args.real}, simulated nodes beyond "
            f"({args.sim_procs} simulator process(es)); mTLS {'off' if pki is None else 'on'}",
            flush=True,
        )
        for mode in args.modes.split(","):
            for routes in (int(x) for x in args.routes.split(",")):
                for nodes in (int(x) for x in args.nodes.split(",")):
                    real = min(nodes, args.real)
                    res = await measure(routes, real, nodes - real, mode == "delta", pki, args)
                    results.append(res)
                    print(
                        f"  {mode} {routes} routes ({res.route_kb:.0f} kB RouteConfiguration) x {nodes} nodes: "
                        f"push p50 {statistics.median(res.push_ms):.1f} ms, "
                        f"CPU {statistics.median(res.cpu_ms):.1f} ms",
                        flush=True,
                    )
    print()
    print_table(results)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="xDS fan-out: push time, CPU and RSS at many nodes")
    p.add_argument("--nodes", default="10,100")
    p.add_argument("--routes", default="100,1000")
    p.add_argument("--modes", default="delta,sotw")
    p.add_argument("--real", type=int, default=10, help="real Envoys per row (each ~70 MB RSS)")
    p.add_argument("--sim-procs", type=int, default=1)
    p.add_argument("--pushes", type=int, default=20)
    p.add_argument("--plaintext", action="store_true", help="no mutual TLS between nodes and the server")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
