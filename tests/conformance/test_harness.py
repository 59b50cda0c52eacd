"""The conformance harness's own pieces, without stackway or Envoy: manifest preparation, certificates, the
echo backend, and the request/status expectation logic. These run in every test run and must stay fast."""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import json
import socket
import ssl
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from stackway.demo.echo import canonical_header_key, parse_go_duration, start_echo
from tests.conformance import manifests as m
from tests.conformance import status as status_module
from tests.conformance.client import Captured, Case, Expect, ExpectedRequest, Redirect, Request, Target, compare, send
from tests.conformance.harness import ENV_NETWORK, Conformance, EchoPool, can_bind, pick_network
from tests.conformance.status import (
    Cond,
    ExpectedParent,
    StatusChecker,
    StatusTimeout,
    condition_matches,
    parent_matches,
    stale_conditions,
)


@pytest.fixture(scope="module")
def upstream() -> Path:
    path = m.conformance_dir()
    if not (path / "base" / "manifests.yaml").is_file():
        pytest.skip(f"upstream conformance manifests not found at {path} (set {m.ENV_DIR})")
    return path


@pytest.fixture(scope="module")
def base_docs(upstream: Path) -> list[m.Doc]:
    return m.load_documents(upstream / "base" / "manifests.yaml")


# -- manifest preparation ---------------------------------------------------------------------------------


def test_class_placeholder_is_replaced_and_class_is_ours(base_docs: list[m.Doc]) -> None:
    docs = m.substitute_class(base_docs)
    gateways = [d for d in docs if d["kind"] == "Gateway"]
    assert {g["metadata"]["name"] for g in gateways} == {
        "same-namespace",
        "same-namespace-with-https-listener",
        "all-namespaces",
        "backend-namespaces",
    }
    assert {g["spec"]["gatewayClassName"] for g in gateways} == {m.GATEWAY_CLASS_NAME}
    assert m.gateway_class()["spec"]["controllerName"] == "stackway.dev/gateway-controller"
    # the input is not modified: tests load the same documents again
    assert {d["spec"]["gatewayClassName"] for d in base_docs if d["kind"] == "Gateway"} == {m.CLASS_PLACEHOLDER}


def test_every_gateway_gets_its_own_stable_loopback_address(base_docs: list[m.Doc]) -> None:
    book = m.AddressBook()
    docs = m.assign_addresses(base_docs, book)
    addresses = {m.key(d)[2]: d["spec"]["addresses"] for d in docs if d["kind"] == "Gateway"}  # name → spec.addresses
    values = [a[0]["value"] for a in addresses.values()]
    assert len(set(values)) == 4
    assert all(v.startswith("127.") for v in values)
    assert all(a == [{"type": "IPAddress", "value": book.address(m.INFRA_NS, n)}] for n, a in addresses.items())
    # asking again (a later test's Gateway, or the same one) never reshuffles
    assert m.assign_addresses(base_docs, book) == docs
    assert book.address("other", "gw") not in values


