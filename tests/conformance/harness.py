"""The running pieces: echo backends in a background thread, one `stackway up` process, and a manifest
directory that tests add their manifests to and take them away from, as upstream applies and cleans up.

One `stackway up` serves the whole run: base manifests are written once, each test writes its own file
and removes it afterwards. That is also how upstream runs (one cluster, manifests applied per test), and it
exercises the file-watching contract (DESIGN 2.1/2.2) on every test.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackway.demo.echo import EchoServer, start_echo
from tests.conformance import manifests as m
from tests.conformance.client import Target
from tests.conformance.status import StatusChecker, StatusTimeout

STARTUP_TIMEOUT = 60.0
ENV_NETWORK = "STACKWAY_CONFORMANCE_NETWORK"
STATUS_KINDS = {"Gateway", "HTTPRoute", "GatewayClass", "GRPCRoute"}


@dataclass(frozen=True)
class Echoed:
    """One request an echo backend answered: when (monotonic), by which pod, and the echo it sent back."""

    at: float
    pod: str
    namespace: str
    deployment: str
    body: bytes

    @property
    def echo(self) -> dict[str, Any]:
        """echo-basic's JSON for the request (path with query, host, method, headers, pod, namespace)."""
        result: dict[str, Any] = json.loads(self.body)
        return result


