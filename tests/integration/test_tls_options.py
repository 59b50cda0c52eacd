"""Listener tls.options through `stackway up` and a real Envoy: the TLS parameters reach the handshake, and
a listener with an option it does not understand is reported without taking its Gateway's others down."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from tests.integration.test_standalone import _https_get, _self_signed, free_port, manifests, running, write

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(90)]

HOST = "strict.example.com"


def _client(cafile: Path, version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that trusts `cafile` and speaks exactly TLS `version`."""
    context = ssl.create_default_context(cafile=str(cafile))
    context.minimum_version = context.maximum_version = version
    return context


async def test_min_version_refuses_older_clients(tmp_path: Path) -> None:
    """`tls-min-version: "1.3"`: a TLS 1.2 client is refused in the handshake, a TLS 1.3 one is served; a
    listener of the same Gateway with an unknown option is Accepted=False (UnsupportedValue) and the rest
    of the Gateway keeps serving."""
    certs = tmp_path / "certs"
    certs.mkdir()
    _self_signed(certs, HOST)
    watched = tmp_path / "manifests"
    watched.mkdir()
    async with running(watched) as run:
        tls_port = free_port()
        docs = manifests(run.port, run.backends, "blue")
        docs[1]["spec"]["listeners"] += [
            {
                "name": "strict",
                "port": tls_port,
                "protocol": "HTTPS",
                "hostname": HOST,
                "tls": {"certificateRefs": [{"name": "cert"}], "options": {"stackway.dev/tls-min-version": "1.3"}},
            },
            {
                "name": "unknown-option",
                "port": free_port(),
                "protocol": "HTTPS",
                "tls": {"certificateRefs": [{"name": "cert"}], "options": {"stackway.dev/no-such-option": "x"}},
            },
        ]
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "cert"},
                "type": "kubernetes.io/tls",
                "data": {
                    "tls.crt": base64.b64encode((certs / ".cert.pem").read_bytes()).decode(),
                    "tls.key": base64.b64encode((certs / ".key.pem").read_bytes()).decode(),
                },
            }
        )
        write(run.directory / "app.yaml", docs)

        tls13 = _client(certs / ".cert.pem", ssl.TLSVersion.TLSv1_3)
        deadline = time.monotonic() + 10
        body: dict[str, Any] = {}
        while time.monotonic() < deadline and not body:
            with contextlib.suppress(ssl.SSLError, ConnectionError, OSError):
                body = await _https_get(tls_port, HOST, tls13)
            await asyncio.sleep(0.05)
        assert body.get("service") == "blue", "a TLS 1.3 client must be served"

        tls12 = _client(certs / ".cert.pem", ssl.TLSVersion.TLSv1_2)
        with pytest.raises(ssl.SSLError):
            await _https_get(tls_port, HOST, tls12)

        status = await run.admin_json("/api/status")
        gw = next(o for o in status["objects"] if o["kind"] == "Gateway")
        listeners = {ls["name"]: ls for ls in gw["status"]["listeners"]}
        accepted = next(c for c in listeners["unknown-option"]["conditions"] if c["type"] == "Accepted")
        assert (accepted["status"], accepted["reason"]) == ("False", "UnsupportedValue")
        assert "stackway.dev/no-such-option" in accepted["message"]
        for name in ("strict", "http"):  # the options' listener, and the Gateway's plain HTTP one
            programmed = next(c for c in listeners[name]["conditions"] if c["type"] == "Programmed")
            assert programmed["status"] == "True", name
        assert (await _https_get(tls_port, HOST, tls13)).get("service") == "blue"
