"""The control plane in the cluster: `stackway serve` as a Deployment, its disruption budget and Service.

Two replicas on different nodes, because every replica serves xDS (an Envoy reconnects to the survivor
within its retry back-off when one goes) while the Lease decides which one writes status.

Readiness and the Envoys: `/readyz` answers 200 only once at least one Envoy is connected and every connected
Envoy has ACKed the latest snapshot. Envoys reach the replicas through the Service, so a Service that routed
to ready pods only would never let the first Envoy in. The Service therefore publishes not-ready addresses:
readiness still gates rollouts and says whether a replica is in sync, but not whether it is reachable. For the
same reason the rollout replaces one replica at a time without a surge (the Envoys of the replaced replica
reconnect and make the new one ready), and the disruption budget lets not-ready replicas be evicted.

With `openstack_cloud` the same pods also run the OpenStack load-balancer controller (only the Lease holder
acts on Octavia): the operator's Secret with clouds.yaml is mounted read-only and the cloud settings become
`serve` flags. Nothing else changes, so the rendering without it stays exactly what it was.
"""

from __future__ import annotations

from typing import Any

from stackway.deploy.options import ADMIN_PORT, CONTROL_PLANE_NAME, OPENSTACK_CONFIG_DIR, XDS_PORT, DeployOptions

#: Requests size the scheduler's view; the memory limit bounds a leak, the CPU limit a hot loop. Translation
#: of a large cluster is bursty and single-threaded, so one CPU is the useful ceiling.
RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}

#: Non-root, nothing writable but an emptyDir /tmp, no capabilities, no privilege escalation.
USER_ID = 65532


def container_security_context() -> dict[str, Any]:
    """The restricted Pod Security Standard for a container; shared with the Envoy pod network mode."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": USER_ID,
        "runAsGroup": USER_ID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


#: The volume carrying the operator's clouds.yaml Secret.
CLOUD_VOLUME = "cloud-config"


def serve_args(options: DeployOptions) -> list[str]:
    """`stackway serve` flags: listen on the pod IP for both ports (the Service and the kubelet dial it), and
    the load-balancer settings when a cloud is configured."""
    args = [
        "serve",
        f"--xds=0.0.0.0:{XDS_PORT}",
        f"--admin=0.0.0.0:{ADMIN_PORT}",
        f"--log-level={options.log_level}",
    ]
    return args + load_balancer_args(options)


def load_balancer_args(options: DeployOptions) -> list[str]:
    """The `serve` flags of the OpenStack load balancers; none without a cloud. The cluster name is always
    written out: it goes into every load balancer's name, so the Deployment should say which it is."""
    if options.openstack_cloud is None:
        return []
    args = [f"--os-cloud={options.openstack_cloud}", f"--cluster-name={options.lb_cluster_name}"]
    if options.lb_subnet_id is not None:
        args.append(f"--subnet-id={options.lb_subnet_id}")
    if options.lb_floating_network_id is not None:
        args.append(f"--floating-network-id={options.lb_floating_network_id}")
    if options.lb_create_monitor:
        args.append("--create-monitor")
    if options.lb_serial_api_calls:
        args.append("--serial-api-calls")
    return args


def control_plane_objects(options: DeployOptions, labels: dict[str, str]) -> list[dict[str, Any]]:
    """Deployment, PodDisruptionBudget and Service of the control plane."""
    ns = options.namespace
    selector = {"app.kubernetes.io/name": CONTROL_PLANE_NAME, "app.kubernetes.io/component": "control-plane"}
    pod_labels = {**labels, **selector}
    meta = {"name": CONTROL_PLANE_NAME, "namespace": ns, "labels": pod_labels}
    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    if options.load_balancers:
        # clouds.yaml is a file openstacksdk finds through OS_CLIENT_CONFIG_FILE; mounting the whole Secret
        # (not one key) also brings any CA bundle or client key that clouds.yaml refers to by path.
        env.append({"name": "OS_CLIENT_CONFIG_FILE", "value": options.clouds_yaml_path})
        mounts.append({"name": CLOUD_VOLUME, "mountPath": OPENSTACK_CONFIG_DIR, "readOnly": True})
        volumes.append({"name": CLOUD_VOLUME, "secret": {"secretName": options.openstack_secret}})
    container = {
        "name": "stackway",
        "image": options.image,
        "imagePullPolicy": options.image_pull_policy,
        "command": ["stackway"],
        "args": serve_args(options),
        "env": env,
        "ports": [
            {"name": "xds", "containerPort": XDS_PORT, "protocol": "TCP"},
            {"name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP"},
        ],
        # The process answers /healthz while its event loop runs; restart it only when that stops.
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "admin"},
            "initialDelaySeconds": 5,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "admin"}, "periodSeconds": 5},
        "resources": RESOURCES,
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": options.replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "serviceAccountName": CONTROL_PLANE_NAME,
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    # Preferred, not required: a one-node cluster still runs both replicas.
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "topologyKey": "kubernetes.io/hostname",
                                        "labelSelector": {"matchLabels": selector},
                                    },
                                }
                            ]
                        }
                    },
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta,
        "spec": {
            "minAvailable": 1,
            "selector": {"matchLabels": selector},
            # A replica with no Envoy connected is not ready (see the module docstring) yet healthy.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "publishNotReadyAddresses": True,
            "ports": [
                {"name": "grpc-xds", "port": XDS_PORT, "targetPort": "xds", "protocol": "TCP", "appProtocol": "grpc"},
                {"name": "http-metrics", "port": ADMIN_PORT, "targetPort": "admin", "protocol": "TCP"},
            ],
        },
    }
    return [deployment, budget, service]