class RequestLog:
    """Every request the echo backends answered, in order, standing in for upstream's reading of pod logs.

    Upstream proves a request was mirrored by finding "Echoing back request made to <path>" in the mirror
    Deployment's pod logs; here the backends run in this process, so each one's answer is recorded as it is
    made. Entries keep the echo bytes and are parsed only when asked for, to keep the backends fast.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[Echoed] = []

    def attach(self, server: EchoServer, pod: m.EchoPod) -> None:
        """Record every echo `server` answers with, through its public `echo_body`, leaving its replies as they are."""
        produce = server.echo_body

        def recording(request: Any) -> bytes:
            body = produce(request)
            with self._lock:
                self._entries.append(Echoed(time.monotonic(), pod.pod, pod.namespace, pod.deployment, body))
            return body

        server.echo_body = recording  # type: ignore[method-assign]

    def entries(self, since: float = 0.0) -> list[Echoed]:
        with self._lock:
            return [e for e in self._entries if e.at >= since]

    def received(self, namespace: str, deployment: str, path: str, since: float = 0.0) -> list[Echoed]:
        """Requests for exactly `path` (query included) that pods of `deployment` answered since `since`."""
        return [
            e
            for e in self.entries(since)
            if e.namespace == namespace and e.deployment == deployment and e.echo.get("path") == path
        ]


class EchoPool:
    """Echo backends on an asyncio loop of their own thread, so synchronous tests can start and stop them."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="echo-backends", daemon=True)
        self._thread.start()
        self.servers: dict[str, EchoServer] = {}
        self.log = RequestLog()

    def start(self, pods: Iterable[m.EchoPod]) -> dict[str, int]:
        """Start a backend for every pod not running yet; returns pod name → port for all running pods."""
        for pod in pods:
            if pod.pod in self.servers:
                continue
            future = asyncio.run_coroutine_threadsafe(
                start_echo("127.0.0.1", 0, pod.pod, pod.namespace, pod.deployment), self._loop
            )
            server = future.result(timeout=10)
            self.log.attach(server, pod)
            self.servers[pod.pod] = server
        return self.ports()

    def ports(self) -> dict[str, int]:
        return {name: server.port for name, server in self.servers.items()}

    def close(self) -> None:
        async def close_all() -> None:
            await asyncio.gather(*(s.close() for s in self.servers.values()), return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def can_bind(address: str, port: int) -> bool:
    """Whether this process may listen on address:port (ports below 1024 need root or a capability)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def pick_network(attempts: int = 20) -> ipaddress.IPv4Network:
    """A /24 of loopback addresses for this run's Gateways, nobody else listening on its ports 80 and 443.

    Runs of this suite can overlap on one machine (several checkouts, a leftover Envoy): Envoy binds with
    SO_REUSEPORT, so two runs on the same address would silently split each other's connections. Each run
    therefore picks a random /24 (or $STACKWAY_CONFORMANCE_NETWORK) and checks it is free.
    """
    pinned = os.environ.get(ENV_NETWORK)
    candidates = [ipaddress.IPv4Network(pinned)] if pinned else []
    rng = random.Random()
    candidates += [
        ipaddress.IPv4Network(f"127.{rng.randint(16, 254)}.{rng.randint(0, 255)}.0/24") for _ in range(attempts)
    ]
    for network in candidates:
        hosts = list(itertools.islice(network.hosts(), 16))
        if all(can_bind(str(h), port) for h in hosts for port in (80, 443)):
            return network
        if pinned:
            raise RuntimeError(f"${ENV_NETWORK}={pinned}: something already listens on its ports 80/443")
    raise RuntimeError("no free loopback /24 for the conformance Gateways (or ports 80/443 cannot be bound)")


#: Exec'd in front of `stackway up`: asks Linux to send it Ctrl-C (SIGINT) if pytest dies without cleaning up,
#: then becomes the real command (the request survives exec). Done this way rather than with `preexec_fn`,
#: which is unsafe once threads (the echo backends) run.
_STOP_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "if sys.platform.startswith('linux'):\n"
    "    ctypes.CDLL(None).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


def stackway_command() -> list[str]:
    """The installed `stackway` console script next to this interpreter, else the module."""
    script = Path(sys.executable).with_name("stackway")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "stackway.cli"]


@dataclass
class StackwayProcess:
    """`stackway up DIR` as a real process, with its own admin, xDS and Envoy admin ports."""

    directory: Path
    log_path: Path
    admin: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    xds: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    envoy_admin: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            *stackway_command(),
            "up",
            str(self.directory),
            "--address",
            "127.0.0.1",
            "--admin",
            self.admin,
            "--xds",
            self.xds,
            "--envoy-admin",
            self.envoy_admin,
        ]
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _STOP_WITH_PARENT, *command],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"`stackway up` exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.admin}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"`stackway up` not healthy within {STARTUP_TIMEOUT:.0f}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Ctrl-C, as DESIGN 2.1 promises stops everything it started; a kill only if that hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Applied:
    """What a test applied: its objects (after preparation) and where they live."""

    name: str
    docs: list[m.Doc]
    path: Path

    def find(self, kind: str, namespace: str, name: str) -> m.Doc:
        for doc in self.docs:
            if m.key(doc) == (kind, namespace, name):
                return doc
        raise KeyError((kind, namespace, name))


@dataclass
class Conformance:
    """The environment every conformance test runs in."""

    upstream: Path
    workdir: Path
    book: m.AddressBook = field(default_factory=lambda: m.AddressBook(pick_network()))
    echoes: EchoPool = field(default_factory=EchoPool)
    secrets: dict[tuple[str, str], m.TLSPair] = field(default_factory=dict)
    base_docs: list[m.Doc] = field(default_factory=list)
    stackway: StackwayProcess | None = None

    @property
    def directory(self) -> Path:
        return self.workdir / "manifests"

    @property
    def status(self) -> StatusChecker:
        assert self.stackway is not None
        return StatusChecker(self.stackway.admin)

    def prepare(self, docs: Sequence[m.Doc], suite_secrets: bool = False) -> list[m.Doc]:
        """Class name, addresses, echo backends with their EndpointSlices, and Secrets for `docs`.

        `suite_secrets` adds the Secrets upstream's suite creates at setup whether or not they are referenced.
        """
        docs = m.assign_addresses(m.substitute_class(docs), self.book)
        # a test's Services may select the base Deployments' pods; each pod once (docs may be the base itself)
        pods = list({p.pod: p for p in m.echo_pods([*self.base_docs, *docs])}.values())
        ports = self.echoes.start(pods)
        slices = m.endpoint_slices(docs, pods, ports)
        secrets = []
        wanted = m.referenced_secrets(docs) + (list(m.SECRET_SANS) if suite_secrets else [])
        for ns, name in dict.fromkeys(wanted):
            if (ns, name) not in self.secrets:
                self.secrets[(ns, name)] = m.self_signed(m.SECRET_SANS.get((ns, name), ("*",)))
                secrets.append(m.tls_secret(ns, name, self.secrets[(ns, name)]))
        return [*docs, *slices, *secrets]

    def start(self) -> None:
        self.base_docs = m.load_documents(self.upstream / "base" / "manifests.yaml")
        prepared = self.prepare(self.base_docs, suite_secrets=True)
        m.write_atomically(self.directory / "00-gatewayclass.yaml", m.dump([m.gateway_class()]))
        m.write_atomically(self.directory / "10-base.yaml", m.dump(prepared))
        self.stackway = StackwayProcess(self.directory, self.workdir / "stackway.log")
        self.stackway.start()

    def close(self) -> None:
        if self.stackway is not None:
            self.stackway.stop()
        self.echoes.close()

    def test_manifests(self, name: str) -> list[m.Doc]:
        return m.load_documents(self.upstream / "tests" / f"{name}.yaml")

    @contextlib.contextmanager
    def applied(self, name: str) -> Iterator[Applied]:
        """Serve the upstream test manifest `tests/<name>.yaml` for the duration of the block."""
        assert self.stackway is not None
        if not self.stackway.alive():
            raise RuntimeError(f"`stackway up` is not running any more:\n{self.stackway.log_tail()}")
        docs = self.prepare(self.test_manifests(name))
        path = self.directory / "tests" / f"{name}.yaml"
        m.write_atomically(path, m.dump(docs))
        applied = Applied(name, docs, path)
        passed = False
        try:
            yield applied
            passed = True
        finally:
            path.unlink(missing_ok=True)
            if self.stackway.alive():
                try:
                    self.status.objects_gone(k for k in map(m.key, docs) if k[0] in STATUS_KINDS)
                except StatusTimeout:
                    if passed:  # otherwise the test's own failure is the one to report
                        raise

    def rewrite(self, applied: Applied, docs: list[m.Doc]) -> None:
        """Change an applied test's objects (upstream patches objects in the cluster)."""
        applied.docs = docs
        m.write_atomically(applied.path, m.dump(docs))

    def gateway(
        self, namespace: str, name: str, port: int = 80, scheme: str = "http", ca_pem: bytes | None = None
    ) -> Target:
        """Where to send requests for a Gateway: its own address from the book."""
        return Target(self.book.address(namespace, name), port, scheme, ca_pem)

    def tls_pair(self, namespace: str, name: str) -> m.TLSPair:
        return self.secrets[(namespace, name)]

    def pod_port(self, pod_prefix: str) -> int:
        for name, port in sorted(self.echoes.ports().items()):
            if name.startswith(pod_prefix):
                return port
        raise KeyError(pod_prefix)
