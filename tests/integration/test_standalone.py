"""`stackway up` end to end, in-process: a watched directory, the control plane, the xDS server and a real
Envoy, with echo backends on 127.0.0.1. Covers what a user of standalone mode relies on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from tests.integration.xds_fixtures import free_port

from stackway.demo.echo import EchoServer, start_echo
from stackway.demo.manifests import gateway, gateway_class, http_route, service_with_endpoints
from stackway.standalone import Standalone, StandaloneConfig
from stackway.xds_server import SnapshotCache, XdsServer

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(90)]
MODES = [pytest.param(False, id="sotw"), pytest.param(True, id="delta")]


def manifests(listen_port: int, backends: dict[str, int], route_to: str, **backend_ref: Any) -> list[dict[str, Any]]:
    """GatewayClass, Gateway `gw`, HTTPRoute `app` to `route_to` (extra backendRef fields from `backend_ref`),
    and a Service + EndpointSlice per backend, all in `default`."""
    route = http_route("app", "default", "gw", {route_to: 1})
    route["spec"]["rules"][0]["backendRefs"][0] = {"name": route_to, "port": 80, **backend_ref}
    docs = [gateway_class(), gateway("gw", "default", listen_port), route]
    for name, target in backends.items():
        docs += service_with_endpoints(name, "default", target)
    return docs


def write(path: Path, docs: list[dict[str, Any]] | str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(docs if isinstance(docs, str) else yaml.safe_dump_all(docs))
    tmp.replace(path)


@dataclass
class Running:
    gateway: Standalone
    directory: Path
    port: int
    backends: dict[str, int]
    admin: str

    def route_to(self, name: str, **backend_ref: Any) -> None:
        write(self.directory / "app.yaml", manifests(self.port, self.backends, name, **backend_ref))

    async def admin_json(self, path: str) -> Any:
        async with aiohttp.ClientSession() as session, session.get(f"{self.admin}{path}") as resp:
            return json.loads(await resp.text())


async def served_by(port: int) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/") as resp:
        if resp.status != 200:
            return f"HTTP {resp.status}"
        return str(json.loads(await resp.text())["service"])


async def eventually_served_by(port: int, name: str, limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    last = ""
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            last = await served_by(port)
            if last == name:
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"still served by {last!r}, expected {name!r}")


@contextlib.asynccontextmanager
async def running(tmp_path: Path, delta: bool = True) -> AsyncIterator[Running]:
    echoes: list[EchoServer] = []
    backends = {}
    for name in ("blue", "green"):
        echo = await start_echo("127.0.0.1", 0, f"{name}-0", "default", name)
        echoes.append(echo)
        backends[name] = echo.port
    port, admin = free_port(), free_port()
    write(tmp_path / "app.yaml", manifests(port, backends, "blue"))
    gateway = Standalone(
        StandaloneConfig(
            directory=tmp_path,
            address="127.0.0.1",
            admin=("127.0.0.1", admin),
            xds=("127.0.0.1", free_port()),
            envoy_admin=("127.0.0.1", free_port()),
            delta=delta,
            log_level="warning",
        )
    )
    await gateway.start()
    try:
        await gateway.cache.wait_acked(gateway.control.snapshot.version, 20)
        await eventually_served_by(port, "blue")
        yield Running(gateway, tmp_path, port, backends, f"http://127.0.0.1:{admin}")
    finally:
        await gateway.stop()
        for echo in echoes:
            await echo.close()


class Load:
    """Steady traffic on keep-alive connections, counting every answer; errors are what the tests forbid."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.counts: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while True:
                try:
                    async with session.get(f"http://127.0.0.1:{self.port}/") as resp:
                        body = await resp.text()
                        self.counts[json.loads(body)["service"] if resp.status == 200 else f"HTTP {resp.status}"] += 1
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    self.counts[f"error {type(exc).__name__}"] += 1
                    await asyncio.sleep(0.01)

    def __enter__(self) -> Load:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    def failures(self) -> dict[str, int]:
        return {k: v for k, v in self.counts.items() if k not in ("blue", "green")}


