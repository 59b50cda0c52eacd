"""Admin HTTP API (DESIGN 2.3): health, readiness, statuses, xDS state and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stackway.controlplane import ControlPlane


class XdsState(Protocol):
    def status(self) -> dict[str, Any]: ...
    def ready(self) -> bool: ...


def rejected_by_envoy(xds_status: dict[str, Any]) -> list[dict[str, Any]]:
    """Current NACKs as problems: Envoy refused the latest version of a type and serves the previous one."""
    out: list[dict[str, Any]] = []
    for envoy in xds_status.get("envoys", []):
        for type_name, state in envoy.get("types", {}).items():
            nack = state.get("last_nack")
            current = nack and nack.get("version") == state.get("last_sent_version")
            if current and state.get("last_acked_version") != state.get("last_sent_version"):
                out.append(
                    {
                        "object": f"Envoy {envoy.get('node_id')}",
                        "file": None,
                        "line": None,
                        "field": type_name,
                        "severity": "error",
                        "message": f"Envoy rejected {type_name} version {nack['version']} and keeps serving "
                        f"{state.get('last_acked_version')}: {nack.get('message')}",
                    }
                )
    return out


def make_app(
    control: ControlPlane,
    xds: XdsState,
    *,
    require_envoy: bool = True,
    extra_objects: Callable[[], list[dict[str, Any]]] | None = None,
) -> web.Application:
    """`require_envoy`: standalone mode is ready only once its own Envoy ACKed. In a cluster the Envoys reach
    the control plane through its Service, so readiness must not wait for one to connect (it never would):
    there, no Envoy connected yet counts as ready once the first configuration is built.
    `extra_objects`: statuses from other controllers (the OpenStack load balancers' Services)."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        version = control.snapshot.version
        if xds.ready():
            return web.Response(text=f"ready: every connected Envoy has ACKed {version}\n")
        built = bool(control.snapshot.resources)
        if not require_envoy and built and not xds.status().get("envoys"):
            return web.Response(text=f"ready: configuration {version} built; no Envoy connected yet\n")
        return web.Response(status=503, text=f"not ready: waiting for Envoy to ACK {version}\n")

    async def api_status(_: web.Request) -> web.Response:
        problems = control.problem_document() + rejected_by_envoy(xds.status())
        objects = control.status_document() + (extra_objects() if extra_objects else [])
        return web.json_response({"objects": objects, "problems": problems})

    async def api_config(_: web.Request) -> web.Response:
        return web.json_response({"version": control.snapshot.version, **xds.status()})

    async def prom(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/status", api_status)
    app.router.add_get("/api/config", api_config)
    app.router.add_get("/metrics", prom)
    return app


async def start_admin(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
