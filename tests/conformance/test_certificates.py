"""The suite's certificates (`pki`, as the harness issues them) and the TLS echo's report of each handshake."""

from __future__ import annotations

import asyncio
import ssl
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from stackway.demo.echo import start_echo
from tests.conformance import manifests as m
from tests.conformance.client import Request, Target, send
from tests.conformance.harness import Conformance


@pytest.fixture
def upstream() -> Path:
    path = m.conformance_dir()
    if not (path / "base" / "manifests.yaml").is_file():
        pytest.skip(f"upstream conformance manifests not found at {path} (set {m.ENV_DIR})")
    return path


def test_suite_ca_signs_the_tls_backend_certificate_with_dns_and_uri_sans(upstream: Path, tmp_path: Path) -> None:
    env = Conformance(upstream=upstream, workdir=tmp_path)
    try:
        docs = env.prepare([], suite_secrets=True)
    finally:
        env.echoes.close()
    pair = env.tls_pair(m.INFRA_NS, "tls-checks-certificate")
    ca_map = next(d for d in docs if m.key(d) == ("ConfigMap", m.INFRA_NS, "tls-checks-ca-certificate"))
    assert ca_map["data"]["ca.crt"].encode() == pair.ca_pem == pair.trust_pem
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    ca = x509.load_pem_x509_certificate(pair.trust_pem)
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["abc.example.com", "other.example.com"]
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://abc.example.com/test-identity"]
    mismatch = x509.load_pem_x509_certificate(env.ca(m.INFRA_NS, "mismatch-ca-certificate").cert_pem)
    with pytest.raises(InvalidSignature):  # same subject as every suite CA, but another key
        cert.verify_directly_issued_by(mismatch)
    client = env.tls_pair(m.INFRA_NS, "tls-validity-checks-client-certificate")
    usages = x509.load_pem_x509_certificate(client.cert_pem).extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in usages.value
    assert client.ca_pem == env.ca(m.INFRA_NS, "tls-validity-checks-ca-certificate").cert_pem


def test_https_echo_reports_the_sni_of_each_connection() -> None:
    """The TLS backends' echo names the SNI it was asked for, as echo-basic does (BackendTLSPolicy checks it)."""
    pair = m.self_signed(["abc.example.com"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "c.pem").write_bytes(pair.cert_pem)
        (Path(tmp) / "k.pem").write_bytes(pair.key_pem)
        context.load_cert_chain(Path(tmp) / "c.pem", Path(tmp) / "k.pem")

    async def run() -> list[str]:
        server = await start_echo("127.0.0.1", 0, "tls-backend-abc-def", m.INFRA_NS, tls=context)
        try:
            target = Target("127.0.0.1", server.port, "https", pair.cert_pem)
            names = []
            for sni in ("abc.example.com", "other.example.com"):
                captured = await asyncio.to_thread(send, target, Request(host="abc.example.com"), sni)
                assert captured.echo is not None
                names.append(captured.echo["sni"])
            return names
        finally:
            await server.close()

    assert asyncio.run(run()) == ["abc.example.com", "other.example.com"]