def test_each_run_picks_a_free_loopback_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Concurrent runs must not share Gateway addresses: Envoy's SO_REUSEPORT would split their traffic."""
    monkeypatch.delenv(ENV_NETWORK, raising=False)
    if not can_bind("127.0.0.2", 80):
        pytest.skip("ports below 1024 cannot be bound by this user")
    networks = {pick_network() for _ in range(5)}
    assert all(n.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")) and n.prefixlen == 24 for n in networks)
    assert len(networks) > 1
    with socket.socket() as taken:
        taken.bind(("127.0.77.1", 80))
        taken.listen()
        monkeypatch.setenv(ENV_NETWORK, "127.0.77.0/24")
        with pytest.raises(RuntimeError, match="already listens"):
            pick_network()


def test_address_book_refuses_non_loopback_networks() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        m.AddressBook(network=ipaddress.IPv4Network("10.0.0.0/24"))


def test_echo_pods_follow_http_and_grpc_echo_deployments_and_replicas(base_docs: list[m.Doc]) -> None:
    pods = m.echo_pods(base_docs)
    by_deployment: dict[tuple[str, str], list[str]] = {}
    for pod in pods:
        by_deployment.setdefault((pod.namespace, pod.deployment), []).append(pod.pod)
    assert by_deployment.keys() == {
        (m.INFRA_NS, "infra-backend-v1"),
        (m.INFRA_NS, "infra-backend-v2"),
        (m.INFRA_NS, "infra-backend-v3"),
        ("gateway-conformance-app-backend", "app-backend-v1"),
        ("gateway-conformance-app-backend", "app-backend-v2"),
        ("gateway-conformance-web-backend", "web-backend"),
        (m.INFRA_NS, "grpc-infra-backend-v1"),
        (m.INFRA_NS, "grpc-infra-backend-v2"),
        (m.INFRA_NS, "grpc-infra-backend-v3"),
    }  # TCP and TLS-only echoes and coredns are started by the tests that need them, or not at all
    protocols = {(p.deployment, p.protocol) for p in pods}
    assert ("grpc-infra-backend-v2", m.GRPC) in protocols
    assert ("infra-backend-v2", m.HTTP) in protocols
    assert len(by_deployment[(m.INFRA_NS, "grpc-infra-backend-v3")]) == 2
    assert len(by_deployment[(m.INFRA_NS, "infra-backend-v1")]) == 2
    assert len(by_deployment[(m.INFRA_NS, "infra-backend-v3")]) == 1
    names = [p.pod for p in pods]
    assert len(set(names)) == len(names)
    for (_, deployment), pod_names in by_deployment.items():
        for name in pod_names:
            # upstream checks strings.HasPrefix(pod, backend); pods must not look like another backend's
            assert name.startswith(f"{deployment}-")
            assert name.count("-") == deployment.count("-") + 2


def test_endpoint_slices_link_services_to_each_selected_pod(base_docs: list[m.Doc]) -> None:
    pods = m.echo_pods(base_docs)
    ports = {p.pod: 40000 + i for i, p in enumerate(pods)}
    slices = m.endpoint_slices(base_docs, pods, ports)
    infra_v1 = [s for s in slices if s["metadata"]["labels"]["kubernetes.io/service-name"] == "infra-backend-v1"]
    assert len(infra_v1) == 2  # one per pod: they listen on different ports of 127.0.0.1
    for s in infra_v1:
        assert s["apiVersion"] == "discovery.k8s.io/v1"
        assert s["metadata"]["namespace"] == m.INFRA_NS
        assert s["endpoints"][0]["addresses"] == ["127.0.0.1"]
        assert s["endpoints"][0]["conditions"]["ready"] is True
        pod = s["endpoints"][0]["targetRef"]["name"]
        assert [p["name"] for p in s["ports"]] == ["first-port", "second-port", "third-port"]
        assert {p["port"] for p in s["ports"]} == {ports[pod]}
    infra_v2 = [s for s in slices if s["metadata"]["labels"]["kubernetes.io/service-name"] == "infra-backend-v2"]
    assert [p["name"] for p in infra_v2[0]["ports"]] == [""]  # an unnamed Service port
    names = [(s["metadata"]["namespace"], s["metadata"]["name"]) for s in slices]
    assert len(set(names)) == len(names)
    services = {s["metadata"]["labels"]["kubernetes.io/service-name"] for s in slices}
    grpc_v1 = [s for s in slices if s["metadata"]["labels"]["kubernetes.io/service-name"] == "grpc-infra-backend-v1"]
    assert len(grpc_v1) == 2  # the gRPC echo pods, on the Service's unnamed port
    assert [p["name"] for p in grpc_v1[0]["ports"]] == [""]
    assert "tls-backend" not in services  # TLS-only echoes are started by the TLS tests themselves
    assert "coredns" not in services


def test_headless_service_selecting_echo_pods_gets_slices(upstream: Path, base_docs: list[m.Doc]) -> None:
    docs = m.load_documents(upstream / "tests" / "httproute-service-types.yaml")
    pods = m.echo_pods(base_docs)
    slices = m.endpoint_slices(docs, pods, {p.pod: 1000 for p in pods})
    assert {s["metadata"]["labels"]["kubernetes.io/service-name"] for s in slices} == {"headless"}
    manual = next(d for d in docs if m.key(d)[2] == "manual-endpointslices-ip4")
    filled = m.fill_manual_slice(manual, 4242)
    assert filled["endpoints"][0]["addresses"] == ["127.0.0.1"]
    assert filled["ports"] == [{"name": "first-port", "port": 4242, "protocol": "TCP"}]
    assert "endpoints" not in manual
    ip6 = next(d for d in docs if m.key(d)[2] == "manual-endpointslices-ip6")
    assert m.fill_manual_slice(ip6, 4242) == ip6


def test_referenced_secrets_and_their_sans(base_docs: list[m.Doc]) -> None:
    refs = m.referenced_secrets(base_docs)
    assert (m.INFRA_NS, "tls-validity-checks-certificate") in refs
    assert (m.INFRA_NS, "tls-checks-certificate") in refs
    assert ("gateway-conformance-app-backend", "tls-passthrough-checks-certificate") in refs
    assert m.SECRET_SANS[(m.INFRA_NS, "tls-validity-checks-certificate")] == ("*", "*.org")


def test_self_signed_certificate_is_a_tls_secret_with_the_sans() -> None:
    pair = m.self_signed(["*", "*.org", "127.0.0.1"])
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["*", "*.org"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert cert.issuer == cert.subject
    secret = m.tls_secret("ns", "name", pair)
    assert secret["type"] == "kubernetes.io/tls"
    assert set(secret["data"]) == {"tls.crt", "tls.key"}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # the key matches the certificate
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "c.pem").write_bytes(pair.cert_pem)
        (Path(tmp) / "k.pem").write_bytes(pair.key_pem)
        context.load_cert_chain(Path(tmp) / "c.pem", Path(tmp) / "k.pem")


def test_written_files_are_never_seen_half_written(tmp_path: Path) -> None:
    target = tmp_path / "tests" / "x.yaml"
    m.write_atomically(target, m.dump([m.gateway_class()]))
    assert [p.name for p in target.parent.iterdir()] == ["x.yaml"]  # the dotfile was renamed away
    assert m.load_documents(target) == [m.gateway_class()]


def test_prepared_directory_objects_are_unique(upstream: Path, tmp_path: Path) -> None:
    env = Conformance(upstream=upstream, workdir=tmp_path)
    try:
        env.base_docs = m.load_documents(upstream / "base" / "manifests.yaml")
        base = env.prepare(env.base_docs, suite_secrets=True)
        test = env.prepare(env.test_manifests("httproute-service-types"))
    finally:
        env.echoes.close()
    keys = [m.key(d) for d in [*base, *test]]
    assert len(keys) == len(set(keys))
    kinds = Counter(k[0] for k in keys)
    assert kinds["EndpointSlice"] == 11 + 6 + 2 + 4  # 11 HTTP and 6 gRPC echo pods, headless (2 pods), 4 manual
    assert kinds["Secret"] == len(m.SUITE_SECRETS) == 9  # only the suite's: none the manifests merely name
    assert {("ConfigMap", *ca) for ca in m.SUITE_CAS} <= set(keys)
    assert ("EndpointSlice", m.INFRA_NS, "manual-endpointslices-ip4") in keys


# -- the echo backend -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def echo_pool() -> Iterator[EchoPool]:
    pool = EchoPool()
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def echo_port(echo_pool: EchoPool) -> int:
    pod = m.EchoPod(m.INFRA_NS, "infra-backend-v1", "infra-backend-v1-abc123def-xyz12", ())
    return echo_pool.start([pod])[pod.pod]


def _raw(port: int, data: bytes, expect_responses: int = 1) -> list[bytes]:
    """Send raw bytes; read until `expect_responses` complete responses (Content-Length framed) arrived."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        buf, responses = b"", []
        while len(responses) < expect_responses:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
            while b"\r\n\r\n" in buf:
                head, rest = buf.split(b"\r\n\r\n", 1)
                length = int(
                    next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1]
                )
                if len(rest) < length:
                    break
                responses.append(head + b"\r\n\r\n" + rest[:length])
                buf = rest[length:]
        return responses


def _echo(response: bytes) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(response.split(b"\r\n\r\n", 1)[1])
    return result


def test_echo_reports_the_request_like_echo_basic(echo_port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", echo_port, timeout=5)
    conn.putrequest("GET", "/a//b?x=1&y=2", skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", "example.com:8080")
    conn.putheader("x-header-add", "one")
    conn.putheader("X-HEADER-ADD", "two")
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    echo = json.loads(response.read())
    conn.close()
    assert list(echo) == ["path", "host", "method", "proto", "headers", "namespace", "ingress", "service", "pod", "sni"]
    assert echo["path"] == "/a//b?x=1&y=2"  # the raw request target, as Go's RequestURI
    assert echo["host"] == "example.com:8080"
    assert echo["method"] == "GET"
    assert echo["proto"] == "HTTP/1.1"
    assert echo["headers"] == {"X-Header-Add": ["one", "two"]}  # canonical names, Host taken out
    assert echo["namespace"] == m.INFRA_NS
    assert echo["pod"] == "infra-backend-v1-abc123def-xyz12"
    assert echo["service"] == "infra-backend-v1"


def test_echo_keeps_pipelined_requests_in_order_and_skips_bodies(echo_port: int) -> None:
    chunked = b"POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    sized = b"PUT /sized HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\nabc"
    last = b"GET /last HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n"
    responses = _raw(echo_port, chunked + sized + last, expect_responses=3)
    assert [(_echo(r)["method"], _echo(r)["path"]) for r in responses] == [
        ("POST", "/chunked"),
        ("PUT", "/sized"),
        ("GET", "/last"),
    ]
    assert b"Connection: close" in responses[2]
    assert "Transfer-Encoding" not in _echo(responses[0])["headers"]


def test_echo_status_health_and_set_header_endpoints(echo_port: int) -> None:
    status, health, set_header = _raw(
        echo_port,
        b"GET /status/418 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Echo-Set-Header: X-Foo:one,X-Bar:two\r\n\r\n",
        expect_responses=3,
    )
    assert status.startswith(b"HTTP/1.1 418 ")
    assert health.startswith(b"HTTP/1.1 200 ")
    assert health.endswith(b"\r\n\r\nOK")
    assert b"\r\nX-Foo: one\r\n" in set_header
    assert b"\r\nX-Bar: two\r\n" in set_header


def test_request_log_records_which_pod_answered_what(echo_pool: EchoPool) -> None:
    """Mirror tests read this log instead of pod logs: it must name the pod and the exact path, query included."""
    pods = [
        m.EchoPod(m.INFRA_NS, "infra-backend-v2", "infra-backend-v2-aaa111bbb-log01", ()),
        m.EchoPod(m.INFRA_NS, "infra-backend-v3", "infra-backend-v3-aaa111bbb-log02", ()),
    ]
    ports = echo_pool.start(pods)
    since = time.monotonic()
    target_v2 = Target("127.0.0.1", ports[pods[0].pod])
    send(target_v2, Request("/logged?x=1", host="mirror-shadow"))
    send(target_v2, Request("/status/503"))  # not an echo: not logged, like echo-basic's status handler
    send(Target("127.0.0.1", ports[pods[1].pod]), Request("/logged"))
    log = echo_pool.log
    [entry] = log.received(m.INFRA_NS, "infra-backend-v2", "/logged?x=1", since)
    assert entry.pod == pods[0].pod
    assert entry.echo["host"] == "mirror-shadow"
    assert log.received(m.INFRA_NS, "infra-backend-v2", "/logged", since) == []  # exact path only
    assert [e.pod for e in log.received(m.INFRA_NS, "infra-backend-v3", "/logged", since)] == [pods[1].pod]
    assert log.received(m.INFRA_NS, "infra-backend-v2", "/logged?x=1", time.monotonic()) == []


def test_send_asks_the_echo_for_response_headers_and_sizes_empty_bodies(echo_port: int) -> None:
    """Upstream's BackendSetResponseHeaders become X-Echo-Set-Header; POST carries Content-Length: 0 like Go."""
    target = Target("127.0.0.1", echo_port)
    captured = send(target, Request("/", method="POST", backend_response_headers={"X-One": "1", "x-two": "2"}))
    assert captured.header_values("X-One") == ["1"]
    assert captured.header_values("x-two") == ["2"]
    assert captured.echo is not None
    assert captured.echo["headers"]["Content-Length"] == ["0"]
    assert "X-Echo-Set-Header" not in (send(target, Request("/")).echo or {}).get("headers", {})


def test_echo_rejects_malformed_requests(echo_port: int) -> None:
    [response] = _raw(echo_port, b"NONSENSE\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400 ")


def test_echo_delay_parameter_delays_the_answer(echo_port: int) -> None:
    started = time.monotonic()
    [response] = _raw(echo_port, b"GET /?delay=200ms HTTP/1.1\r\nHost: a\r\n\r\n")
    assert time.monotonic() - started >= 0.19
    assert _echo(response)["path"] == "/?delay=200ms"


def test_go_helpers_match_go() -> None:
    assert canonical_header_key("x-header-set") == "X-Header-Set"
    assert canonical_header_key("X-HEADER-SET") == "X-Header-Set"
    assert canonical_header_key("content-md5") == "Content-Md5"
    assert canonical_header_key("bad header") == "bad header"  # not a token: Go leaves it alone
    assert parse_go_duration("1.5s") == 1.5
    assert parse_go_duration("1m30s") == 90
    assert parse_go_duration("250ms") == 0.25
    with pytest.raises(ValueError, match="invalid duration"):
        parse_go_duration("soon")


def test_many_named_backends_in_one_process_on_their_own_ports() -> None:
    async def run() -> list[tuple[int, str, str]]:
        servers = [await start_echo("127.0.0.1", 0, f"pod-{i}", f"ns-{i}", f"svc-{i}") for i in range(3)]

        def fetch(port: int) -> dict[str, Any]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/")
            body: dict[str, Any] = json.loads(conn.getresponse().read())
            conn.close()
            return body

        results = []
        for server in servers:
            echo = await asyncio.to_thread(fetch, server.port)
            results.append((server.port, echo["pod"], echo["namespace"]))
        for server in servers:
            await server.close()
        return results

    results = asyncio.run(run())
    assert len({port for port, _, _ in results}) == 3
    assert [(pod, ns) for _, pod, ns in results] == [("pod-0", "ns-0"), ("pod-1", "ns-1"), ("pod-2", "ns-2")]


def test_accepted_connections_disable_nagle() -> None:
    """Envoy's upstream connections stall ~40 ms per response on Nagle + delayed ACK without TCP_NODELAY."""

    async def run() -> int:
        server = await start_echo("127.0.0.1", 0, "pod", "ns")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        # the server side of the connection, as the protocol holds it
        [conn] = server._connections
        assert conn._transport is not None
        flag: int = conn._transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        writer.close()
        await server.close()
        return flag

    assert asyncio.run(run()) != 0


# -- request expectations (upstream's CompareRequest) -----------------------------------------------------

TARGET = Target("127.0.0.1", 80)


def _captured(
    status: int = 200, echo: dict[str, Any] | None = None, headers: list[tuple[str, str]] | None = None
) -> Captured:
    return Captured(status, headers or [], b"", echo)


def _echo_of(
    pod: str = "infra-backend-v1-x-y", path: str = "/", headers: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    return {"path": path, "host": "", "method": "GET", "headers": headers or {}, "namespace": m.INFRA_NS, "pod": pod}


def test_compare_backend_namespace_and_pod_prefix() -> None:
    expect = Expect(backend="infra-backend-v1", namespace=m.INFRA_NS)
    assert compare(TARGET, Request("/"), _captured(echo=_echo_of()), expect) is None
    assert "pod of 'infra-backend-v1'" in str(compare(TARGET, Request("/"), _captured(echo=_echo_of("web-1")), expect))
    assert "expected status 404" in str(compare(TARGET, Request("/"), _captured(echo=_echo_of()), Expect(status=404)))
    assert "expected path" in str(compare(TARGET, Request("/x"), _captured(echo=_echo_of()), expect))
    assert "non-echo" in str(compare(TARGET, Request("/"), _captured(), expect))


def test_compare_request_headers_join_values_and_check_absence() -> None:
    expect = Expect(
        backend="infra",
        namespace=m.INFRA_NS,
        expected_request=ExpectedRequest(path="/", headers={"x-header-add": "a,b"}, absent_headers=("X-Gone",)),
    )
    ok = _echo_of(headers={"X-Header-Add": ["a", "b"]})
    assert compare(TARGET, Request("/"), _captured(echo=ok), expect) is None
    wrong = _echo_of(headers={"X-Header-Add": ["b", "a"]})
    assert "X-Header-Add" in str(compare(TARGET, Request("/"), _captured(echo=wrong), expect)).title()
    present = _echo_of(headers={"X-Header-Add": ["a", "b"], "X-Gone": ["1"]})
    assert "absent" in str(compare(TARGET, Request("/"), _captured(echo=present), expect))


def test_compare_redirect_defaults_like_upstream() -> None:
    expect = Expect(status=302, redirect=Redirect(host="example.org"))
    request = Request("/hostname-redirect")
    good = _captured(302, headers=[("Location", "http://example.org/hostname-redirect")])
    assert compare(TARGET, request, good, expect) is None
    port80 = _captured(302, headers=[("Location", "http://example.org:80/hostname-redirect")])
    assert compare(TARGET, request, port80, expect) is None
    odd_port = _captured(302, headers=[("Location", "http://example.org:8080/hostname-redirect")])
    assert "port" in str(compare(TARGET, request, odd_port, expect))
    other_path = _captured(302, headers=[("Location", "http://example.org/")])
    assert "path" in str(compare(TARGET, request, other_path, expect))
    assert "status 301" in str(compare(TARGET, request, good, Expect(status=301, redirect=Redirect(host="x"))))


def test_target_host_header_and_loopback_only() -> None:
    assert Target("127.0.10.1", 80).default_host() == "127.0.10.1"
    assert Target("127.0.10.1", 443, "https").default_host() == "127.0.10.1"
    assert Target("127.0.10.1", 8080).default_host() == "127.0.10.1:8080"
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        Target("10.1.2.3", 80)


def test_send_through_tls_with_sni_and_the_secret_as_trust_anchor(echo_pool: EchoPool) -> None:
    """HTTPS to an IP with a chosen SNI, trusting only the generated Secret's certificate."""
    pair = m.self_signed(["*", "*.org"])
    seen_sni: list[str | None] = []
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "c.pem").write_bytes(pair.cert_pem)
        (Path(tmp) / "k.pem").write_bytes(pair.key_pem)
        server_ctx.load_cert_chain(Path(tmp) / "c.pem", Path(tmp) / "k.pem")
    server_ctx.sni_callback = lambda _sock, name, _ctx: seen_sni.append(name)  # type: ignore[assignment,func-returns-value]

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(65536)
            body = json.dumps(_echo_of()).encode()
            tls.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    captured = send(Target("127.0.0.1", port, "https", pair.cert_pem), Request("/", host="example.org"))
    thread.join(timeout=5)
    listener.close()
    assert seen_sni == ["example.org"]
    assert captured.status == 200
    assert compare(TARGET, Request("/"), captured, Expect(backend="infra-backend-v1", namespace=m.INFRA_NS)) is None


def test_case_descriptions_name_request_and_expectation() -> None:
    case = Case(Request("/s1", host="very.specific.com"), Expect(backend="infra-backend-v1"))
    assert case.describe() == "GET very.specific.com/s1 -> infra-backend-v1"


# -- status expectations (upstream's kubernetes helpers) --------------------------------------------------


def _parent(ns: str | None = m.INFRA_NS, **ref: Any) -> dict[str, Any]:
    parent_ref = {"group": m.GATEWAY_GROUP, "kind": "Gateway", "name": "same-namespace", **ref}
    if ns is not None:
        parent_ref["namespace"] = ns
    return {
        "parentRef": parent_ref,
        "controllerName": m.CONTROLLER_NAME,
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 1}],
    }


