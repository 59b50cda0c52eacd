"""The certificate generator: what it issues, what it keeps on a re-run, and its file and Secret outputs."""

from __future__ import annotations

import base64
import ipaddress
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from stackway import certs

NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def bundle() -> certs.CertBundle:
    return certs.generate("xds", "gw", extra_names=["127.0.0.1", "xds.example.test"], now=NOW)


def sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_fresh_bundle_has_ca_server_and_client(bundle: certs.CertBundle) -> None:
    assert bundle.issued == ("ca", "server", "client")
    ca, server, client = bundle.ca.cert, bundle.server.cert, bundle.client.cert
    for cert in (ca, server, client):
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.curve.name == "secp256r1"
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    assert constraints.path_length == 0
    assert ca.not_valid_after_utc - NOW == timedelta(days=certs.CA_DAYS)
    for leaf in (server, client):
        leaf.verify_directly_issued_by(ca)
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert leaf.not_valid_after_utc - NOW == timedelta(days=certs.LEAF_DAYS)
        assert leaf.not_valid_before_utc < NOW  # backdated for clock skew
    assert list(server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert sans(server).get_values_for_type(x509.DNSName) == [
        "xds",
        "xds.gw",
        "xds.gw.svc",
        "xds.gw.svc.cluster.local",
        "xds.example.test",
    ]
    assert sans(server).get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans(client).get_values_for_type(x509.DNSName) == [certs.CLIENT_NAME]


def test_rerun_keeps_everything_still_valid(bundle: certs.CertBundle) -> None:
    again = certs.generate("xds", "gw", extra_names=["127.0.0.1", "xds.example.test"], existing=bundle, now=NOW)
    assert again.issued == ()
    assert again == bundle
    later = NOW + timedelta(days=certs.LEAF_DAYS) - certs.RENEW_BEFORE - timedelta(days=1)
    assert certs.generate("xds", "gw", extra_names=["127.0.0.1", "xds.example.test"], existing=bundle, now=later) == (
        bundle
    )


def test_force_replaces_everything(bundle: certs.CertBundle) -> None:
    forced = certs.generate("xds", "gw", existing=bundle, force=True, now=NOW)
    assert forced.issued == ("ca", "server", "client")
    assert forced.ca.cert_pem != bundle.ca.cert_pem
    forced.server.cert.verify_directly_issued_by(forced.ca.cert)


def test_leaves_near_expiry_are_renewed_under_the_same_ca(bundle: certs.CertBundle) -> None:
    near_end = NOW + timedelta(days=certs.LEAF_DAYS) - certs.RENEW_BEFORE + timedelta(days=1)
    renewed = certs.generate("xds", "gw", extra_names=["127.0.0.1", "xds.example.test"], existing=bundle, now=near_end)
    assert renewed.issued == ("server", "client")
    assert renewed.ca == bundle.ca
    assert renewed.server.cert.not_valid_after_utc > bundle.server.cert.not_valid_after_utc
    renewed.client.cert.verify_directly_issued_by(bundle.ca.cert)


def test_changed_names_reissue_only_the_server_certificate(bundle: certs.CertBundle) -> None:
    changed = certs.generate("xds", "gw", existing=bundle, now=NOW)  # without the extra names
    assert changed.issued == ("server",)
    assert changed.client == bundle.client
    assert "xds.example.test" not in sans(changed.server.cert).get_values_for_type(x509.DNSName)


def test_a_new_ca_reissues_leaves_signed_by_the_old_one(bundle: certs.CertBundle) -> None:
    expired_ca = NOW + timedelta(days=certs.CA_DAYS)
    renewed = certs.generate("xds", "gw", existing=bundle, now=expired_ca)
    assert renewed.issued == ("ca", "server", "client")
    foreign = certs.generate("xds", "gw", now=NOW)
    mixed = certs.CertBundle(ca=foreign.ca, server=bundle.server, client=bundle.client)
    assert certs.generate("xds", "gw", existing=mixed, now=NOW).issued == ("server", "client")


def test_leaf_never_outlives_its_ca() -> None:
    short = certs.generate("xds", "gw", now=NOW, ca_days=100, leaf_days=365)
    assert short.server.cert.not_valid_after_utc == short.ca.cert.not_valid_after_utc


def test_key_not_matching_its_certificate_is_replaced(bundle: certs.CertBundle) -> None:
    swapped = certs.CertBundle(
        ca=bundle.ca, server=certs.KeyPair(bundle.server.cert_pem, bundle.client.key_pem), client=bundle.client
    )
    fixed = certs.generate("xds", "gw", extra_names=["127.0.0.1", "xds.example.test"], existing=swapped, now=NOW)
    assert fixed.issued == ("server",)


def test_files_round_trip_with_private_keys_private(bundle: certs.CertBundle, tmp_path: Path) -> None:
    paths = certs.write_files(bundle, tmp_path / "tls")
    assert set(paths) == set(certs.FILES)
    for name, path in paths.items():
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o600 if name.endswith(".key") else 0o644), name
    assert certs.read_files(tmp_path / "tls") == bundle
    before = {name: path.stat().st_mtime_ns for name, path in paths.items()}
    certs.write_files(bundle, tmp_path / "tls")
    assert {name: path.stat().st_mtime_ns for name, path in paths.items()} == before  # nothing rewritten
    assert not list((tmp_path / "tls").glob(".*.tmp"))


def test_read_files_of_incomplete_or_garbage_directory_is_none(bundle: certs.CertBundle, tmp_path: Path) -> None:
    assert certs.read_files(tmp_path) is None
    certs.write_files(bundle, tmp_path)
    (tmp_path / "client.key").unlink()
    assert certs.read_files(tmp_path) is None
    certs.write_files(bundle, tmp_path)
    (tmp_path / "server.crt").write_text("not a certificate")
    assert certs.read_files(tmp_path) is None


def test_ensure_files_is_idempotent(tmp_path: Path) -> None:
    first = certs.ensure_files(tmp_path, service="xds", namespace="gw")
    assert first.issued == ("ca", "server", "client")
    second = certs.ensure_files(tmp_path, service="xds", namespace="gw")
    assert second.issued == ()
    assert second == first
    third = certs.ensure_files(tmp_path, force=True, service="xds", namespace="gw")
    assert third.issued == ("ca", "server", "client")
    assert certs.read_files(tmp_path) == third


def test_secrets_have_the_cert_manager_shape(bundle: certs.CertBundle) -> None:
    secrets = certs.as_secrets(bundle, "gw")
    assert [s["metadata"]["name"] for s in secrets] == ["stackway-ca", "stackway-xds-server", "stackway-xds-client"]
    for secret, pair in zip(secrets, (bundle.ca, bundle.server, bundle.client), strict=True):
        assert secret["apiVersion"] == "v1"
        assert secret["kind"] == "Secret"
        assert secret["type"] == "kubernetes.io/tls"
        assert secret["metadata"]["namespace"] == "gw"
        assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}
        assert base64.b64decode(secret["data"]["tls.crt"]) == pair.cert_pem
        assert base64.b64decode(secret["data"]["tls.key"]) == pair.key_pem
        assert base64.b64decode(secret["data"]["ca.crt"]) == bundle.ca.cert_pem
    assert certs.from_secrets(secrets) == bundle
    assert certs.from_secrets(secrets[1:]) is None
    assert certs.from_secrets(certs.as_secrets(bundle, "gw", prefix="other")) is None
    assert certs.from_secrets(certs.as_secrets(bundle, "gw", prefix="other"), prefix="other") == bundle
