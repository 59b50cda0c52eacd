"""The data plane in the cluster: Envoys (a DaemonSet, or a Deployment) fed by the control plane over ADS.

Each Envoy starts from a bootstrap in a ConfigMap and learns everything else from the control plane. The
bootstrap is `render_bootstrap`'s, with three changes a cluster needs:
- the xDS cluster resolves the control-plane Service by DNS (STRICT_DNS): a STATIC cluster takes IPs only;
- the node id is each pod's name, given on the command line (`--service-node $(POD_NAME)`, which Envoy lets
  override the bootstrap's node.id and Kubernetes expands from the downward-API env var), so one ConfigMap
  serves every pod and per-node snapshots and `/api/config` name real pods;
- a static listener on the pod IP passes on exactly Envoy's `/ready` (the readiness probe) and
  `/stats/prometheus` to the admin interface, which itself stays on loopback because it can stop Envoy.

Termination: the preStop hook asks Envoy to drain its listeners gracefully (`POST /drain_listeners?graceful`:
connections are told to close for `--drain-time-s`, then the listeners close) and then waits as long, so the
SIGTERM that follows finds no connection left. The hook speaks HTTP through bash's /dev/tcp because the
envoyproxy/envoy image ships bash but neither curl nor wget (a distroless Envoy image needs another hook).
"""

from __future__ import annotations

import copy
from typing import Any

from stackway.dataplane.bootstrap import render_bootstrap
from stackway.deploy.controlplane import container_security_context
from stackway.deploy.options import (
    ENVOY_CLUSTER,
    ENVOY_NAME,
    XDS_PORT,
    DeployOptions,
)
from stackway.deploy.yamlio import dump

_T = "type.googleapis.com/"
BOOTSTRAP_KEY = "bootstrap.yaml"
BOOTSTRAP_DIR = "/etc/envoy"
#: Paths of the admin interface the health listener passes on; nothing else of the admin API is reachable.
EXPOSED_ADMIN_PATHS = ("/ready", "/stats/prometheus")
HEALTH_LISTENER = "stackway-envoy-health"
ADMIN_CLUSTER = "stackway-envoy-admin"

#: No CPU limit: a throttled proxy adds latency to every request; the memory limit bounds a leak.
RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}}

#: Seconds after the drain for Envoy to exit on SIGTERM before the kubelet kills it.
EXIT_SLACK_S = 10