def test_parent_matching_follows_upstream_namespace_rules() -> None:
    want = ExpectedParent("same-namespace", m.INFRA_NS, [Cond("Accepted", "True", "Accepted")])
    assert parent_matches(_parent(), want, namespace_required=True) is None
    # a route in the Gateway's namespace may leave parentRef.namespace out
    assert parent_matches(_parent(ns=None), want, namespace_required=False) is None
    assert "namespace" in str(parent_matches(_parent(ns=None), want, namespace_required=True))
    # ... and when the expectation has no namespace, status must not invent one
    none_wanted = ExpectedParent("same-namespace", None, [Cond("Accepted")])
    assert "namespace" in str(parent_matches(_parent(), none_wanted, namespace_required=True))
    assert "group" in str(parent_matches(_parent(group=None), want, namespace_required=False))
    assert "conditions" in str(
        parent_matches(_parent(), ExpectedParent("same-namespace", m.INFRA_NS, [Cond("ResolvedRefs")]), False)
    )


def test_condition_matching_and_generations() -> None:
    conditions = [
        {"type": "Accepted", "status": "False", "reason": "NoMatchingListenerHostname", "observedGeneration": 2}
    ]
    assert condition_matches(conditions, Cond("Accepted", "False", "NoMatchingListenerHostname"))
    assert condition_matches(conditions, Cond("Accepted", "False"))
    assert not condition_matches(conditions, Cond("Accepted", "True"))
    assert not condition_matches(conditions, Cond("Accepted", "False", "Accepted"))
    assert stale_conditions({"metadata": {"generation": 2}}, conditions) is None
    assert "observedGeneration" in str(stale_conditions({"metadata": {"generation": 3}}, conditions))


