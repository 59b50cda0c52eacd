"""Certificates like the ones upstream's suite generates at run time (conformance/utils/kubernetes/certificate.go).

Upstream creates self-signed server certificates (CN `default`, O `Acme Co`, RSA-2048) for the Gateways'
listeners and the passthrough backends, and small CAs (CN `gatewayapi`, O `Kubernetes Gateway API`) whose
certificates go into ConfigMaps (`ca.crt`): BackendTLSPolicies trust them for the TLS backends' certificates,
and Gateways' frontend validation trusts them for client certificates. Everything here is pure.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 365


@dataclass(frozen=True)
class TLSPair:
    """A certificate and its key (PEM); `ca_pem` is the CA that signed it, None when it is self-signed."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes | None = None

    @property
    def trust_pem(self) -> bytes:
        """What a client must trust to accept the certificate: its CA, or the certificate itself."""
        return self.ca_pem or self.cert_pem


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        key_encipherment=not cert_sign,
        content_commitment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _sans(hosts: Iterable[str], uris: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    names += [x509.UniformResourceIdentifier(uri) for uri in uris]
    return x509.SubjectAlternativeName(names)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def _leaf(
    hosts: Iterable[str], uris: Iterable[str], issuer: tuple[x509.Name, rsa.RSAPrivateKey] | None, client: bool
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "default"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Co")]
    )
    issuer_name, signing_key = issuer if issuer is not None else (subject, private_key)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(_sans(hosts, uris), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(signing_key, hashes.SHA256())
    )
    return cert, private_key


def self_signed(hosts: Iterable[str]) -> TLSPair:
    """A self-signed RSA-2048 server certificate like upstream's `generateRSACert` (CN `default`, Acme Co)."""
    cert, key = _leaf(hosts, (), None, client=False)
    return TLSPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def certificate_authority(hosts: Iterable[str] = ("abc.example.com",)) -> TLSPair:
    """A CA like upstream's `generateCACert`: self-signed, CA:TRUE, allowed to sign certificates."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Kubernetes Gateway API"),
            x509.NameAttribute(NameOID.COMMON_NAME, "gatewayapi"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(_sans(hosts, ()), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(private_key.public_key()), critical=False)
        .sign(private_key, hashes.SHA256())
    )
    return TLSPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(private_key))


def issue(ca: TLSPair, hosts: Iterable[str], uris: Iterable[str] = (), client: bool = False) -> TLSPair:
    """A certificate for `hosts` (DNS or IP SANs) and `uris` (URI SANs) signed by `ca`; a `client` one may
    also authenticate TLS clients (extended key usage clientAuth besides serverAuth)."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    cert, key = _leaf(hosts, uris, (ca_cert.subject, ca_key), client=client)
    return TLSPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key), ca.cert_pem)