@pytest.mark.parametrize("delta", MODES)
async def test_file_edit_takes_effect_without_restart(tmp_path: Path, delta: bool) -> None:
    async with running(tmp_path, delta) as run:
        pid = run.gateway.envoy.pid
        with Load(run.port) as load:
            for target in ("green", "blue", "green"):
                run.route_to(target)
                await eventually_served_by(run.port, target)
            await asyncio.sleep(0.2)
        assert run.gateway.envoy.pid == pid, "Envoy must not be restarted for a config change"
        assert load.failures() == {}, load.counts
        assert load.counts["blue"] > 0
        assert load.counts["green"] > 0


async def test_weighted_split_follows_weights(tmp_path: Path) -> None:
    async with running(tmp_path) as run:
        docs = manifests(run.port, run.backends, "blue", weight=3)
        docs[2]["spec"]["rules"][0]["backendRefs"].append({"name": "green", "port": 80, "weight": 1})
        write(run.directory / "app.yaml", docs)
        await eventually_served_by(run.port, "green")
        seen: Counter[str] = Counter()
        async with aiohttp.ClientSession() as session:
            for _ in range(400):
                async with session.get(f"http://127.0.0.1:{run.port}/") as resp:
                    seen[json.loads(await resp.text())["service"]] += 1
        assert 0.15 < seen["green"] / 400 < 0.35, seen


async def test_invalid_edit_keeps_last_good_config_and_reports_the_field(tmp_path: Path) -> None:
    async with running(tmp_path) as run:
        with Load(run.port) as load:
            run.route_to("green", port="eighty")
            deadline = time.monotonic() + 5
            problems: list[dict[str, Any]] = []
            while time.monotonic() < deadline and not problems:
                status = await run.admin_json("/api/status")
                problems = [p for p in status["problems"] if p["field"] == "spec.rules[0].backendRefs[0].port"]
                await asyncio.sleep(0.05)
            assert problems, "the invalid field must show in /api/status"
            assert problems[0]["file"] == "app.yaml"
            assert await served_by(run.port) == "blue"
            run.route_to("green")
            await eventually_served_by(run.port, "green")
        assert load.failures() == {}, load.counts
        status = await run.admin_json("/api/status")
        assert not [p for p in status["problems"] if p["severity"] == "error"]


async def test_unparseable_file_keeps_its_objects(tmp_path: Path) -> None:
    async with running(tmp_path) as run:
        write(run.directory / "app.yaml", "kind: [unclosed\n")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            problems = (await run.admin_json("/api/status"))["problems"]
            if any(p.get("file") == "app.yaml" and p.get("line") for p in problems):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"no file:line problem reported: {problems}")
        assert await served_by(run.port) == "blue"


async def test_admin_api(tmp_path: Path) -> None:
    async with running(tmp_path) as run, aiohttp.ClientSession() as session:
        async with session.get(f"{run.admin}/healthz") as resp:
            assert resp.status == 200
        async with session.get(f"{run.admin}/readyz") as resp:
            assert resp.status == 200
            assert run.gateway.control.snapshot.version in await resp.text()
        config = await run.admin_json("/api/config")
        assert config["version"] == run.gateway.control.snapshot.version
        [envoy] = config["envoys"]
        assert envoy["node_id"] == "stackway-standalone"
        status = await run.admin_json("/api/status")
        route = next(o for o in status["objects"] if o["kind"] == "HTTPRoute")
        accepted = next(c for c in route["status"]["parents"][0]["conditions"] if c["type"] == "Accepted")
        assert accepted["status"] == "True"
        assert accepted["observedGeneration"] == route["metadata"]["generation"]
        async with session.get(f"{run.admin}/metrics") as resp:
            text = await resp.text()
        assert 'stackway_translations_total{result="ok"}' in text
        assert "stackway_xds_" in text


async def test_control_plane_restart_drops_no_request(tmp_path: Path) -> None:
    """The xDS server goes away and a new one (fresh cache, same config) takes over; Envoy keeps serving."""
    async with running(tmp_path) as run:
        gateway = run.gateway
        with Load(run.port) as load:
            await asyncio.sleep(0.3)
            await gateway.xds.stop(0)
            await asyncio.sleep(1.0)
            gateway.cache = SnapshotCache()
            await gateway.cache.set(gateway.control.snapshot)
            gateway.xds = XdsServer(gateway.cache, *gateway.config.xds)
            await gateway.xds.start()
            await gateway.cache.wait_acked(gateway.control.snapshot.version, 15)
            await asyncio.sleep(0.3)
        assert load.failures() == {}, load.counts
        assert load.counts["blue"] > 50


