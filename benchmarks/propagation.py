"""Route propagation: time from a route edit on disk to traffic following it, at 1, 100 and 1,000 routes.

Set-up: `stackway up` (a subprocess: file watcher → translate → xDS → a real Envoy, delta xDS) serving one
Gateway; N-1 filler HTTPRoutes in one file and a probe route in its own file. Each round rewrites the
probe route (atomic rename) to point at the other of two echo backends, then polls the gateway with a new
TCP connection per request until the answer comes from the new backend. The measured interval includes
the file watcher's debounce, parsing and translating all N routes, the xDS push and Envoy's ACK.

Usage: python benchmarks/propagation.py [--sizes 1,100,1000] [--rounds 40]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
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


def measure(size: int, rounds: int, echo: EchoThread) -> list[float]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="stackway-bench-") as tmp:
        directory = Path(tmp)
        base = (
            gateway_docs(port) + service_docs("blue", echo.ports["blue"]) + service_docs("green", echo.ports["green"])
        )
        write_atomic(directory / "base.yaml", base)
        write_atomic(
            directory / "filler.yaml", [route_doc(f"filler-{i}", f"/filler/{i}", "blue") for i in range(size - 1)]
        )
        write_atomic(directory / "probe.yaml", [route_doc("probe", "/probe", "blue")])
        samples: list[float] = []
        with stackway_up(directory):
            deadline = time.monotonic() + 30
            while service_of(http_get("127.0.0.1", port, "/probe")[1]) != "blue":
                if time.monotonic() > deadline:
                    raise RuntimeError("probe route never served")
                time.sleep(0.05)
            target = "blue"
            for _ in range(rounds):
                target = "green" if target == "blue" else "blue"
                started = time.perf_counter()
                write_atomic(directory / "probe.yaml", [route_doc("probe", "/probe", target)])
                while service_of(http_get("127.0.0.1", port, "/probe")[1]) != target:
                    if time.perf_counter() - started > 30:
                        raise RuntimeError(f"no propagation within 30 s at {size} routes")
                samples.append((time.perf_counter() - started) * 1000)
                time.sleep(0.1)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,100,1000")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    echo = EchoThread(["blue", "green"])
    print(__doc__.split("Usage:")[0].strip())
    print(f"\nrounds per size: {args.rounds}; machine: {__import__('os').cpu_count()} CPUs\n")
    print(f"{'routes':>7} {'median ms':>10} {'p99 ms':>8} {'max ms':>8}")
    try:
        for size in sizes:
            samples = measure(size, args.rounds, echo)
            print(
                f"{size:>7} {statistics.median(samples):>10.1f} {percentile(samples, 99):>8.1f} {max(samples):>8.1f}",
                flush=True,
            )
    finally:
        echo.stop()


if __name__ == "__main__":
    main()
