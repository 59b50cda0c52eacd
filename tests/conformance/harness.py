"""The running pieces: echo backends in a background thread, the gateway under test (a backend), and the
manifests that tests apply and clean up, as upstream applies them to a cluster and deletes them afterwards.

The gateway runs in one of two modes, each for the whole session:

- standalone: one `stackway up DIR` process; manifests are files that tests add to the directory and remove
  (that exercises the file-watching contract, DESIGN 2.1/2.2, on every test). Statuses come from its
  admin API, which shows what would be written to Kubernetes.
- cluster: the fake Kubernetes API server, `stackway serve` against it (in this process) and one Envoy
  connected over xDS, as a DaemonSet's would be; manifests are applied through the API and deleted again.
  Statuses are read back from the API objects, i.e. what the status writer really wrote.

Either way one gateway serves the whole run with base manifests applied once, as upstream runs one cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
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
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from stackway.cluster import ClusterConfig, ClusterService
from stackway.dataplane.envoy import EnvoyProcess
from stackway.demo.echo import EchoServer, start_echo
from stackway.demo.grpcecho import GrpcEchoServer, start_grpc_echo
from tests.conformance import manifests as m
from tests.conformance import pki
from tests.conformance.client import Target
from tests.conformance.h2c import H2cEchoServer, start_h2c_echo
from tests.conformance.status import StatusChecker, StatusTimeout
from tests.fakes.kube_apiserver import FakeKubeApiServer
from tests.fakes.kube_semantics import ApiError

STARTUP_TIMEOUT = 60.0
ENV_NETWORK = "STACKWAY_CONFORMANCE_NETWORK"
STATUS_KINDS = {"Gateway", "HTTPRoute", "GatewayClass", "GRPCRoute", "TLSRoute", "BackendTLSPolicy"}
STANDALONE = "standalone"
CLUSTER = "cluster"
MODES = (STANDALONE, CLUSTER)
T = TypeVar("T")


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
    """Echo backends on an asyncio loop of their own thread, so synchronous tests can start and stop them.

    A pod of a gRPC echo Deployment gets a gRPC echo (h2c) instead of the HTTP one; both kinds report the
    pod and namespace they stand for, so route checks can tell which pod answered. An HTTP echo pod also
    listens for h2c on a second port, as echo-basic does on 3001, answering with the same echo.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="echo-backends", daemon=True)
        self._thread.start()
        self.servers: dict[str, EchoServer | GrpcEchoServer] = {}
        self.h2c: dict[str, H2cEchoServer] = {}
        self.log = RequestLog()

    def start(self, pods: Iterable[m.EchoPod]) -> dict[str, int]:
        """Start a backend for every pod not running yet; returns pod name → port for all running pods."""
        for pod in pods:
            if pod.pod in self.servers:
                continue
            if pod.protocol == m.GRPC:
                coro: Coroutine[Any, Any, EchoServer | GrpcEchoServer] = start_grpc_echo(
                    "127.0.0.1", 0, pod.pod, pod.namespace, pod.deployment
                )
            else:
                coro = start_echo("127.0.0.1", 0, pod.pod, pod.namespace, pod.deployment)
            server = asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)
            if isinstance(server, EchoServer):
                self.log.attach(server, pod)
                h2c = start_h2c_echo("127.0.0.1", server)
                self.h2c[pod.pod] = asyncio.run_coroutine_threadsafe(h2c, self._loop).result(timeout=10)
            self.servers[pod.pod] = server
        return self.ports()

    def ports(self) -> dict[str, int]:
        return {name: server.port for name, server in self.servers.items()}

    def h2c_ports(self) -> dict[str, int]:
        """Pod name → port of its h2c listener, for the HTTP echo pods."""
        return {name: server.port for name, server in self.h2c.items()}

    def close(self) -> None:
        async def close_all() -> None:
            servers: list[EchoServer | GrpcEchoServer | H2cEchoServer] = [*self.servers.values(), *self.h2c.values()]
            await asyncio.gather(*(s.close() for s in servers), return_exceptions=True)

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