async def test_nack_keeps_serving_and_shows_in_status_and_config(tmp_path: Path) -> None:
    """A config Envoy refuses (pushed past the builder's checks) leaves the last good one serving, visibly."""

    from stackway.xds.snapshot import ROUTE, Snapshot

    async with running(tmp_path) as run:
        good = run.gateway.control.snapshot
        resources = {t: dict(by_name) for t, by_name in good.resources.items()}
        [(name, route_config)] = resources[ROUTE].items()
        broken = type(route_config)()
        broken.CopyFrom(route_config)
        broken.virtual_hosts[0].routes[0].match.Clear()
        broken.virtual_hosts[0].routes[0].match.safe_regex.regex = "(((("
        resources[ROUTE][name] = broken
        with Load(run.port) as load:
            await run.gateway.cache.set(Snapshot(resources=resources))
            deadline = time.monotonic() + 5
            nacks: list[dict[str, Any]] = []
            while time.monotonic() < deadline and not nacks:
                nacks = [p for p in (await run.admin_json("/api/status"))["problems"] if p["field"] == "RDS"]
                await asyncio.sleep(0.05)
            assert nacks, "the NACK must show in /api/status"
            assert "rejected RDS" in nacks[0]["message"]
            config = await run.admin_json("/api/config")
            assert config["envoys"][0]["types"]["RDS"]["last_nack"] is not None
            assert await served_by(run.port) == "blue"
        assert load.failures() == {}, load.counts


async def test_cors_preflight_is_answered_by_the_gateway(tmp_path: Path) -> None:
    async with running(tmp_path) as run:
        docs = manifests(run.port, run.backends, "blue")
        docs[2]["spec"]["rules"][0]["filters"] = [
            {
                "type": "CORS",
                "cors": {
                    "allowOrigins": ["https://*.example.com"],
                    "allowMethods": ["GET", "PUT"],
                    "allowHeaders": ["x-custom"],
                    "maxAge": 600,
                },
            }
        ]
        write(run.directory / "app.yaml", docs)
        headers = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "PUT"}
        deadline = time.monotonic() + 5
        async with aiohttp.ClientSession() as session:
            while True:
                async with session.options(f"http://127.0.0.1:{run.port}/", headers=headers) as resp:
                    allowed = resp.headers.get("access-control-allow-origin")
                    if allowed or time.monotonic() > deadline:
                        break
                await asyncio.sleep(0.05)
            assert resp.status == 200
            assert allowed == "https://app.example.com"
            assert "PUT" in resp.headers.get("access-control-allow-methods", "")
            assert resp.headers.get("access-control-max-age") == "600"
            other = {"Origin": "https://evil.test", "Access-Control-Request-Method": "PUT"}
            async with session.options(f"http://127.0.0.1:{run.port}/", headers=other) as resp:
                assert "access-control-allow-origin" not in resp.headers


def _self_signed(tmp_path: Path, hostname: str) -> ssl.SSLContext:
    """A server context for `hostname`, from a throwaway self-signed certificate."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / ".cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / ".key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / ".cert.pem", tmp_path / ".key.pem")
    return context


async def test_tls_passthrough_routes_by_sni_without_terminating(tmp_path: Path) -> None:
    """The backend's own certificate reaches the client: Envoy only read the SNI and proxied the bytes."""
    backend_dir = tmp_path / "backend"
    backend_dir.mkdir()
    secure = await start_echo(
        "127.0.0.1", 0, "secure-0", "default", "secure", tls=_self_signed(backend_dir, "abc.example.com")
    )
    watched = tmp_path / "manifests"
    watched.mkdir()
    try:
        async with running(watched) as run:
            tls_port = free_port()
            docs = manifests(run.port, run.backends, "blue")
            docs[1]["spec"]["listeners"].append(
                {
                    "name": "tls",
                    "port": tls_port,
                    "protocol": "TLS",
                    "hostname": "*.example.com",
                    "tls": {"mode": "Passthrough"},
                }
            )
            docs += [
                {
                    "apiVersion": "gateway.networking.k8s.io/v1",
                    "kind": "TLSRoute",
                    "metadata": {"name": "secure"},
                    "spec": {
                        "parentRefs": [{"name": "gw", "sectionName": "tls"}],
                        "hostnames": ["abc.example.com"],
                        "rules": [{"backendRefs": [{"name": "secure", "port": 443}]}],
                    },
                },
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "secure"},
                    "spec": {"ports": [{"name": "https", "port": 443}]},
                },
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {"name": "secure-1", "labels": {"kubernetes.io/service-name": "secure"}},
                    "addressType": "IPv4",
                    "ports": [{"name": "https", "port": secure.port}],
                    "endpoints": [{"addresses": ["127.0.0.1"]}],
                },
            ]
            write(run.directory / "app.yaml", docs)
            client = ssl.create_default_context(cafile=str(backend_dir / ".cert.pem"))
            deadline = time.monotonic() + 10
            body: dict[str, Any] = {}
            while time.monotonic() < deadline and not body:
                with contextlib.suppress(ssl.SSLError, ConnectionError, OSError):
                    body = await _https_get(tls_port, "abc.example.com", client)
                await asyncio.sleep(0.05)
            assert body.get("service") == "secure"
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                await _https_get(tls_port, "other.org", client)
    finally:
        await secure.close()