def _serving(monkeypatch: pytest.MonkeyPatch, *documents: dict[str, Any]) -> None:
    """Make the status checks see `documents` in turn (the last one from then on), as if polling the admin API."""
    answers = list(documents)
    monkeypatch.setattr(
        status_module, "fetch_status", lambda _admin: answers.pop(0) if len(answers) > 1 else answers[0]
    )
    monkeypatch.setattr(status_module, "POLL_INTERVAL", 0.0)


def _route(generation: int, *parents: dict[str, Any]) -> dict[str, Any]:
    meta = {"name": "r", "namespace": m.INFRA_NS, "generation": generation}
    return {"objects": [{"kind": "HTTPRoute", "metadata": meta, "status": {"parents": list(parents)}}]}


def _rejected(generation: int) -> dict[str, Any]:
    return {"conditions": [{"type": "Accepted", "status": "False", "observedGeneration": generation}]}


def test_no_accepted_parents_like_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    checker = StatusChecker("admin", timeout=0.2)
    _serving(monkeypatch, _route(1, _rejected(1)))
    checker.route_no_accepted_parents(m.INFRA_NS, "r")
    _serving(monkeypatch, _route(1))  # empty parents count on the second look
    checker.route_no_accepted_parents(m.INFRA_NS, "r")
    for wrong in (_route(1, _parent()), _route(2, _rejected(1)), _route(1, _rejected(1), _rejected(1))):
        _serving(monkeypatch, wrong)
        with pytest.raises(StatusTimeout):
            checker.route_no_accepted_parents(m.INFRA_NS, "r")


