"""`stackway manifests --os-cloud`: the control plane also runs the OpenStack load-balancer controller.

What must hold: the objects stay schema-valid; the rendered `serve` arguments are ones the real `serve` command
accepts, with the same meaning; the clouds.yaml Secret is mounted where OS_CLIENT_CONFIG_FILE points; the extra
RBAC is exactly what the load-balancer code sends to the API server (found by running the real service-status
writer against a recording API and the real cluster service's watch list), and nothing else changes: without a
cloud the rendering is byte for byte what it was.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
import typer
import yaml
from tests.golden.goldens import HERE, check_golden
from tests.unit.test_deploy_manifests import EXPECTED_CLUSTER_GRANTS, KUBERNETES_VERSIONS, _grants, by_kind, one
from typer.testing import CliRunner

import stackway.openstack.loadbalancer.bridge as bridge_module
from stackway.cli import app
from stackway.cluster import ClusterConfig, ClusterService
from stackway.deploy import DeployOptions, render, render_yaml
from stackway.openstack.loadbalancer.controller import FINALIZER, LBStatus
from stackway.openstack.loadbalancer.servicestatus import ServiceStatusWriter
from stackway.providers.kubernetes.client import DEFAULT_KINDS

FULL = DeployOptions(
    openstack_cloud="openstack",
    openstack_secret="octavia-credentials",
    lb_cluster_name="prod-eu1",
    lb_subnet_id="6f1a3c52-0d4e-4a47-9d6e-0f1a2b3c4d5e",
    lb_floating_network_id="0b9e6d1c-2f3a-4b5c-8d7e-6f5a4b3c2d1e",
    lb_create_monitor=True,
    lb_serial_api_calls=True,
)
OPTION_SETS = {
    "minimal": DeployOptions(openstack_cloud="openstack"),
    "full": FULL,
    "other-namespace": DeployOptions(namespace="edge", openstack_cloud="openstack", envoy_kind="Deployment"),
}

# What the load-balancer controller adds, written out from the requests it makes (servicestatus.py: GET and PUT
# on the Service for the finalizer, PUT on /status, POST of an Event; cluster.py: list and watch Nodes).
EXPECTED_LB_GRANTS: dict[tuple[str, str], set[str]] = {
    ("", "nodes"): {"list", "watch"},
    ("", "services"): {"get", "update"},
    ("", "services/status"): {"update"},
    ("", "events"): {"create"},
}


def control_plane(objects: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = one(objects, "Deployment", "stackway")["spec"]["template"]["spec"]["containers"][0]
    return container


# ---- schemas and the default rendering --------------------------------------------------------------------------
@pytest.mark.parametrize("options_name", sorted(OPTION_SETS))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_core_object_validates_strictly(options_name: str, version: str) -> None:
    for obj in render(OPTION_SETS[options_name]):
        if obj["kind"] != "GatewayClass":  # a CRD: checked in test_deploy_manifests
            kubernetes_validate.validate(obj, version, strict=True)


def test_without_a_cloud_nothing_changes() -> None:
    assert render_yaml(DeployOptions(openstack_cloud=None)) == (HERE / "deploy" / "default.yaml").read_text()
    assert "openstack" not in render_yaml().lower()


@pytest.mark.parametrize("options_name", sorted(OPTION_SETS))
def test_a_cloud_changes_only_the_control_plane_deployment_and_the_cluster_role(options_name: str) -> None:
    """Every other object is identical; the Deployment and ClusterRole only gain entries, in their own place."""
    options = OPTION_SETS[options_name]
    base_options = DeployOptions(namespace=options.namespace, envoy_kind=options.envoy_kind)
    base, with_cloud = render(base_options), render(options)
    assert [(o["kind"], o["metadata"]["name"]) for o in base] == [
        (o["kind"], o["metadata"]["name"]) for o in with_cloud
    ]
    changed = [(b["kind"], b["metadata"]["name"]) for b, c in zip(base, with_cloud, strict=True) if b != c]
    assert changed == [("ClusterRole", f"stackway-{options.namespace}"), ("Deployment", "stackway")]
    base_rules = one(base, "ClusterRole")["rules"]
    assert one(with_cloud, "ClusterRole")["rules"][: len(base_rules)] == base_rules
    # Take the additions away again and the Deployment is the base one.
    deployment = copy.deepcopy(one(with_cloud, "Deployment", "stackway"))
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    base_container = control_plane(base)
    container["args"] = container["args"][: len(base_container["args"])]
    container["env"] = [e for e in container["env"] if e["name"] != "OS_CLIENT_CONFIG_FILE"]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "cloud-config"]
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "cloud-config"]
    assert deployment == one(base, "Deployment", "stackway")


def test_openstack_rendering_golden(update_goldens: bool) -> None:
    check_golden(HERE / "deploy" / "openstack.yaml", render_yaml(FULL), update_goldens)


# ---- the pod ----------------------------------------------------------------------------------------------------
def test_clouds_yaml_secret_is_mounted_read_only_where_openstacksdk_looks() -> None:
    objects = render(FULL)
    pod = one(objects, "Deployment", "stackway")["spec"]["template"]["spec"]
    container = control_plane(objects)
    env = {e["name"]: e.get("value") for e in container["env"]}
    path = env["OS_CLIENT_CONFIG_FILE"]
    (mount,) = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"] == {"secretName": "octavia-credentials"}
    # The Secret's key is the file name: `kubectl create secret generic NAME --from-file=clouds.yaml`.
    assert path.removeprefix(mount["mountPath"] + "/") == "clouds.yaml"
    # Still restricted: a Secret volume is allowed, the root file system stays read-only.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert not by_kind(objects, "Secret"), "credentials are the operator's: never rendered"


def test_header_says_how_to_create_the_secret() -> None:
    header = render_yaml(OPTION_SETS["other-namespace"]).split("---\n", 1)[0]
    assert "kubectl -n edge create secret generic stackway-cloud-config --from-file=clouds.yaml" in header
    assert "'openstack'" in header


def _serve_params(args: list[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Parse (without running) the container's arguments with the real `stackway serve` command line."""
    monkeypatch.delenv("OS_CLOUD", raising=False)  # serve's --os-cloud falls back to it
    assert args[0] == "serve"
    serve = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    params: dict[str, Any] = serve.make_context("serve", list(args[1:])).params
    return params