async def _https_get(port: int, sni: str, context: ssl.SSLContext) -> dict[str, Any]:
    """GET / over TLS with the given SNI to 127.0.0.1:port, returning the echo's JSON ({} when not yet)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=sni)
    try:
        writer.write(f"GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
    _, _, payload = data.partition(b"\r\n\r\n")
    try:
        return dict(json.loads(payload))
    except ValueError:
        return {}


async def test_route_churn_under_traffic_gives_no_gateway_errors(tmp_path: Path) -> None:
    """Up to 1,000 routes added, reordered, re-pointed and removed, weights changed and endpoints scaled,
    while steady traffic hits one route: every answer must come from a backend (no 404/503 of Envoy's)."""
    async with running(tmp_path) as run:
        extra = await start_echo("127.0.0.1", 0, "blue-1", "default", "blue")
        try:

            def churn_docs(count: int, reverse: bool, target: str) -> list[dict[str, Any]]:
                names = [f"churn-{i}" for i in range(count)]
                if reverse:
                    names.reverse()
                return [
                    {
                        "apiVersion": "gateway.networking.k8s.io/v1",
                        "kind": "HTTPRoute",
                        "metadata": {"name": n},
                        "spec": {
                            "parentRefs": [{"name": "gw"}],
                            "rules": [
                                {
                                    "matches": [{"path": {"type": "PathPrefix", "value": f"/{n}"}}],
                                    "backendRefs": [{"name": target, "port": 80}],
                                }
                            ],
                        },
                    }
                    for n in names
                ]

            def slice_for_blue(*ports: int) -> dict[str, Any]:
                return {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {"name": "blue-1", "labels": {"kubernetes.io/service-name": "blue"}},
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": ports[0]}],
                    "endpoints": [{"addresses": ["127.0.0.1"]}],
                }

            steps: list[tuple[str, list[dict[str, Any]]]] = [
                ("churn.yaml", churn_docs(300, False, "green")),
                ("churn.yaml", churn_docs(1000, True, "blue")),
                ("churn.yaml", churn_docs(1000, False, "green")),
                ("churn.yaml", churn_docs(150, False, "green")),
                ("churn.yaml", churn_docs(1000, True, "green")),
                ("churn.yaml", []),
            ]
            with Load(run.port) as load:
                applied = []
                for file, docs in steps:
                    write(run.directory / file, docs or "")
                    # each step must really reach Envoy (not be coalesced away): the route count, then the ACK
                    deadline = time.monotonic() + 20
                    while len(run.gateway.control.resources.http_routes) != len(docs) + 1:
                        assert time.monotonic() < deadline, f"step with {len(docs)} routes never applied"
                        await asyncio.sleep(0.02)
                    await run.gateway.cache.wait_acked(run.gateway.control.snapshot.version, 20)
                    applied.append(len(docs))
                    await asyncio.sleep(0.1)
                assert applied == [300, 1000, 1000, 150, 1000, 0]
                for weights in ((90, 10), (50, 50), (0, 100), (100, 0)):
                    docs = manifests(run.port, run.backends, "blue", weight=weights[0])
                    docs[2]["spec"]["rules"][0]["backendRefs"].append(
                        {"name": "green", "port": 80, "weight": weights[1]}
                    )
                    write(run.directory / "app.yaml", docs)
                    await asyncio.sleep(0.3)
                for port in (extra.port, run.backends["blue"], extra.port, run.backends["blue"]):
                    docs = [d for d in manifests(run.port, run.backends, "blue") if d["metadata"]["name"] != "blue-1"]
                    write(run.directory / "app.yaml", [*docs, slice_for_blue(port)])
                    await asyncio.sleep(0.3)
                await run.gateway.cache.wait_acked(run.gateway.control.snapshot.version, 10)
                await asyncio.sleep(0.2)
            total = sum(load.counts.values())
            print(f"\nchurn: {total} requests, by answer: {dict(load.counts)}")
            assert load.failures() == {}, load.counts
            assert total > 300
        finally:
            await extra.close()


async def test_cookie_session_persistence_pins_one_endpoint(tmp_path: Path) -> None:
    async with running(tmp_path) as run:
        second = await start_echo("127.0.0.1", 0, "blue-1", "default", "blue")
        try:
            docs = manifests(run.port, run.backends, "blue")
            docs[2]["spec"]["rules"][0]["sessionPersistence"] = {"sessionName": "sticky", "type": "Cookie"}
            for doc in docs:
                if doc["kind"] == "EndpointSlice" and doc["metadata"]["name"] == "blue-1":
                    doc["ports"] = [{"name": "http", "port": run.backends["blue"]}]
                    doc["endpoints"] = [{"addresses": ["127.0.0.1"]}]
            # a second endpoint of the same Service, on another port, in its own slice
            docs.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {"name": "blue-2", "labels": {"kubernetes.io/service-name": "blue"}},
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": second.port}],
                    "endpoints": [{"addresses": ["127.0.0.1"]}],
                }
            )
            write(run.directory / "app.yaml", docs)
            url = f"http://127.0.0.1:{run.port}/"
            deadline = time.monotonic() + 10
            cookie = None
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
                while cookie is None and time.monotonic() < deadline:
                    async with session.get(url) as resp:
                        cookie = resp.cookies.get("sticky")
                    await asyncio.sleep(0.05)
                assert cookie is not None, "Envoy must set the session cookie"
                pods = set()
                for _ in range(20):
                    async with session.get(url, headers={"Cookie": f"sticky={cookie.value}"}) as resp:
                        pods.add(json.loads(await resp.text())["pod"])
                assert len(pods) == 1, pods
                unpinned = set()
                for _ in range(40):
                    async with session.get(url) as resp:
                        unpinned.add(json.loads(await resp.text())["pod"])
                assert unpinned == {"blue-0", "blue-1"}, "without the cookie both endpoints serve"
        finally:
            await second.close()


