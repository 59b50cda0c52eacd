"""The Cinder CSI driver in a cluster (`stackway manifests --csi`): CSIDriver, the controller Deployment with the
Kubernetes CSI sidecars, the node DaemonSet with the node-driver-registrar, RBAC, and example classes.

The driver gets its own namespace because its node plugin must be privileged (it formats and mounts disks
and propagates mounts back to the kubelet), while stackway's gateway namespace enforces the restricted Pod
Security Standard. The controller stays restricted-compliant: it only talks to Cinder and Nova.

Prerequisites, not rendered: a Secret with a clouds.yaml (`kubectl -n stackway-csi create secret generic
stackway-csi-cloud --from-file=clouds.yaml`), and for snapshots the snapshot CRDs and snapshot-controller of
kubernetes-csi/external-snapshotter (they belong to the cluster, like the Gateway API CRDs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stackway.deploy.controlplane import container_security_context
from stackway.deploy.options import default_image
from stackway.deploy.yamlio import dump

#: The Kubernetes CSI sidecars, by release; tested together against CSI spec 1.x drivers.
SIDECARS = {
    "csi-provisioner": "registry.k8s.io/sig-storage/csi-provisioner:v5.2.0",
    "csi-attacher": "registry.k8s.io/sig-storage/csi-attacher:v4.8.0",
    "csi-snapshotter": "registry.k8s.io/sig-storage/csi-snapshotter:v8.2.0",
    "csi-resizer": "registry.k8s.io/sig-storage/csi-resizer:v1.13.1",
    "liveness-probe": "registry.k8s.io/sig-storage/livenessprobe:v2.15.0",
    "node-driver-registrar": "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.13.0",
}
CONTROLLER = "stackway-csi-controller"
NODE = "stackway-csi-node"
SOCKET_DIR = "/csi"
SOCKET = f"{SOCKET_DIR}/csi.sock"
CLOUD_DIR = "/etc/openstack"
#: Health ports of the liveness-probe sidecars; the node pods use the host network, hence a distinct one.
CONTROLLER_HEALTH_PORT = 9808
NODE_HEALTH_PORT = 9809
METRICS_PORT = 9810


@dataclass(frozen=True)
class CsiOptions:
    """What an operator chooses for the CSI install; the defaults take over cloud-provider-openstack's PVs."""

    driver_name: str = "cinder.csi.openstack.org"
    namespace: str = "stackway-csi"
    image: str = field(default_factory=default_image)
    image_pull_policy: str = "IfNotPresent"
    #: Secret holding clouds.yaml, and the cloud in it the controller uses.
    cloud_secret: str = "stackway-csi-cloud"
    os_cloud: str = "openstack"
    controller_replicas: int = 1
    topology: bool = True
    kubelet_dir: str = "/var/lib/kubelet"
    max_volumes_per_node: int = 256
    storage_class: str = "csi-cinder"
    #: Cinder volume type of the example StorageClass (None: Cinder's default type).
    volume_type: str | None = None
    default_storage_class: bool = False
    sidecars: dict[str, str] = field(default_factory=lambda: dict(SIDECARS))


def labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/part-of": "stackway", "app.kubernetes.io/name": component}


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


#: What the four controller sidecars read and write, from their published RBAC (the driver itself needs none).
CONTROLLER_RULES = [
    _rule([""], ["persistentvolumes"], ["get", "list", "watch", "create", "patch", "delete"]),
    _rule([""], ["persistentvolumeclaims"], ["get", "list", "watch", "update"]),
    _rule([""], ["persistentvolumeclaims/status"], ["patch"]),
    _rule([""], ["events"], ["get", "list", "watch", "create", "update", "patch"]),
    _rule([""], ["nodes"], ["get", "list", "watch"]),
    _rule([""], ["pods"], ["get", "list", "watch"]),
    _rule(["storage.k8s.io"], ["storageclasses", "csinodes", "volumeattributesclasses"], ["get", "list", "watch"]),
    _rule(["storage.k8s.io"], ["volumeattachments"], ["get", "list", "watch", "patch"]),
    _rule(["storage.k8s.io"], ["volumeattachments/status"], ["patch"]),
    _rule(["snapshot.storage.k8s.io"], ["volumesnapshotclasses", "volumesnapshots"], ["get", "list", "watch"]),
    _rule(["snapshot.storage.k8s.io"], ["volumesnapshotcontents"], ["get", "list", "watch", "update", "patch"]),
    _rule(["snapshot.storage.k8s.io"], ["volumesnapshotcontents/status"], ["update", "patch"]),
]
#: Leader election of the sidecars (several controller replicas, one acting), in the driver's namespace.
LEASE_RULES = [
    _rule(["coordination.k8s.io"], ["leases"], ["get", "list", "watch", "create", "update", "patch", "delete"])
]


