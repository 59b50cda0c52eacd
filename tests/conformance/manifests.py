"""Turn the upstream conformance manifests into a directory `stackway up` can serve on one machine.

Upstream applies its manifests to a cluster, where Deployments become Pods with IPs, Services get
EndpointSlices, the suite creates TLS Secrets, and every Gateway gets its own load-balancer address. Here
there is no cluster, so this module provides the same facts as plain objects:

* `{GATEWAY_CLASS_NAME}` becomes a GatewayClass of ours (controllerName `stackway.dev/gateway-controller`);
* every Gateway gets its own loopback address (`spec.addresses`, DESIGN 2.2), since the base Gateways all
  listen on ports 80 and 443; `AddressBook` remembers which Gateway has which address;
* echo-basic Deployments become `EchoPod`s (pod names `<deployment>-<hash>-<suffix>`, as upstream's
  pod-prefix checks expect) that the harness starts as local echo backends: HTTP ones, or gRPC ones for
  Deployments that set `GRPC_ECHO_SERVER`;
* every Service with a selector gets one EndpointSlice per selected echo pod (all pods share 127.0.0.1, so
  each has its own port, and EndpointSlice ports are per slice), ports named as the Service's ports; a port
  targeting echo-basic's h2c port (3001) gets the pod's h2c listener instead of its HTTP/1.1 one;
* the TLS Secrets and CA ConfigMaps upstream's suite creates are generated as it does (`pki`): self-signed
  server certificates, and CAs that sign the TLS backends' and the clients' certificates.

Everything here is pure (no processes, no sockets) so it is unit-tested on its own.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.conformance.pki import TLSPair, self_signed

__all__ = ["TLSPair", "self_signed"]  # re-exported: the harness and tests know them from here

Doc = dict[str, Any]

CONTROLLER_NAME = "stackway.dev/gateway-controller"
GATEWAY_CLASS_NAME = "stackway-conformance"
CLASS_PLACEHOLDER = "{GATEWAY_CLASS_NAME}"
ENV_DIR = "STACKWAY_CONFORMANCE_DIR"
ECHO_IMAGE = "registry.k8s.io/gateway-api/echo-basic"
GATEWAY_GROUP = "gateway.networking.k8s.io"
INFRA_NS = "gateway-conformance-infra"

#: SANs of the self-signed Secrets upstream's suite creates at run time (conformance/utils/suite/suite.go).
SECRET_SANS: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("gateway-conformance-web-backend", "certificate"): ("*",),
    ("gateway-conformance-infra", "tls-validity-checks-certificate"): ("*", "*.org"),
    ("gateway-conformance-infra", "tls-passthrough-checks-certificate"): ("abc.example.com",),
    ("gateway-conformance-app-backend", "tls-passthrough-checks-certificate"): ("abc.example.com",),
    ("gateway-conformance-infra", "tls-terminate-checks-certificate"): ("*",),
}


@dataclass(frozen=True)
class SignedCertificate:
    """A Secret the suite signs with one of its CAs (`ca`: the CA ConfigMap's namespace and name)."""

    ca: tuple[str, str]
    hosts: tuple[str, ...]
    uris: tuple[str, ...] = ()
    client: bool = False


#: The CAs upstream's suite creates, each as a ConfigMap whose `ca.crt` BackendTLSPolicies and frontend
#: client-certificate validation refer to. `mismatch-ca-certificate` signs nothing: trusting it must fail.
SUITE_CAS: tuple[tuple[str, str], ...] = (
    (INFRA_NS, "tls-checks-ca-certificate"),
    (INFRA_NS, "mismatch-ca-certificate"),
    (INFRA_NS, "tls-validity-checks-ca-certificate"),
    (INFRA_NS, "tls-validity-checks-per-port-ca-certificate"),
)

#: The CA-signed Secrets: the TLS backends' serving certificate (its DNS and URI SANs are what the
#: BackendTLSPolicy tests verify: `abc.example.com`, `other.example.com`, the SPIFFE ID), and the client
#: certificates the frontend-validation tests and the Gateway's backend client certificate present.
SIGNED_SECRETS: Mapping[tuple[str, str], SignedCertificate] = {
    (INFRA_NS, "tls-checks-certificate"): SignedCertificate(
        (INFRA_NS, "tls-checks-ca-certificate"),
        ("abc.example.com", "other.example.com"),
        ("spiffe://abc.example.com/test-identity",),
    ),
    (INFRA_NS, "tls-checks-client-certificate"): SignedCertificate(
        (INFRA_NS, "tls-checks-ca-certificate"), ("abc.example.com",), client=True
    ),
    (INFRA_NS, "tls-validity-checks-client-certificate"): SignedCertificate(
        (INFRA_NS, "tls-validity-checks-ca-certificate"), ("example.org",), client=True
    ),
    (INFRA_NS, "tls-validity-checks-per-port-client-certificate"): SignedCertificate(
        (INFRA_NS, "tls-validity-checks-per-port-ca-certificate"), ("second-example.org",), client=True
    ),
}

#: Every Secret the suite creates. A manifest referring to any other Secret it does not declare itself
#: (`nonexistent-certificate`) means it to be missing.
SUITE_SECRETS: tuple[tuple[str, str], ...] = (*SECRET_SANS, *SIGNED_SECRETS)

#: Environment variables that make echo-basic something other than an HTTP or gRPC echo (raw TCP, or HTTPS
#: only on the Service's target port). Those Deployments are not emulated by the harness: the tests that
#: send them traffic start servers of the right kind themselves, since an HTTP/1.1 echo in their place would
#: be a different server.
_NOT_EMULATED_ENV = {"TCP_ECHO_SERVER", "TLS_SERVER_CERT"}
#: echo-basic serves the gRPC echo service instead of HTTP when this is set.
_GRPC_ENV = "GRPC_ECHO_SERVER"
HTTP = "http"
GRPC = "grpc"
#: The container port echo-basic serves h2c (HTTP/2 with prior knowledge) on, besides HTTP/1.1 on 3000.
ECHO_H2C_TARGET_PORT = 3001


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def conformance_dir() -> Path:
    """Where the upstream manifests are: $STACKWAY_CONFORMANCE_DIR, or the shared copy next to the repo."""
    configured = os.environ.get(ENV_DIR)
    if configured:
        return Path(configured)
    return repo_root().parent / "shared" / "gateway-api-conformance" / "upstream"


def load_documents(path: Path) -> list[Doc]:
    """Every non-empty YAML document of a multi-document file."""
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def key(doc: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = doc.get("metadata") or {}
    return doc.get("kind", ""), meta.get("namespace", "default"), meta.get("name", "")


def gateway_class(name: str = GATEWAY_CLASS_NAME) -> Doc:
    return {
        "apiVersion": f"{GATEWAY_GROUP}/v1",
        "kind": "GatewayClass",
        "metadata": {"name": name},
        "spec": {"controllerName": CONTROLLER_NAME},
    }


def substitute_class(docs: Iterable[Doc], class_name: str = GATEWAY_CLASS_NAME) -> list[Doc]:
    """Replace the `{GATEWAY_CLASS_NAME}` placeholder, as upstream's applier does before applying."""
    out = []
    for original in docs:
        doc = copy.deepcopy(original)
        spec = doc.get("spec")
        if (
            doc.get("kind") == "Gateway"
            and isinstance(spec, dict)
            and spec.get("gatewayClassName") == CLASS_PLACEHOLDER
        ):
            spec["gatewayClassName"] = class_name
        out.append(doc)
    return out


@dataclass
class AddressBook:
    """A distinct loopback address per Gateway, stable for the whole run (tests add Gateways later)."""

    network: ipaddress.IPv4Network = field(default_factory=lambda: ipaddress.IPv4Network("127.0.10.0/24"))
    by_gateway: dict[tuple[str, str], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.network.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")):
            raise ValueError("conformance traffic must stay on 127.0.0.0/8")
        self._free = iter(self.network.hosts())

    def address(self, namespace: str, name: str) -> str:
        ref = (namespace, name)
        if ref not in self.by_gateway:
            self.by_gateway[ref] = str(next(self._free))
        return self.by_gateway[ref]


def assign_addresses(docs: Iterable[Doc], book: AddressBook) -> list[Doc]:
    """Give every Gateway without `spec.addresses` its own IPAddress from the book."""
    out = []
    for original in docs:
        doc = copy.deepcopy(original)
        if doc.get("kind") == "Gateway":
            _, ns, name = key(doc)
            spec = doc.setdefault("spec", {})
            if not spec.get("addresses"):
                spec["addresses"] = [{"type": "IPAddress", "value": book.address(ns, name)}]
        out.append(doc)
    return out


@dataclass(frozen=True)
class EchoPod:
    """One replica of an echo-basic Deployment, to be served by a local echo backend (HTTP or GRPC)."""

    namespace: str
    deployment: str
    pod: str
    labels: tuple[tuple[str, str], ...]
    protocol: str = HTTP


def pod_name(namespace: str, deployment: str, replica: int) -> str:
    """`<deployment>-<template hash>-<suffix>` like a ReplicaSet's pods, deterministic for reproducible logs."""
    digest = hashlib.sha256(f"{namespace}/{deployment}".encode()).hexdigest()
    return f"{deployment}-{digest[:9]}-{digest[9 + replica * 5 : 14 + replica * 5]}"


def _echo_protocol(deployment: Doc) -> str | None:
    """HTTP or GRPC for an echo-basic Deployment the harness emulates, None for anything else."""
    containers = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    if len(containers) != 1:
        return None
    container = containers[0]
    if not str(container.get("image", "")).startswith(ECHO_IMAGE):
        return None
    env = {e.get("name") for e in container.get("env") or []}
    if env & _NOT_EMULATED_ENV:
        return None
    return GRPC if _GRPC_ENV in env else HTTP


def echo_pods(docs: Iterable[Doc]) -> list[EchoPod]:
    """The pods of every plain HTTP or gRPC echo-basic Deployment (`replicas`, default 1)."""
    pods = []
    for doc in docs:
        protocol = _echo_protocol(doc) if doc.get("kind") == "Deployment" else None
        if protocol is None:
            continue
        _, ns, name = key(doc)
        spec = doc.get("spec") or {}
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        for replica in range(int(spec.get("replicas", 1))):
            pods.append(EchoPod(ns, name, pod_name(ns, name, replica), tuple(sorted(labels.items())), protocol))
    return pods


def _selects(selector: Mapping[str, str], pod: EchoPod) -> bool:
    labels = dict(pod.labels)
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def endpoint_slices(
    docs: Iterable[Doc],
    pods: Iterable[EchoPod],
    ports: Mapping[str, int],
    h2c_ports: Mapping[str, int] | None = None,
) -> list[Doc]:
    """EndpointSlices for every Service with a selector: one per selected pod (`ports`: pod name → port).

    Each pod listens on its own port of 127.0.0.1, and an EndpointSlice's ports apply to all its endpoints,
    so a Service with two pods gets two slices; this is how Kubernetes itself splits endpoints whose ports
    differ. Slice ports carry the Service ports' names (unnamed → ""), which is what links a Service port to
    an endpoint port. A Service port whose targetPort is echo-basic's h2c port goes to the pod's port in
    `h2c_ports` (pod name → port), as the container's two listeners are two ports of one pod.
    """
    h2c = h2c_ports or {}

    def pod_port(pod: EchoPod, service_port: Mapping[str, Any]) -> int:
        if service_port.get("targetPort") == ECHO_H2C_TARGET_PORT and pod.pod in h2c:
            return h2c[pod.pod]
        return ports[pod.pod]

    pods = list(pods)
    out: list[Doc] = []
    for doc in docs:
        if doc.get("kind") != "Service":
            continue
        _, ns, service = key(doc)
        spec = doc.get("spec") or {}
        selector = spec.get("selector") or {}
        service_ports = [p for p in spec.get("ports") or [] if p.get("protocol", "TCP") == "TCP"]
        if not selector or not service_ports:
            continue
        for pod in pods:
            if pod.namespace != ns or not _selects(selector, pod) or pod.pod not in ports:
                continue
            out.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": f"{service}-{pod.pod.rsplit('-', 1)[-1]}",
                        "namespace": ns,
                        "labels": {"kubernetes.io/service-name": service},
                    },
                    "addressType": "IPv4",
                    "endpoints": [
                        {
                            "addresses": ["127.0.0.1"],
                            "conditions": {"ready": True, "serving": True, "terminating": False},
                            "targetRef": {"kind": "Pod", "namespace": ns, "name": pod.pod},
                        }
                    ],
                    "ports": [
                        {"name": p.get("name", ""), "protocol": "TCP", "port": pod_port(pod, p)} for p in service_ports
                    ],
                }
            )
    return out