async def test_backend_tls_policy_verifies_the_backend(tmp_path: Path) -> None:
    """Envoy speaks TLS to the backend and verifies it against the ConfigMap's CA and the policy's hostname;
    a mismatched hostname or a missing CA never falls back to unverified traffic."""
    certs = tmp_path / "certs"
    certs.mkdir()
    secure = await start_echo(
        "127.0.0.1", 0, "secure-0", "default", "secure", tls=_self_signed(certs, "abc.example.com")
    )
    watched = tmp_path / "manifests"
    watched.mkdir()
    ca_pem = (certs / ".cert.pem").read_text()
    try:
        async with running(watched) as run:

            def docs_with(hostname: str, ca_name: str) -> list[dict[str, Any]]:
                docs = manifests(run.port, run.backends, "secure")
                docs += [
                    {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "metadata": {"name": "secure"},
                        "spec": {"ports": [{"name": "btls", "port": 80}]},
                    },
                    {
                        "apiVersion": "discovery.k8s.io/v1",
                        "kind": "EndpointSlice",
                        "metadata": {"name": "secure-1", "labels": {"kubernetes.io/service-name": "secure"}},
                        "addressType": "IPv4",
                        "ports": [{"name": "btls", "port": secure.port}],
                        "endpoints": [{"addresses": ["127.0.0.1"]}],
                    },
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": "backend-ca"},
                        "data": {"ca.crt": ca_pem},
                    },
                    {
                        "apiVersion": "gateway.networking.k8s.io/v1",
                        "kind": "BackendTLSPolicy",
                        "metadata": {"name": "secure"},
                        "spec": {
                            "targetRefs": [{"group": "", "kind": "Service", "name": "secure", "sectionName": "btls"}],
                            "validation": {
                                "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": ca_name}],
                                "hostname": hostname,
                            },
                        },
                    },
                ]
                return docs

            write(run.directory / "app.yaml", docs_with("abc.example.com", "backend-ca"))
            await eventually_served_by(run.port, "secure")
            write(run.directory / "app.yaml", docs_with("other.example.com", "backend-ca"))
            await eventually_served_by(run.port, "HTTP 503")
            write(run.directory / "app.yaml", docs_with("abc.example.com", "no-such-ca"))
            deadline = time.monotonic() + 5
            resolved: dict[str, Any] = {}
            while time.monotonic() < deadline and resolved.get("status") != "False":
                status = await run.admin_json("/api/status")
                policy = next(o for o in status["objects"] if o["kind"] == "BackendTLSPolicy")
                [ancestor] = policy["status"]["ancestors"]
                resolved = next(c for c in ancestor["conditions"] if c["type"] == "ResolvedRefs")
                await asyncio.sleep(0.05)
            assert (resolved["status"], resolved["reason"]) == ("False", "InvalidCACertificateRef")
            assert await served_by(run.port) == "HTTP 503"
            write(run.directory / "app.yaml", docs_with("abc.example.com", "backend-ca"))
            await eventually_served_by(run.port, "secure")
    finally:
        await secure.close()


