"""Checks that a kubernetes.io/tls Secret holds a usable certificate and matching key.

Envoy would reject a bad certificate with a NACK for the whole listener; catching it here turns it into
a listener condition (InvalidCertificateRef) that names the Secret, and keeps every other listener serving.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from stackway.resources.core import Secret
from stackway.resources.store import Resources


@lru_cache(maxsize=1024)
def _check_pem(cert_pem: bytes, key_pem: bytes) -> str | None:
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        return f"tls.crt is not a PEM certificate ({exc})"
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        return f"tls.key is not an unencrypted PEM private key ({exc})"
    leaf_key = (
        certs[0].public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    own_key = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if leaf_key != own_key:
        return "tls.key does not match the certificate in tls.crt"
    return None


def certificate_problem(secret: Secret) -> str | None:
    """None when the Secret is a valid TLS Secret, else why not."""
    if secret.type != "kubernetes.io/tls":
        return f"Secret type is {secret.type!r}, expected 'kubernetes.io/tls'"
    cert = secret.value("tls.crt")
    key = secret.value("tls.key")
    if not cert:
        return "tls.crt is missing or not valid base64"
    if not key:
        return "tls.key is missing or not valid base64"
    return _check_pem(cert, key)


def ca_bundle(resources: Resources, namespace: str, group: str, kind: str, name: str) -> tuple[str, str | None]:
    """PEM CA certificates from a ConfigMap's or Secret's `ca.crt`, or ("", why not)."""
    if group != "" or kind not in ("ConfigMap", "Secret"):
        return "", f"kind {group or 'core'}/{kind} is not supported; use a ConfigMap or Secret"
    if kind == "ConfigMap":
        cm = resources.config_maps.get((namespace, name))
        pem = cm.data.get("ca.crt") if cm else None
    else:
        secret = resources.secrets.get((namespace, name))
        raw = secret.value("ca.crt") if secret else None
        pem = raw.decode(errors="replace") if raw else None
    if pem is None:
        return "", f"{kind} {namespace}/{name} with key ca.crt not found"
    try:
        x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        return "", f"{kind} {namespace}/{name}: ca.crt is not a PEM certificate ({exc})"
    return pem, None