def _rbac(options: CsiOptions) -> list[dict[str, Any]]:
    ns, rbac = options.namespace, "rbac.authorization.k8s.io/v1"
    subject = [{"kind": "ServiceAccount", "name": CONTROLLER, "namespace": ns}]
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": CONTROLLER, "namespace": ns, "labels": labels(CONTROLLER)},
        },
        {
            # The node plugin never calls the API server: no grants, no token.
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": NODE, "namespace": ns, "labels": labels(NODE)},
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": rbac,
            "kind": "ClusterRole",
            "metadata": {"name": CONTROLLER, "labels": labels(CONTROLLER)},
            "rules": CONTROLLER_RULES,
        },
        {
            "apiVersion": rbac,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": CONTROLLER, "labels": labels(CONTROLLER)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CONTROLLER},
            "subjects": subject,
        },
        {
            "apiVersion": rbac,
            "kind": "Role",
            "metadata": {"name": CONTROLLER, "namespace": ns, "labels": labels(CONTROLLER)},
            "rules": LEASE_RULES,
        },
        {
            "apiVersion": rbac,
            "kind": "RoleBinding",
            "metadata": {"name": CONTROLLER, "namespace": ns, "labels": labels(CONTROLLER)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CONTROLLER},
            "subjects": subject,
        },
    ]


def _sidecar(options: CsiOptions, name: str, args: list[str], mounts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "image": options.sidecars[name],
        "imagePullPolicy": options.image_pull_policy,
        "args": args,
        "volumeMounts": mounts,
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": container_security_context(),
    }


def _controller(options: CsiOptions) -> dict[str, Any]:
    socket = [{"name": "socket-dir", "mountPath": SOCKET_DIR}]
    address = f"--csi-address={SOCKET}"
    # Sidecars time out an RPC after --timeout and retry it; the driver's own waits (attach 120 s, volume
    # creation 300 s) end DEADLINE_EXCEEDED earlier or later, and a retry picks the work up where it is.
    elect = ["--leader-election", f"--leader-election-namespace={options.namespace}"]
    provisioner = [address, "--timeout=3m", "--default-fstype=ext4", "--extra-create-metadata", *elect]
    if options.topology:
        provisioner.append("--feature-gates=Topology=true")
    plugin = {
        "name": "cinder-csi-plugin",
        "image": options.image,
        "imagePullPolicy": options.image_pull_policy,
        "args": [
            "csi",
            "--mode=controller",
            f"--endpoint=unix://{SOCKET}",
            f"--driver-name={options.driver_name}",
            f"--os-cloud={options.os_cloud}",
            f"--metrics=0.0.0.0:{METRICS_PORT}",
            "--topology" if options.topology else "--no-topology",
        ],
        "env": [{"name": "OS_CLIENT_CONFIG_FILE", "value": f"{CLOUD_DIR}/clouds.yaml"}],
        "ports": [
            {"name": "healthz", "containerPort": CONTROLLER_HEALTH_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "healthz"},
            "initialDelaySeconds": 10,
            "periodSeconds": 30,
            "timeoutSeconds": 10,
            "failureThreshold": 5,
        },
        "volumeMounts": [*socket, {"name": "cloud-config", "mountPath": CLOUD_DIR, "readOnly": True}],
        "resources": {"requests": {"cpu": "20m", "memory": "96Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": container_security_context(),
    }
    containers = [
        plugin,
        _sidecar(options, "csi-provisioner", provisioner, socket),
        _sidecar(options, "csi-attacher", [address, "--timeout=3m", *elect], socket),
        _sidecar(options, "csi-snapshotter", [address, "--timeout=3m", "--extra-create-metadata", *elect], socket),
        _sidecar(
            options, "csi-resizer", [address, "--timeout=3m", "--handle-volume-inuse-error=false", *elect], socket
        ),
        _sidecar(options, "liveness-probe", [address, f"--http-endpoint=:{CONTROLLER_HEALTH_PORT}"], socket),
    ]
    selector = labels(CONTROLLER)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": CONTROLLER, "namespace": options.namespace, "labels": selector},
        "spec": {
            "replicas": options.controller_replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {
                    "serviceAccountName": CONTROLLER,
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": containers,
                    "volumes": [
                        {"name": "socket-dir", "emptyDir": {}},
                        {"name": "cloud-config", "secret": {"secretName": options.cloud_secret}},
                    ],
                },
            },
        },
    }