def test_zero_routes_and_generation_bump_like_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    checker = StatusChecker("admin", timeout=0.2)

    def gateway(*attached: int) -> dict[str, Any]:
        listeners = [{"name": f"l{i}", "attachedRoutes": n} for i, n in enumerate(attached)]
        meta = {"name": "g", "namespace": m.INFRA_NS, "generation": 1}
        conditions = [{"type": "Accepted", "status": "True", "observedGeneration": 1}]
        return {
            "objects": [
                {"kind": "Gateway", "metadata": meta, "status": {"conditions": conditions, "listeners": listeners}}
            ]
        }

    for fine in (gateway(), gateway(0)):
        _serving(monkeypatch, fine)
        checker.gateway_zero_routes(m.INFRA_NS, "g")
    for wrong in (gateway(1), gateway(0, 0)):
        _serving(monkeypatch, wrong)
        with pytest.raises(StatusTimeout):
            checker.gateway_zero_routes(m.INFRA_NS, "g")

    accepted = {"conditions": [{"type": "Accepted", "status": "True", "observedGeneration": 2}]}
    # the old status (generation 1, fresh) must not pass; a new generation with stale conditions neither
    _serving(monkeypatch, _route(1, _parent()), _route(2, _parent()), _route(2, accepted))
    assert checker.route_regenerated(m.INFRA_NS, "r", 1, Cond("Accepted", "True")) == 2
    _serving(monkeypatch, _route(1, _parent()))
    with pytest.raises(StatusTimeout):
        checker.route_regenerated(m.INFRA_NS, "r", 1, Cond("Accepted", "True"))