async def test_ingress_is_served_through_envoy(tmp_path: Path) -> None:
    """An Ingress of our class routes by host and path; unmatched requests reach its defaultBackend."""
    echo_a = await start_echo("127.0.0.1", 0, "shop-0", "default", "shop")
    echo_b = await start_echo("127.0.0.1", 0, "fallback-0", "default", "fallback")
    port = free_port()
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": "stackway"},
            "spec": {"controller": "stackway.dev/ingress-controller"},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "ingressClassName": "stackway",
                "defaultBackend": {"service": {"name": "fallback", "port": {"number": 80}}},
                "rules": [
                    {
                        "host": "shop.example.com",
                        "http": {
                            "paths": [
                                {
                                    "path": "/cart",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "shop", "port": {"name": "http"}}},
                                }
                            ]
                        },
                    }
                ],
            },
        },
        *service_with_endpoints("shop", "default", echo_a.port),
        *service_with_endpoints("fallback", "default", echo_b.port),
    ]
    write(tmp_path / "ingress.yaml", docs)
    gateway = Standalone(
        StandaloneConfig(
            directory=tmp_path,
            address="127.0.0.1",
            admin=("127.0.0.1", free_port()),
            xds=("127.0.0.1", free_port()),
            envoy_admin=("127.0.0.1", free_port()),
            log_level="warning",
            ingress_http_port=port,
        )
    )
    await gateway.start()
    try:
        await gateway.cache.wait_acked(gateway.control.snapshot.version, 20)

        async def pod(host: str, path: str) -> str:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}{path}", headers={"Host": host}) as resp,
            ):
                return str(json.loads(await resp.text())["pod"])

        assert await pod("shop.example.com", "/cart/items") == "shop-0"
        assert await pod("shop.example.com", "/cartoon") == "fallback-0"
        assert await pod("other.example.com", "/cart") == "fallback-0"
        ingress = next(d for d in gateway.control.status_document() if d["kind"] == "Ingress")
        assert ingress["status"] == {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}
    finally:
        await gateway.stop()
        await echo_a.close()
        await echo_b.close()


async def test_websocket_upgrade_passes_through(tmp_path: Path) -> None:
    from aiohttp import web

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(f"echo:{message.data}")
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    ws_port = runner.addresses[0][1]
    try:
        async with running(tmp_path) as run:
            docs = manifests(run.port, {**run.backends, "sockets": ws_port}, "sockets")
            write(run.directory / "app.yaml", docs)
            deadline = time.monotonic() + 10
            reply = None
            async with aiohttp.ClientSession() as session:
                # Until the route moves, the echo backend (which has a /ws of its own) may still answer "hello".
                while reply != "echo:hello" and time.monotonic() < deadline:
                    try:
                        async with session.ws_connect(f"http://127.0.0.1:{run.port}/ws") as ws:
                            await ws.send_str("hello")
                            reply = (await ws.receive(timeout=2)).data
                    except aiohttp.WSServerHandshakeError:
                        await asyncio.sleep(0.05)
            assert reply == "echo:hello"
    finally:
        await runner.cleanup()