class Backend(Protocol):
    """The gateway under test, as the tests see it: somewhere to apply manifests and read statuses from."""

    @property
    def admin(self) -> str:
        """host:port of the control plane's admin API (its own view of objects, for waiting out deletions)."""
        ...

    @property
    def status(self) -> StatusChecker:
        """Where the status checks read the statuses that count for conformance."""
        ...

    def start(self, base: Sequence[m.Doc]) -> None:
        """Start serving the GatewayClass and the (prepared) base manifests."""

    def apply(self, name: str, docs: Sequence[m.Doc]) -> None:
        """Make the set of objects called `name` exactly `docs` (creating, changing or removing objects)."""

    def remove(self, name: str) -> None:
        """Take the set `name` away again."""

    def alive(self) -> bool: ...

    def log_tail(self, lines: int = 40) -> str: ...

    def stop(self) -> None: ...


@dataclass
class StandaloneBackend:
    """`stackway up DIR`: each set of objects is one file in DIR."""

    workdir: Path
    stackway: StackwayProcess | None = None

    @property
    def directory(self) -> Path:
        return self.workdir / "manifests"

    @property
    def admin(self) -> str:
        assert self.stackway is not None
        return self.stackway.admin

    @property
    def status(self) -> StatusChecker:
        return StatusChecker(self.admin)

    def start(self, base: Sequence[m.Doc]) -> None:
        m.write_atomically(self.directory / "00-gatewayclass.yaml", m.dump([m.gateway_class()]))
        m.write_atomically(self.directory / "10-base.yaml", m.dump(base))
        self.stackway = StackwayProcess(self.directory, self.workdir / "stackway.log")
        self.stackway.start()

    def _path(self, name: str) -> Path:
        return self.directory / "tests" / f"{name}.yaml"

    def apply(self, name: str, docs: Sequence[m.Doc]) -> None:
        m.write_atomically(self._path(name), m.dump(docs))

    def remove(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def alive(self) -> bool:
        return self.stackway is not None and self.stackway.alive()

    def log_tail(self, lines: int = 40) -> str:
        return self.stackway.log_tail(lines) if self.stackway is not None else "(not started)"

    def stop(self) -> None:
        if self.stackway is not None:
            self.stackway.stop()


ObjectRef = tuple[str, str, str, str]  # apiVersion, kind, namespace, name


def _ref(doc: m.Doc) -> ObjectRef:
    meta = doc["metadata"]
    return doc["apiVersion"], doc["kind"], meta.get("namespace", "default"), meta["name"]


class ClusterBackend:
    """The fake API server, `stackway serve` and one Envoy, all on an event loop of their own thread.

    They share one loop so that the fake's store (not thread-safe) is only ever touched from that loop:
    the synchronous tests hand every apply and delete over to it. Statuses are read over HTTP, as any
    client would, from the objects the status writer wrote back.
    """

    #: The kinds whose statuses the checks read, as the API serves them.
    STATUS_RESOURCES = (
        ("gatewayclasses", "GatewayClass"),
        ("gateways", "Gateway"),
        ("httproutes", "HTTPRoute"),
        ("grpcroutes", "GRPCRoute"),
        ("tlsroutes", "TLSRoute"),
        ("backendtlspolicies", "BackendTLSPolicy"),
    )

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.admin = f"127.0.0.1:{free_port()}"
        self.xds = ("127.0.0.1", free_port())
        self.api = FakeKubeApiServer()
        self.service: ClusterService | None = None
        self.envoy: EnvoyProcess | None = None
        self._sets: dict[str, list[ObjectRef]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cluster", daemon=True)

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = STARTUP_TIMEOUT) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def status(self) -> StatusChecker:
        return StatusChecker(self.admin, source=self.written_statuses)

    def written_statuses(self) -> dict[str, Any]:
        """The Gateway API objects as the API server holds them now, shaped like the admin's /api/status."""
        objects: list[dict[str, Any]] = []
        for plural, kind in self.STATUS_RESOURCES:
            url = f"{self.api.url}/apis/{m.GATEWAY_GROUP}/v1/{plural}"
            with urllib.request.urlopen(url, timeout=5) as response:
                objects += [{**item, "kind": kind} for item in json.load(response)["items"]]
        return {"objects": objects}

    def start(self, base: Sequence[m.Doc]) -> None:
        self._thread.start()
        self._run(self._start(base))

    async def _start(self, base: Sequence[m.Doc]) -> None:
        await self.api.start()
        self._apply("base", [m.gateway_class(), *base])
        host, port = self.admin.rsplit(":", 1)
        config = ClusterConfig(
            kubeconfig=self.api.write_kubeconfig(self.workdir / "kubeconfig"),
            address="127.0.0.1",
            admin=(host, int(port)),
            xds=self.xds,
            log_level="warning",
        )
        self.service = ClusterService(config)
        await self.service.start()
        self.envoy = EnvoyProcess("conformance", self.xds)
        await self.envoy.start()

    #: Not served by the fake API: the echo pods run in this process, and their EndpointSlices stand in.
    NOT_APPLIED = frozenset({("apps/v1", "Deployment")})

    def _apply(self, name: str, docs: Sequence[m.Doc]) -> None:
        """On the loop: Namespaces first (the API refuses objects in a missing one), then the rest in order."""
        served = [d for d in docs if (d["apiVersion"], d["kind"]) not in self.NOT_APPLIED]
        served.sort(key=lambda d: d["kind"] != "Namespace")
        for doc in served:
            self.api.apply(copy.deepcopy(doc))
        wanted = [_ref(d) for d in served]
        self._delete([r for r in self._sets.get(name, []) if r not in wanted])
        self._sets[name] = wanted

    def _delete(self, refs: Iterable[ObjectRef]) -> None:
        for api_version, kind, namespace, name in reversed(list(refs)):
            with contextlib.suppress(ApiError):  # already gone, e.g. with its Namespace
                self.api.delete(api_version, kind, name, namespace)

    def apply(self, name: str, docs: Sequence[m.Doc]) -> None:
        async def apply() -> None:
            self._apply(name, docs)

        self._run(apply())

    def remove(self, name: str) -> None:
        async def remove() -> None:
            self._delete(self._sets.pop(name, []))

        self._run(remove())

    def alive(self) -> bool:
        return self._thread.is_alive() and self.envoy is not None and self.envoy.running

    def log_tail(self, lines: int = 40) -> str:
        return self.envoy.log_tail(lines) if self.envoy is not None else "(Envoy not started)"

    def stop(self) -> None:
        async def stop() -> None:
            if self.envoy is not None:
                await self.envoy.stop()
            if self.service is not None:
                await self.service.stop()
            await self.api.stop()

        if self._thread.is_alive():
            try:
                self._run(stop())
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=10)
        self._loop.close()