def fill_manual_slice(slice_doc: Doc, port: int, address: str = "127.0.0.1") -> Doc:
    """What upstream's HTTPRouteServiceTypes does to a selector-less Service's slice: point it at a pod.

    Upstream patches the manual slices with the infra-backend-v1 Pods' IPs on the slice's own port; here the
    pod is one echo backend on 127.0.0.1, so the slice's ports are rewritten to that backend's port. IPv6
    slices stay as declared (no endpoint: the echo backends listen on IPv4 only).
    """
    doc = copy.deepcopy(slice_doc)
    if doc.get("addressType", "IPv4") != "IPv4":
        return doc
    doc["endpoints"] = [{"addresses": [address], "conditions": {"ready": True, "serving": True, "terminating": False}}]
    for p in doc.get("ports") or []:
        p["port"] = port
    return doc


def referenced_secrets(docs: Iterable[Doc]) -> list[tuple[str, str]]:
    """(namespace, name) of every Secret a Gateway listener or a Deployment volume refers to."""
    found: dict[tuple[str, str], None] = {}
    for doc in docs:
        kind, ns, _ = key(doc)
        spec = doc.get("spec") or {}
        if kind == "Gateway":
            for listener in spec.get("listeners") or []:
                for ref in (listener.get("tls") or {}).get("certificateRefs") or []:
                    if ref.get("kind", "Secret") == "Secret" and ref.get("group", "") == "":
                        found[(ref.get("namespace", ns), ref["name"])] = None
        elif kind == "Deployment":
            volumes = ((spec.get("template") or {}).get("spec") or {}).get("volumes") or []
            for volume in volumes:
                if "secret" in volume:
                    found[(ns, volume["secret"]["secretName"])] = None
    return list(found)


def ca_config_map(namespace: str, name: str, ca: TLSPair) -> Doc:
    """The ConfigMap upstream's suite stores a CA certificate in (`ca.crt`)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"ca.crt": ca.cert_pem.decode()},
    }


def tls_secret(namespace: str, name: str, pair: TLSPair) -> Doc:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(pair.cert_pem).decode(),
            "tls.key": base64.b64encode(pair.key_pem).decode(),
        },
    }


def dump(docs: Iterable[Doc]) -> str:
    return yaml.safe_dump_all(list(docs), sort_keys=False)


def write_atomically(path: Path, text: str) -> None:
    """Write via a dotfile and rename: `stackway up` ignores dotfiles, so it never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
