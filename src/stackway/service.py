"""What both modes run: a provider feeding the control plane, the xDS server and the admin API.

`stackway up` (standalone) adds a supervised local Envoy; `stackway serve` (cluster) feeds from the
Kubernetes API and leaves Envoy to a DaemonSet or Deployment that connects over xDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from stackway.admin.server import make_app, start_admin
from stackway.controlplane import ControlPlane
from stackway.memory import ShrinkWatcher
from stackway.translate import Options
from stackway.xds_server import ServerTls, SnapshotCache, XdsServer

if TYPE_CHECKING:  # openstacksdk is imported only when a cloud is configured
    from stackway.openstack.loadbalancer.bridge import LoadBalancerBridge

log = structlog.get_logger("stackway")


class Provider(Protocol):
    async def start(self) -> Any: ...
    async def run(self) -> None: ...
    def stop(self) -> None: ...


def configure_logging(level: str) -> None:
    logging.basicConfig(format="%(message)s", level=getattr(logging, level.upper(), logging.INFO))
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
    )


class ControlService:
    """The provider → control plane → xDS path and the admin API, started and stopped as one."""

    def __init__(
        self,
        options: Options,
        xds: tuple[str, int],
        admin: tuple[str, int],
        *,
        xds_tls: ServerTls | None = None,
        require_envoy: bool = True,
        load_balancers: LoadBalancerBridge | None = None,
    ) -> None:
        self.require_envoy = require_envoy
        #: Services of type LoadBalancer → Octavia, when an OpenStack cloud is configured.
        self.load_balancers = load_balancers
        self.control = ControlPlane(options=options)
        self.cache = SnapshotCache()
        self.xds = XdsServer(self.cache, *xds, tls=xds_tls)
        self.xds_address = xds
        self.admin_address = admin
        self.provider: Provider | None = None
        self._admin_runner: Any = None
        self._provider_task: asyncio.Task[None] | None = None
        self._published_problems: set[str] = set()
        self._shrink = ShrinkWatcher()

    async def on_change(self, state: Any) -> None:
        """A provider's new state: translate, publish if it changed, log problems as they come and go."""
        result = self.control.update(state.objects, state.problems, changed=state.changed, base=state.base)
        if self.load_balancers is not None:
            # The store's typed objects: parsed once, and an invalid edit keeps its last good version (so
            # it never reads as a deleted Service). Returns at once: the controller works on threads.
            self.load_balancers.on_resources(self.control.resources)
        self._log_problems()
        if result.snapshot is not None and result.changed:
            await self.cache.set(result.snapshot)
            log.info("snapshot published", version=result.snapshot.version, objects=len(state.objects))
        # After publishing: the snapshot it replaces (the largest single piece of a big configuration) is let
        # go of by then, so a release after a shrink can hand its memory back too.
        self._shrink.observe(len(state.objects))

    def _log_problems(self) -> None:
        """Log each problem once when it appears, not on every change."""
        current = {
            f"{p['file'] or ''}:{p['line'] or ''} {p['object']}: {p['field']}: {p['message']}"
            for p in self.control.problem_document()
        }
        for line in sorted(current - self._published_problems):
            log.warning("problem", detail=line)
        for line in sorted(self._published_problems - current):
            log.info("problem resolved", detail=line)
        self._published_problems = current

    async def start_serving(self, provider: Provider) -> None:
        """xDS first (Envoy's first connect succeeds), then the admin API, then the first provider state."""
        self.provider = provider
        await self.xds.start()
        self._admin_runner = await start_admin(
            make_app(
                self.control,
                self.cache,
                require_envoy=self.require_envoy,
                extra_objects=self.load_balancers.status_document if self.load_balancers else None,
            ),
            *self.admin_address,
        )
        await provider.start()
        self._provider_task = asyncio.create_task(provider.run())

    async def stop_serving(self) -> None:
        if self.provider is not None:
            self.provider.stop()
        if self._provider_task is not None:
            self._provider_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._provider_task
        await self.xds.stop(0.5)
        await self.cache.close()
        if self.load_balancers is not None:
            await asyncio.to_thread(self.load_balancers.close)
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()


async def run_until_signal(start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]) -> None:
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    try:
        await start()
        await done.wait()
    finally:
        await stop()
