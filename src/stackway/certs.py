"""Certificates for mutual TLS between Envoy and the control plane: a private CA, a server certificate for the
control plane's Service names and one client certificate that every Envoy presents.

A private CA (not the cluster's) because only our own two parties need to trust it, and the xDS stream carries
every route and secret of the gateway. ECDSA P-256 keeps handshakes cheap when hundreds of Envoys reconnect at
once. Generation is idempotent: existing certificates that are still valid, chain to the CA and name what is
asked for are kept, so re-running certgen (in a Job, at every install or upgrade) does not make every Envoy
reconnect with new certificates. The output is either files or kubernetes.io/tls Secrets carrying `ca.crt`,
the same shape cert-manager writes, so either tool can own them.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 365
#: Leaf certificates (and the CA) this close to expiry are re-issued, so a yearly run never finds them expired.
RENEW_BEFORE = timedelta(days=30)
#: Backdating tolerates clocks a little behind the one that issued the certificate.
CLOCK_SKEW = timedelta(minutes=5)
CLIENT_NAME = "stackway-envoy"
ORGANIZATION = "stackway"

#: File names written by `write_files` (the same keys as in the Secrets, flattened).
FILES = {
    "ca.crt": ("ca", "cert"),
    "ca.key": ("ca", "key"),
    "server.crt": ("server", "cert"),
    "server.key": ("server", "key"),
    "client.crt": ("client", "cert"),
    "client.key": ("client", "key"),
}
#: Secret name suffix per role: `<prefix>-ca`, `<prefix>-xds-server`, `<prefix>-xds-client`.
SECRET_SUFFIX = {"ca": "ca", "server": "xds-server", "client": "xds-client"}


@dataclass(frozen=True)
class KeyPair:
    """One certificate and its private key, PEM encoded (the key as unencrypted PKCS#8)."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


@dataclass(frozen=True)
class CertBundle:
    """CA, control-plane server and Envoy client certificates. `issued` names the roles newly issued by the
    `generate` call that returned this bundle (empty: everything was kept), so callers can say what changed."""

    ca: KeyPair
    server: KeyPair
    client: KeyPair
    issued: tuple[str, ...] = field(default=(), compare=False)


def service_names(service: str, namespace: str, cluster_domain: str = "cluster.local") -> list[str]:
    """Every DNS name a pod may use to reach the Service `service` in `namespace`."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.{cluster_domain}",
    ]


def generate(
    service: str = "stackway",
    namespace: str = "stackway-system",
    *,
    extra_names: Sequence[str] = (),
    cluster_domain: str = "cluster.local",
    client_name: str = CLIENT_NAME,
    existing: CertBundle | None = None,
    force: bool = False,
    now: datetime | None = None,
    ca_days: int = CA_DAYS,
    leaf_days: int = LEAF_DAYS,
) -> CertBundle:
    """Return certificates for the control plane Service `service.namespace` (plus `extra_names`: DNS names
    or IP addresses), keeping whatever of `existing` is still good unless `force`. A new CA re-issues both
    leaves; a leaf is re-issued alone when it expires within `RENEW_BEFORE`, no longer chains to the CA, or
    names something else than asked. No I/O: reading and writing is `read_files`/`write_files`/`as_secrets`."""
    at = now or datetime.now(UTC)
    names = [*service_names(service, namespace, cluster_domain), *extra_names]
    names = list(dict.fromkeys(names))
    issued: list[str] = []
    ca = existing.ca if existing is not None and not force else None
    if ca is None or not _ca_usable(ca, at):
        ca = _issue_ca(at, ca_days)
        issued.append("ca")
    server = existing.server if existing is not None and not force else None
    if server is None or not _leaf_usable(server, ca, at) or _sans(server.cert) != _wanted_sans(names):
        server = _issue_leaf(ca, at, leaf_days, common_name=names[0], names=names, server=True)
        issued.append("server")
    client = existing.client if existing is not None and not force else None
    if client is None or not _leaf_usable(client, ca, at) or _common_name(client.cert) != client_name:
        client = _issue_leaf(ca, at, leaf_days, common_name=client_name, names=[client_name], server=False)
        issued.append("client")
    return CertBundle(ca=ca, server=server, client=client, issued=tuple(issued))


# ---- checks -------------------------------------------------------------------------------------------------
def _key_matches(pair: KeyPair) -> bool:
    try:
        key = serialization.load_pem_private_key(pair.key_pem, password=None)
        cert = pair.cert
    except ValueError:
        return False
    raw = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return key.public_key().public_bytes(der, raw) == cert.public_key().public_bytes(der, raw)


def _fresh(cert: x509.Certificate, at: datetime) -> bool:
    return cert.not_valid_before_utc <= at + CLOCK_SKEW and cert.not_valid_after_utc - RENEW_BEFORE > at


def _ca_usable(ca: KeyPair, at: datetime) -> bool:
    if not _key_matches(ca):
        return False
    cert = ca.cert
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False
    return is_ca and _fresh(cert, at)


def _leaf_usable(leaf: KeyPair, ca: KeyPair, at: datetime) -> bool:
    if not _key_matches(leaf):
        return False
    cert = leaf.cert
    try:
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return _fresh(cert, at)


def _wanted_sans(names: Iterable[str]) -> set[str]:
    return {str(_general_name(n).value) for n in names}


def _sans(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(n) for n in ext.get_values_for_type(x509.DNSName)} | {
        str(n) for n in ext.get_values_for_type(x509.IPAddress)
    }


def _common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


# ---- issuing ------------------------------------------------------------------------------------------------
def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _subject(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _issue_ca(at: datetime, days: int) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _subject("stackway xDS CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - CLOCK_SKEW)
        .not_valid_after(at + timedelta(days=days))
        # Path length 0: this CA signs the two leaves and nothing that could itself sign.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def _issue_leaf(
    ca: KeyPair, at: datetime, days: int, *, common_name: str, names: Sequence[str], server: bool
) -> KeyPair:
    ca_cert = ca.cert
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    not_after = min(at + timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_subject(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


# ---- files --------------------------------------------------------------------------------------------------
def _bundle_from(values: Mapping[str, bytes]) -> CertBundle | None:
    """Bundle from file-name → content; None if anything is missing or not PEM of the right kind."""
    parts: dict[str, dict[str, bytes]] = {"ca": {}, "server": {}, "client": {}}
    for file_name, (role, kind) in FILES.items():
        content = values.get(file_name)
        if not content:
            return None
        parts[role][kind] = content
    pairs = {role: KeyPair(p["cert"], p["key"]) for role, p in parts.items()}
    try:
        for pair in pairs.values():
            pair.cert  # noqa: B018 - parse now: an unreadable file means "generate afresh"
    except ValueError:
        return None
    return CertBundle(ca=pairs["ca"], server=pairs["server"], client=pairs["client"])


def read_files(directory: Path | str) -> CertBundle | None:
    """The bundle `write_files` wrote to `directory`, or None if incomplete (then generate a new one)."""
    root = Path(directory)
    values: dict[str, bytes] = {}
    for name in FILES:
        path = root / name
        if path.is_file():
            values[name] = path.read_bytes()
    return _bundle_from(values)


def write_files(bundle: CertBundle, directory: Path | str) -> dict[str, Path]:
    """Write the six PEM files (keys readable by the owner only); unchanged files are not rewritten, so a
    no-op run leaves nothing for a file watcher to react to. Returns file name → path."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for file_name, (role, kind) in FILES.items():
        pair: KeyPair = getattr(bundle, role)
        content = pair.cert_pem if kind == "cert" else pair.key_pem
        path = written[file_name] = root / file_name
        if path.is_file() and path.read_bytes() == content:
            continue
        tmp = root / f".{file_name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if kind == "key" else 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        os.replace(tmp, path)  # atomic: Envoy or the server never read half a certificate
    return written


def ensure_files(directory: Path | str, *, force: bool = False, **options: Any) -> CertBundle:
    """Read what `directory` holds, keep or renew it (`generate` with `options`), write the result back."""
    bundle = generate(existing=read_files(directory), force=force, **options)
    write_files(bundle, directory)
    return bundle


# ---- Secrets ------------------------------------------------------------------------------------------------
def secret_names(prefix: str = "stackway") -> dict[str, str]:
    """Role → Secret name."""
    return {role: f"{prefix}-{suffix}" for role, suffix in SECRET_SUFFIX.items()}


def as_secrets(bundle: CertBundle, namespace: str, prefix: str = "stackway") -> list[dict[str, Any]]:
    """kubernetes.io/tls Secrets (tls.crt, tls.key, ca.crt), one per role, as cert-manager lays them out. The
    CA's own key is kept in `<prefix>-ca` so that a later run can renew leaves without replacing the CA."""
    ca_b64 = base64.b64encode(bundle.ca.cert_pem).decode()
    secrets = []
    for role, name in secret_names(prefix).items():
        pair: KeyPair = getattr(bundle, role)
        secrets.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {"app.kubernetes.io/name": "stackway", "app.kubernetes.io/component": "xds-tls"},
                },
                "data": {
                    "tls.crt": base64.b64encode(pair.cert_pem).decode(),
                    "tls.key": base64.b64encode(pair.key_pem).decode(),
                    "ca.crt": ca_b64,
                },
            }
        )
    return secrets


def from_secrets(secrets: Iterable[Mapping[str, Any]], prefix: str = "stackway") -> CertBundle | None:
    """The bundle held by Secrets as `as_secrets` writes them (e.g. read from the API), or None if incomplete."""
    by_name = {s.get("metadata", {}).get("name"): s for s in secrets}
    values: dict[str, bytes] = {}
    for role, name in secret_names(prefix).items():
        data = (by_name.get(name) or {}).get("data") or {}
        try:
            values[f"{role}.crt"] = base64.b64decode(data.get("tls.crt", ""), validate=True)
            values[f"{role}.key"] = base64.b64decode(data.get("tls.key", ""), validate=True)
        except ValueError:
            return None
    return _bundle_from(values)
