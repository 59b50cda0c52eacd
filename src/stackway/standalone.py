"""`stackway up`: a watched directory → control plane → xDS server → a supervised local Envoy.

Start order matters: the xDS server is up before Envoy starts (so Envoy's first connect succeeds), and the
first snapshot is in the cache before Envoy asks (so it never sees an empty config). Stop order is the
reverse: Envoy drains first, then the xDS server and admin API go away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from stackway.admin.server import make_app, start_admin
from stackway.controlplane import ControlPlane
from stackway.dataplane.envoy import EnvoyProcess
from stackway.providers.files import FilesProvider
from stackway.translate import Options
from stackway.xds_server import SnapshotCache, XdsServer

log = structlog.get_logger("stackway.standalone")


@dataclass(frozen=True)
class StandaloneConfig:
    directory: Path
    address: str = "0.0.0.0"
    admin: tuple[str, int] = ("127.0.0.1", 9900)
    xds: tuple[str, int] = ("127.0.0.1", 18000)
    envoy_admin: tuple[str, int] = ("127.0.0.1", 19000)
    accept_any_class: bool = False
    delta: bool = True
    concurrency: int = 1
    log_level: str = "info"
    node_id: str = "stackway-standalone"
    #: Quiet time after a file event before re-reading; short, because writers rename complete files.
    debounce_s: float = 0.01


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


class Standalone:
    """Owns every part `up` runs, so tests and the demo can start and stop them in-process."""

    def __init__(self, config: StandaloneConfig) -> None:
        self.config = config
        self.control = ControlPlane(
            options=Options(default_address=config.address, accept_any_class=config.accept_any_class)
        )
        self.cache = SnapshotCache()
        self.xds = XdsServer(self.cache, *config.xds)
        self.provider = FilesProvider(config.directory, self._on_change, debounce=config.debounce_s)
        self.envoy = EnvoyProcess(
            node_id=config.node_id,
            xds_address=config.xds,
            admin_address=config.envoy_admin,
            delta=config.delta,
            concurrency=config.concurrency,
        )
        self._admin_runner: Any = None
        self._provider_task: asyncio.Task[None] | None = None
        self._published_problems: set[str] = set()

    async def _on_change(self, state: Any) -> None:
        result = self.control.update(state.objects, state.problems)
        self._log_problems(state)
        if result.snapshot is not None and result.changed:
            await self.cache.set(result.snapshot)
            log.info("snapshot published", version=result.snapshot.version, objects=len(state.objects))

    def _log_problems(self, state: Any) -> None:
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

    async def start(self) -> None:
        await self.xds.start()
        self._admin_runner = await start_admin(make_app(self.control, self.cache), *self.config.admin)
        await self.provider.start()
        self._provider_task = asyncio.create_task(self.provider.run())
        await self.envoy.start()
        log.info(
            "stackway is up",
            directory=str(self.config.directory),
            admin=f"http://{self.config.admin[0]}:{self.config.admin[1]}",
            xds=f"{self.config.xds[0]}:{self.config.xds[1]}",
        )

    async def stop(self) -> None:
        await self.envoy.stop()
        self.provider.stop()
        if self._provider_task is not None:
            self._provider_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._provider_task
        await self.xds.stop(0.5)
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


async def run_standalone(config: StandaloneConfig) -> None:
    configure_logging(config.log_level)
    gateway = Standalone(config)
    await run_until_signal(gateway.start, gateway.stop)