def test_serve_accepts_the_load_balancer_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    params = _serve_params(control_plane(render(FULL))["args"], monkeypatch)
    assert params["os_cloud"] == "openstack"
    assert params["cluster_name"] == "prod-eu1"
    assert params["subnet_id"] == FULL.lb_subnet_id
    assert params["floating_network_id"] == FULL.lb_floating_network_id
    assert params["create_monitor"] is True
    assert params["serial_api_calls"] is True
    minimal = _serve_params(control_plane(render(OPTION_SETS["minimal"]))["args"], monkeypatch)
    assert (minimal["os_cloud"], minimal["cluster_name"]) == ("openstack", "kubernetes")
    assert (minimal["subnet_id"], minimal["floating_network_id"]) == (None, None)
    assert (minimal["create_monitor"], minimal["serial_api_calls"]) == (False, False)
    assert _serve_params(control_plane(render())["args"], monkeypatch)["os_cloud"] is None


def test_settings_without_a_cloud_are_refused() -> None:
    with pytest.raises(ValueError, match="lb_subnet_id, lb_create_monitor"):
        DeployOptions(lb_subnet_id="x", lb_create_monitor=True)
    with pytest.raises(ValueError, match="openstack_secret"):
        DeployOptions(openstack_secret="mine")
    with pytest.raises(ValueError, match="name a cloud"):
        DeployOptions(openstack_cloud="")


# ---- RBAC -------------------------------------------------------------------------------------------------------
def test_cluster_role_adds_exactly_the_load_balancer_grants() -> None:
    for options in OPTION_SETS.values():
        objects = render(options)
        (cluster_role,) = by_kind(objects, "ClusterRole")
        assert all("resourceNames" not in rule for rule in cluster_role["rules"])
        expected = copy.deepcopy(EXPECTED_CLUSTER_GRANTS)
        for key, verbs in EXPECTED_LB_GRANTS.items():
            expected.setdefault(key, set()).update(verbs)
        assert _grants(cluster_role["rules"]) == expected
        # Leader election is the same Role as without a cloud.
        assert one(objects, "Role")["rules"] == one(render(DeployOptions(namespace=options.namespace)), "Role")["rules"]


def _rbac_attributes(method: str, path: str) -> tuple[str, str, str]:
    """(apiGroup, resource[/subresource], verb) of a request, as the API server's authorizer sees it."""
    parts = path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    if rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]
    resource, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
    verb = {"GET": "get" if name else "list", "PUT": "update", "POST": "create", "PATCH": "patch", "DELETE": "delete"}
    return group, f"{resource}/{sub}" if sub else resource, verb[method]