async def test_grpc_route_reaches_a_grpc_backend_over_h2c(tmp_path: Path) -> None:
    import grpc

    def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"pong:" + request

    handler = grpc.method_handlers_generic_handler(
        "echo.v1.Echo",
        {"Ping": grpc.unary_unary_rpc_method_handler(unary)},  # raw bytes in and out
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with running(tmp_path) as run:
            docs = manifests(run.port, {**run.backends, "grpc-echo": grpc_port}, "blue")
            docs.append(
                {
                    "apiVersion": "gateway.networking.k8s.io/v1",
                    "kind": "GRPCRoute",
                    "metadata": {"name": "echo"},
                    "spec": {
                        "parentRefs": [{"name": "gw"}],
                        "hostnames": ["grpc.example.com"],
                        "rules": [
                            {
                                "matches": [{"method": {"service": "echo.v1.Echo", "method": "Ping"}}],
                                "backendRefs": [{"name": "grpc-echo", "port": 80}],
                            }
                        ],
                    },
                }
            )
            write(run.directory / "app.yaml", docs)
            async with grpc.aio.insecure_channel(
                f"127.0.0.1:{run.port}", options=[("grpc.default_authority", "grpc.example.com")]
            ) as channel:
                ping = channel.unary_unary("/echo.v1.Echo/Ping")
                deadline = time.monotonic() + 10
                answer = None
                while answer is None and time.monotonic() < deadline:
                    try:
                        answer = await ping(b"x", timeout=2)
                    except grpc.aio.AioRpcError:
                        await asyncio.sleep(0.05)
                assert answer == b"pong:x"
                with pytest.raises(grpc.aio.AioRpcError):
                    await channel.unary_unary("/echo.v1.Echo/Other")(b"x", timeout=2)
    finally:
        await server.stop(0)


async def test_frontend_client_certificate_validation(tmp_path: Path) -> None:
    """A Gateway asking for client certificates: a client with one from the CA gets through, one without
    is refused in the TLS handshake."""
    import base64

    from stackway import certs

    server_dir = tmp_path / "server"
    server_dir.mkdir()
    _self_signed(server_dir, "secure.example.com")
    bundle = certs.generate()  # a CA and a client certificate it signed
    (tmp_path / "client.crt").write_bytes(bundle.client.cert_pem)
    (tmp_path / "client.key").write_bytes(bundle.client.key_pem)
    watched = tmp_path / "manifests"
    watched.mkdir()
    async with running(watched) as run:
        tls_port = free_port()
        docs = manifests(run.port, run.backends, "blue")
        docs[1]["spec"]["listeners"].append(
            {
                "name": "https",
                "port": tls_port,
                "protocol": "HTTPS",
                "hostname": "secure.example.com",
                "tls": {"certificateRefs": [{"name": "server-cert"}]},
            }
        )
        docs[1]["spec"]["tls"] = {
            "frontend": {"default": {"validation": {"caCertificateRefs": [{"kind": "ConfigMap", "name": "clients"}]}}}
        }
        docs += [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "server-cert"},
                "type": "kubernetes.io/tls",
                "data": {
                    "tls.crt": base64.b64encode((server_dir / ".cert.pem").read_bytes()).decode(),
                    "tls.key": base64.b64encode((server_dir / ".key.pem").read_bytes()).decode(),
                },
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "clients"},
                "data": {"ca.crt": bundle.ca.cert_pem.decode()},
            },
        ]
        write(run.directory / "app.yaml", docs)
        with_cert = ssl.create_default_context(cafile=str(server_dir / ".cert.pem"))
        with_cert.load_cert_chain(tmp_path / "client.crt", tmp_path / "client.key")
        deadline = time.monotonic() + 10
        body: dict[str, Any] = {}
        while time.monotonic() < deadline and not body:
            with contextlib.suppress(ssl.SSLError, ConnectionError, OSError):
                body = await _https_get(tls_port, "secure.example.com", with_cert)
            await asyncio.sleep(0.05)
        assert body.get("service") == "blue"
        without_cert = ssl.create_default_context(cafile=str(server_dir / ".cert.pem"))
        try:  # with TLS 1.3 the refusal arrives after the client's side of the handshake, on first read
            answer = await _https_get(tls_port, "secure.example.com", without_cert)
        except (ssl.SSLError, ConnectionError, OSError):
            answer = {}
        assert answer == {}, "a client without a certificate must not reach the backend"