def bootstrap(options: DeployOptions) -> dict[str, Any]:
    """The Envoy bootstrap every pod starts from (see the module docstring for what differs from local use)."""
    config = copy.deepcopy(
        render_bootstrap(
            node_id=ENVOY_NAME,  # replaced per pod by --service-node
            cluster=ENVOY_CLUSTER,
            xds_host=options.xds_host,
            xds_port=XDS_PORT,
            admin_host="127.0.0.1",
            admin_port=options.envoy_admin_port,
            delta=options.delta,
        )
    )
    static = config["static_resources"]
    for cluster in static["clusters"]:
        if cluster["name"] == "xds_cluster":
            cluster["type"] = "STRICT_DNS"
            cluster["dns_lookup_family"] = "V4_PREFERRED"
    static["clusters"].append(
        {
            "name": ADMIN_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": ADMIN_CLUSTER,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {
                                            "address": "127.0.0.1",
                                            "port_value": options.envoy_admin_port,
                                        }
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
        }
    )
    routes = [{"match": {"path": path}, "route": {"cluster": ADMIN_CLUSTER}} for path in EXPOSED_ADMIN_PATHS]
    manager = {
        "@type": _T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "stackway_health",
        "route_config": {
            "name": HEALTH_LISTENER,
            "virtual_hosts": [{"name": HEALTH_LISTENER, "domains": ["*"], "routes": routes}],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": _T + "envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    static["listeners"] = [
        {
            "name": HEALTH_LISTENER,
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": options.envoy_health_port}},
            "filter_chains": [
                {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
            ],
        }
    ]
    return config


def drain_command(options: DeployOptions) -> list[str]:
    """The preStop hook: start a graceful drain on Envoy's admin interface, then wait it out."""
    request = (
        "POST /drain_listeners?graceful HTTP/1.1\\r\\nHost: localhost\\r\\nContent-Length: 0\\r\\n"
        "Connection: close\\r\\n\\r\\n"
    )
    script = (
        f"exec 3<>/dev/tcp/127.0.0.1/{options.envoy_admin_port} && printf '{request}' >&3 && cat <&3; "
        f"sleep {options.drain_seconds}"
    )
    return ["/bin/bash", "-c", script]


def envoy_args(options: DeployOptions) -> list[str]:
    args = [
        "--config-path",
        f"{BOOTSTRAP_DIR}/{BOOTSTRAP_KEY}",
        "--service-node",
        "$(POD_NAME)",
        "--service-cluster",
        ENVOY_CLUSTER,
        "--log-level",
        options.log_level,
        "--drain-time-s",
        str(options.drain_seconds),
        "--drain-strategy",
        "immediate",
        # A pod is replaced, never hot-restarted in place; hot restart would only need shared memory.
        "--disable-hot-restart",
    ]
    if options.envoy_concurrency:
        args += ["--concurrency", str(options.envoy_concurrency)]
    return args


def security_context(options: DeployOptions) -> dict[str, Any]:
    """Gateway listeners use ports below 1024. In the pod's network the pod sysctl
    `net.ipv4.ip_unprivileged_port_start=0` lets a non-root Envoy bind them; on the host network that sysctl
    is not allowed, so Envoy runs as root with NET_BIND_SERVICE as its only capability."""
    context = container_security_context()
    if options.host_network:
        context.update(runAsNonRoot=False, runAsUser=0, runAsGroup=0)
        context["capabilities"] = {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    return context


def _pod_spec(options: DeployOptions) -> dict[str, Any]:
    container = {
        "name": "envoy",
        "image": options.envoy_image,
        "imagePullPolicy": options.image_pull_policy,
        "command": ["envoy"],
        "args": envoy_args(options),
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [{"name": "health", "containerPort": options.envoy_health_port, "protocol": "TCP"}],
        # No liveness probe: /ready is 503 until the first configuration arrives, so a control plane that is
        # down would get every Envoy restarted, and restarting does not help Envoy reach it.
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "health"}, "periodSeconds": 5},
        "lifecycle": {"preStop": {"exec": {"command": drain_command(options)}}},
        "resources": RESOURCES,
        "securityContext": security_context(options),
        "volumeMounts": [{"name": "bootstrap", "mountPath": BOOTSTRAP_DIR, "readOnly": True}],
    }
    pod_security: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if not options.host_network:
        pod_security["runAsNonRoot"] = True
        pod_security["sysctls"] = [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]
    spec: dict[str, Any] = {
        "serviceAccountName": ENVOY_NAME,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": options.drain_seconds + EXIT_SLACK_S,
        "securityContext": pod_security,
        "containers": [container],
        "volumes": [{"name": "bootstrap", "configMap": {"name": ENVOY_NAME, "defaultMode": 0o444}}],
    }
    if options.host_network:
        # Without it a host-network pod resolves with the node's resolver and cannot find the control plane.
        spec.update(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")
    if options.node_selector:
        spec["nodeSelector"] = dict(options.node_selector)
    if options.tolerations:
        spec["tolerations"] = [dict(t) for t in options.tolerations]
    return spec


def envoy_objects(options: DeployOptions, labels: dict[str, str]) -> list[dict[str, Any]]:
    """Bootstrap ConfigMap, the Envoy workload, and (optionally) the Service in front of it."""
    ns = options.namespace
    selector = {"app.kubernetes.io/name": ENVOY_NAME, "app.kubernetes.io/component": "data-plane"}
    pod_labels = {**labels, **selector}
    meta = {"name": ENVOY_NAME, "namespace": ns, "labels": pod_labels}
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {BOOTSTRAP_KEY: dump(bootstrap(options), sort_keys=True)},
    }
    template = {"metadata": {"labels": pod_labels}, "spec": _pod_spec(options)}
    workload: dict[str, Any] = {"apiVersion": "apps/v1", "kind": options.envoy_kind, "metadata": meta}
    if options.envoy_kind == "DaemonSet":
        workload["spec"] = {
            "selector": {"matchLabels": selector},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": template,
        }
    else:
        workload["spec"] = {
            "replicas": options.envoy_replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": template,
        }
    objects = [config_map, workload]
    if options.envoy_kind == "Deployment":
        objects.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": meta,
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
            }
        )
    if options.envoy_service_type is not None:
        service_spec: dict[str, Any] = {
            "type": options.envoy_service_type,
            "selector": selector,
            "ports": [
                {"name": f"tcp-{port}", "port": port, "targetPort": port, "protocol": "TCP"}
                for port in options.envoy_service_ports
            ],
        }
        if options.envoy_service_type in ("LoadBalancer", "NodePort"):
            # Keep the client's address (Envoy sees it) and skip the second hop between nodes.
            service_spec["externalTrafficPolicy"] = "Local"
        objects.append({"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": service_spec})
    return objects