class RecordingApi:
    """Answers the service-status writer like the API server would, and records every request."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        self.objects = objects
        self.requests: list[tuple[str, str]] = []

    async def request(self, method: str, path: str, query: Any = (), body: Any = None) -> Any:
        self.requests.append((method, path))
        if method == "GET":
            return copy.deepcopy(self.objects[path])
        if method == "PUT":
            self.objects[path.removesuffix("/status")] = copy.deepcopy(body)
        return body


def _kinds_watched_with_a_cloud(monkeypatch: pytest.MonkeyPatch) -> set[tuple[str, str]]:
    """What `stackway serve --os-cloud` watches, read from a real ClusterService; the bridge to the cloud is
    replaced, so nothing is contacted."""

    class Bridge:
        active = True

    monkeypatch.setattr(bridge_module, "connect_bridge", lambda cloud, config: Bridge())
    service = ClusterService(ClusterConfig(os_cloud="openstack"))
    return {(kind.group, kind.plural) for kind in service.provider.kinds}


async def test_the_grants_are_what_the_load_balancer_code_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the real writer through a load balancer's life (created, failing, deleted) and the real cluster
    service's watch list: the grants --os-cloud adds are exactly the requests made, no more."""
    path = "/api/v1/namespaces/shop/services/web"
    api = RecordingApi({path: {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}})
    writer = ServiceStatusWriter(api)  # type: ignore[arg-type]
    key = ("shop", "web")
    await writer._write(key, LBStatus("Active", "kube_service_kubernetes_shop_web", "lb-1", ingress_ip="203.0.113.7"))
    assert FINALIZER in api.objects[path]["metadata"]["finalizers"]
    await writer._write(key, LBStatus("Error", "kube_service_kubernetes_shop_web", message="quota exceeded"))
    await writer._write(key, LBStatus("Deleted", "kube_service_kubernetes_shop_web"))
    assert FINALIZER not in api.objects[path]["metadata"]["finalizers"]
    used: dict[tuple[str, str], set[str]] = {}
    for method, request_path in api.requests:
        group, resource, verb = _rbac_attributes(method, request_path)
        used.setdefault((group, resource), set()).add(verb)

    for watched in _kinds_watched_with_a_cloud(monkeypatch) - {(k.group, k.plural) for k in DEFAULT_KINDS}:
        used.setdefault(watched, set()).update({"list", "watch"})

    base = _grants(one(render(), "ClusterRole")["rules"])
    with_cloud = _grants(one(render(OPTION_SETS["minimal"]), "ClusterRole")["rules"])
    added = {k: verbs - base.get(k, set()) for k, verbs in with_cloud.items() if verbs - base.get(k, set())}
    needed = {k: verbs - base.get(k, set()) for k, verbs in used.items() if verbs - base.get(k, set())}
    assert added == needed
    assert needed == {k: v - base.get(k, set()) for k, v in EXPECTED_LB_GRANTS.items()}


# ---- the command line -------------------------------------------------------------------------------------------
def test_manifests_command_renders_the_options() -> None:
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "manifests",
            "--os-cloud=openstack",
            "--os-cloud-secret=octavia-credentials",
            "--lb-cluster-name=prod-eu1",
            f"--lb-subnet-id={FULL.lb_subnet_id}",
            f"--lb-floating-network-id={FULL.lb_floating_network_id}",
            "--lb-create-monitor",
            "--lb-serial-api-calls",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == render_yaml(FULL)
    minimal = runner.invoke(app, ["manifests", "--os-cloud", "openstack"])
    assert minimal.stdout == render_yaml(OPTION_SETS["minimal"])
    plain = runner.invoke(app, ["manifests"])
    assert plain.stdout == render_yaml()
    assert [d["kind"] for d in yaml.safe_load_all(plain.stdout) if d] == [o["kind"] for o in render()]


def test_manifests_command_refuses_load_balancer_flags_without_a_cloud() -> None:
    result = CliRunner().invoke(app, ["manifests", "--lb-subnet-id", "x", "--lb-serial-api-calls"])
    assert result.exit_code == 2
    assert "--lb-subnet-id, --lb-serial-api-calls" in result.output
    assert "--os-cloud" in result.output