def _node(options: CsiOptions) -> dict[str, Any]:
    kubelet = options.kubelet_dir
    plugin_dir = f"{kubelet}/plugins/{options.driver_name}"
    socket = [{"name": "plugin-dir", "mountPath": SOCKET_DIR}]
    privileged = {"privileged": True, "allowPrivilegeEscalation": True, "capabilities": {"add": ["SYS_ADMIN"]}}
    plugin = {
        "name": "cinder-csi-plugin",
        "image": options.image,
        "imagePullPolicy": options.image_pull_policy,
        "args": [
            "csi",
            "--mode=node",
            f"--endpoint=unix://{SOCKET}",
            f"--driver-name={options.driver_name}",
            f"--max-volumes-per-node={options.max_volumes_per_node}",
            "--topology" if options.topology else "--no-topology",
        ],
        "ports": [{"name": "healthz", "containerPort": NODE_HEALTH_PORT, "protocol": "TCP"}],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "healthz"},
            "initialDelaySeconds": 10,
            "periodSeconds": 30,
            "timeoutSeconds": 10,
            "failureThreshold": 5,
        },
        # Mounts made in the kubelet directory must reach the kubelet's namespace: Bidirectional.
        "volumeMounts": [
            *socket,
            {"name": "kubelet-dir", "mountPath": kubelet, "mountPropagation": "Bidirectional"},
            {"name": "device-dir", "mountPath": "/dev"},
            {"name": "sys-dir", "mountPath": "/sys"},
        ],
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": privileged,
    }
    registrar = {
        "name": "node-driver-registrar",
        "image": options.sidecars["node-driver-registrar"],
        "imagePullPolicy": options.image_pull_policy,
        "args": [f"--csi-address={SOCKET}", f"--kubelet-registration-path={plugin_dir}/csi.sock"],
        "livenessProbe": {
            "exec": {
                "command": [
                    "/csi-node-driver-registrar",
                    f"--kubelet-registration-path={plugin_dir}/csi.sock",
                    "--mode=kubelet-registration-probe",
                ]
            },
            "initialDelaySeconds": 30,
            "timeoutSeconds": 15,
        },
        "volumeMounts": [*socket, {"name": "registration-dir", "mountPath": "/registration"}],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
    }
    probe = {
        "name": "liveness-probe",
        "image": options.sidecars["liveness-probe"],
        "imagePullPolicy": options.image_pull_policy,
        "args": [f"--csi-address={SOCKET}", f"--http-endpoint=:{NODE_HEALTH_PORT}"],
        "volumeMounts": socket,
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
    }

    def host_path(name: str, path: str, kind: str) -> dict[str, Any]:
        return {"name": name, "hostPath": {"path": path, "type": kind}}

    selector = labels(NODE)
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": NODE, "namespace": options.namespace, "labels": selector},
        "spec": {
            "selector": {"matchLabels": selector},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": selector},
                "spec": {
                    "serviceAccountName": NODE,
                    "automountServiceAccountToken": False,
                    # The metadata service (the node's Nova server ID) answers on the node's own network.
                    "hostNetwork": True,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "priorityClassName": "system-node-critical",
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [plugin, registrar, probe],
                    "volumes": [
                        host_path("plugin-dir", plugin_dir, "DirectoryOrCreate"),
                        host_path("registration-dir", f"{kubelet}/plugins_registry", "Directory"),
                        host_path("kubelet-dir", kubelet, "Directory"),
                        host_path("device-dir", "/dev", "Directory"),
                        host_path("sys-dir", "/sys", "Directory"),
                    ],
                },
            },
        },
    }


def _classes(options: CsiOptions) -> list[dict[str, Any]]:
    parameters = {"type": options.volume_type} if options.volume_type else {}
    meta: dict[str, Any] = {"name": options.storage_class, "labels": labels("stackway-csi")}
    if options.default_storage_class:
        meta["annotations"] = {"storageclass.kubernetes.io/is-default-class": "true"}
    storage_class: dict[str, Any] = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": meta,
        "provisioner": options.driver_name,
        "reclaimPolicy": "Delete",
        # Waiting for the pod lets the scheduler pick the node first, so the volume lands in its zone.
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": True,
    }
    if parameters:
        storage_class["parameters"] = parameters
    snapshot_class = {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotClass",
        "metadata": {"name": options.storage_class, "labels": labels("stackway-csi")},
        "driver": options.driver_name,
        "deletionPolicy": "Delete",
        "parameters": {"force-create": "true"},
    }
    return [storage_class, snapshot_class]


def render_csi(options: CsiOptions | None = None) -> list[dict[str, Any]]:
    """Every object of the CSI install, in an order `kubectl apply` takes in one pass. Pure."""
    options = options or CsiOptions()
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": options.namespace,
            "labels": {**labels("stackway-csi"), "pod-security.kubernetes.io/enforce": "privileged"},
        },
    }
    driver = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSIDriver",
        "metadata": {"name": options.driver_name, "labels": labels("stackway-csi")},
        "spec": {
            "attachRequired": True,  # ControllerPublish attaches through Nova
            "podInfoOnMount": False,
            "fsGroupPolicy": "File",
            "volumeLifecycleModes": ["Persistent"],
            "requiresRepublish": False,
            "storageCapacity": False,
        },
    }
    return [namespace, driver, *_rbac(options), _controller(options), _node(options), *_classes(options)]


def render_csi_yaml(options: CsiOptions | None = None) -> str:
    """`render_csi` as YAML documents that continue a `stackway manifests` stream (each starts with ---)."""
    options = options or CsiOptions()
    header = (
        f"# Cinder CSI driver {options.driver_name}. Requires a Secret with clouds.yaml (cloud {options.os_cloud!r}):\n"
        f"# kubectl -n {options.namespace} create secret generic {options.cloud_secret} --from-file=clouds.yaml\n"
        "# and, for snapshots, the CRDs and snapshot-controller of kubernetes-csi/external-snapshotter.\n"
    )
    return "---\n" + header + "---\n".join(dump(obj) for obj in render_csi(options))