@dataclass
class Applied:
    """What a test applied: its objects (after preparation) under the name of its manifest."""

    name: str
    docs: list[m.Doc]

    def find(self, kind: str, namespace: str, name: str) -> m.Doc:
        for doc in self.docs:
            if m.key(doc) == (kind, namespace, name):
                return doc
        raise KeyError((kind, namespace, name))


@dataclass
class Conformance:
    """The environment every conformance test runs in; `mode` picks the backend (STANDALONE or CLUSTER)."""

    upstream: Path
    workdir: Path
    mode: str = STANDALONE
    book: m.AddressBook = field(default_factory=lambda: m.AddressBook(pick_network()))
    echoes: EchoPool = field(default_factory=EchoPool)
    secrets: dict[tuple[str, str], m.TLSPair] = field(default_factory=dict)
    cas: dict[tuple[str, str], m.TLSPair] = field(default_factory=dict)
    base_docs: list[m.Doc] = field(default_factory=list)
    backend: Backend | None = None

    @property
    def status(self) -> StatusChecker:
        assert self.backend is not None
        return self.backend.status

    def prepare(self, docs: Sequence[m.Doc], suite_secrets: bool = False) -> list[m.Doc]:
        """Class name, addresses, echo backends with their EndpointSlices, and Secrets for `docs`.

        `suite_secrets` adds the Secrets and CA ConfigMaps upstream's suite creates at setup whether or not
        they are referenced. Other Secrets are only ever the suite's: one a manifest refers to but neither
        it nor the suite creates is meant to be missing.
        """
        docs = m.assign_addresses(m.substitute_class(docs), self.book)
        # a test's Services may select the base Deployments' pods; each pod once (docs may be the base itself)
        pods = list({p.pod: p for p in m.echo_pods([*self.base_docs, *docs])}.values())
        ports = self.echoes.start(pods)
        slices = m.endpoint_slices(docs, pods, ports, self.echoes.h2c_ports())
        created: list[m.Doc] = []
        if suite_secrets:
            for ns, name in m.SUITE_CAS:
                if (ns, name) not in self.cas:
                    created.append(m.ca_config_map(ns, name, self.ca(ns, name)))
        wanted = [r for r in m.referenced_secrets(docs) if r in m.SUITE_SECRETS]
        for ns, name in dict.fromkeys(wanted + (list(m.SUITE_SECRETS) if suite_secrets else [])):
            if (ns, name) not in self.secrets:
                signed = m.SIGNED_SECRETS.get((ns, name))
                if signed is None:
                    self.secrets[(ns, name)] = m.self_signed(m.SECRET_SANS[(ns, name)])
                else:
                    ca = self.ca(*signed.ca)
                    self.secrets[(ns, name)] = pki.issue(ca, signed.hosts, signed.uris, client=signed.client)
                created.append(m.tls_secret(ns, name, self.secrets[(ns, name)]))
        return [*docs, *slices, *created]

    def ca(self, namespace: str, name: str) -> m.TLSPair:
        """The suite CA stored in ConfigMap namespace/name (made on first use, then the same for the run)."""
        if (namespace, name) not in self.cas:
            self.cas[(namespace, name)] = pki.certificate_authority()
        return self.cas[(namespace, name)]

    def start(self) -> None:
        self.base_docs = m.load_documents(self.upstream / "base" / "manifests.yaml")
        prepared = self.prepare(self.base_docs, suite_secrets=True)
        backend: Backend
        if self.mode == STANDALONE:
            backend = StandaloneBackend(self.workdir)
        elif self.mode == CLUSTER:
            backend = ClusterBackend(self.workdir)
        else:
            raise ValueError(f"unknown conformance mode {self.mode!r}")
        self.backend = backend
        backend.start(prepared)

    def close(self) -> None:
        if self.backend is not None:
            self.backend.stop()
        self.echoes.close()

    def test_manifests(self, name: str) -> list[m.Doc]:
        return m.load_documents(self.upstream / "tests" / f"{name}.yaml")

    @contextlib.contextmanager
    def applied(self, name: str) -> Iterator[Applied]:
        """Serve the upstream test manifest `tests/<name>.yaml` for the duration of the block."""
        backend = self.backend
        assert backend is not None
        if not backend.alive():
            raise RuntimeError(f"the gateway ({self.mode}) is not running any more:\n{backend.log_tail()}")
        docs = self.prepare(self.test_manifests(name))
        backend.apply(name, docs)
        passed = False
        try:
            yield Applied(name, docs)
            passed = True
        finally:
            backend.remove(name)
            if backend.alive():
                # wait until the control plane itself has dropped them, so the next test starts clean
                try:
                    StatusChecker(backend.admin).objects_gone(k for k in map(m.key, docs) if k[0] in STATUS_KINDS)
                except StatusTimeout:
                    if passed:  # otherwise the test's own failure is the one to report
                        raise

    def rewrite(self, applied: Applied, docs: list[m.Doc]) -> None:
        """Change an applied test's objects (upstream patches objects in the cluster)."""
        assert self.backend is not None
        applied.docs = docs
        self.backend.apply(applied.name, docs)

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
