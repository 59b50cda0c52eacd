"""Route propagation: time from a route edit on disk to traffic following it, at 100 to 10,000 routes.

Set-up: `stackway up` (a subprocess: file watcher → translate → xDS → a real Envoy, delta xDS) serving one
Gateway; N-1 filler HTTPRoutes in one file and a probe route in its own file, all on one hostname (one
virtual host: the worst case for Envoy, which re-reads the whole RouteConfiguration). Each round rewrites
the probe route (atomic rename) to point at the other of two echo backends, then polls the gateway with a
new TCP connection per request until the answer comes from the new backend. The measured interval includes
the file watcher's quiet time, reading the changed file, translation, the staged xDS push (the first
backend of a pair is a new cluster, so clusters go first and routes after Envoy ACKed them) and Envoy
applying the RouteConfiguration.

Each size starts once the new filler routes answer (scaling up) or the removed ones stop answering
(scaling down), so no round waits behind loading the size. CP RSS is the control plane's resident memory
after each size; "load CPU" the CPU seconds it spent loading that size, "CPU/edit" its CPU per round. The
last row scales back down, to show whether memory comes back.

Usage: python benchmarks/propagation.py [--sizes 100,1000,3000,10000] [--rounds 100] [--scale-down-to 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import (
    EchoThread,
    free_port,
    gateway_docs,
    http_get,
    percentile,
    route_doc,
    service_docs,
    service_of,
    stackway_up,
    write_atomic,
)


def proc_stats(pid: int) -> tuple[float, float]:
    """(RSS in MiB, CPU seconds user+system) of a process, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss_kib / 1024, (int(fields[11]) + int(fields[12])) / ticks


def wait_until(check: Callable[[], bool], what: str, limit: float = 300.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not within {limit} s")
        time.sleep(0.05)


def wait_probe(port: int, target: str, limit: float = 120.0) -> None:
    wait_until(lambda: service_of(http_get("127.0.0.1", port, "/probe")[1]) == target, f"probe on {target}", limit)


def wait_loaded(port: int, size: int, before: int) -> None:
    """The filler routes of `size` answer (or, shrinking, the last of `before` no longer does)."""
    if size > before and size > 1:
        wait_until(lambda: http_get("127.0.0.1", port, f"/filler/{size - 2}")[0] == 200, f"{size} routes served")
    elif size < before and before > 1:
        wait_until(lambda: http_get("127.0.0.1", port, f"/filler/{before - 2}")[0] == 404, f"{before} routes gone")


def measure(directory: Path, port: int, rounds: int, target: str) -> tuple[list[float], str]:
    samples: list[float] = []
    for _ in range(rounds):
        target = "green" if target == "blue" else "blue"
        started = time.perf_counter()
        write_atomic(directory / "probe.yaml", [route_doc("probe", "/probe", target)])
        while service_of(http_get("127.0.0.1", port, "/probe")[1]) != target:
            if time.perf_counter() - started > 60:
                raise RuntimeError("no propagation within 60 s")
        samples.append((time.perf_counter() - started) * 1000)
        time.sleep(0.1)
    return samples, target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,3000,10000")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--scale-down-to", type=int, default=10)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    echo = EchoThread(["blue", "green"])
    print(__doc__.split("Usage:")[0].strip())
    print(
        f"\nrounds per size: {args.rounds}; machine: {os.cpu_count()} CPUs; one control-plane process for all sizes\n"
    )
    print(
        f"{'routes':>10} {'median ms':>10} {'p99 ms':>8} {'max ms':>8} {'CP RSS MiB':>11} "
        f"{'load CPU s':>11} {'CPU/edit ms':>12}"
    )
    port = free_port()
    try:
        with tempfile.TemporaryDirectory(prefix="stackway-bench-") as tmp:
            directory = Path(tmp)
            base = (
                gateway_docs(port)
                + service_docs("blue", echo.ports["blue"])
                + service_docs("green", echo.ports["green"])
            )
            write_atomic(directory / "base.yaml", base)
            write_atomic(directory / "probe.yaml", [route_doc("probe", "/probe", "blue")])
            with stackway_up(directory) as ports:
                pid, target, before = ports["pid"], "blue", 1
                wait_probe(port, target)
                for size in [*sizes, args.scale_down_to]:
                    fillers = [route_doc(f"filler-{i}", f"/filler/{i}", "blue") for i in range(size - 1)]
                    cpu_before = proc_stats(pid)[1]
                    write_atomic(directory / "filler.yaml", fillers)
                    wait_loaded(port, size, before)
                    wait_probe(port, target)
                    time.sleep(1.0)
                    cpu_loaded = proc_stats(pid)[1]
                    samples, target = measure(directory, port, args.rounds, target)
                    rss, cpu = proc_stats(pid)
                    label = f"{size}" if size != args.scale_down_to or size in sizes else f"{size} (down)"
                    print(
                        f"{label:>10} {statistics.median(samples):>10.1f} {percentile(samples, 99):>8.1f} "
                        f"{max(samples):>8.1f} {rss:>11.1f} {cpu_loaded - cpu_before:>11.2f} "
                        f"{(cpu - cpu_loaded) / args.rounds * 1000:>12.1f}",
                        flush=True,
                    )
                    before = size
    finally:
        echo.stop()


if __name__ == "__main__":
    main()
