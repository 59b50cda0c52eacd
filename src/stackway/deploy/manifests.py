"""Every object a cluster needs to run stackway, rendered from `DeployOptions` without touching a cluster.

Prerequisite, not rendered: the Gateway API CRDs, standard channel, release `GATEWAY_API_VERSION` (v1.6.1),
installed from the upstream release (`kubectl apply --server-side -f
https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.6.1/standard-install.yaml`). They belong to
the cluster, not to one controller: copying them here would fight other controllers and upgrades over them.

Objects come out in an order `kubectl apply` can take in one pass (namespace and identities before the
workloads that use them); `render` is pure, so its output is a stable golden file.
"""

from __future__ import annotations

from typing import Any

from stackway import __version__
from stackway.deploy.controlplane import control_plane_objects
from stackway.deploy.envoy import envoy_objects
from stackway.deploy.options import (
    CLOUDS_YAML,
    GATEWAY_API_VERSION,
    GATEWAY_CONTROLLER_NAME,
    INGRESS_CONTROLLER_NAME,
    DeployOptions,
)
from stackway.deploy.rbac import rbac_objects
from stackway.deploy.yamlio import dump

__all__ = ["GATEWAY_API_VERSION", "DeployOptions", "render", "render_yaml"]


def common_labels() -> dict[str, str]:
    """Labels on every object, so that `kubectl get -l app.kubernetes.io/part-of=stackway` finds them all."""
    return {"app.kubernetes.io/part-of": "stackway", "app.kubernetes.io/version": __version__}


def class_objects(options: DeployOptions, labels: dict[str, str]) -> list[dict[str, Any]]:
    """The GatewayClass and IngressClass that hand Gateways and Ingresses to stackway."""
    annotations = {"ingressclass.kubernetes.io/is-default-class": "true"} if options.ingress_class_default else {}
    ingress_meta: dict[str, Any] = {"name": options.ingress_class, "labels": dict(labels)}
    if annotations:
        ingress_meta["annotations"] = annotations
    return [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": options.gateway_class, "labels": dict(labels)},
            "spec": {
                "controllerName": GATEWAY_CONTROLLER_NAME,
                "description": "Envoy programmed over xDS by the stackway control plane",
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": ingress_meta,
            "spec": {"controller": INGRESS_CONTROLLER_NAME},
        },
    ]


def render(options: DeployOptions | None = None) -> list[dict[str, Any]]:
    """Every object of an install, as plain data: namespace, identities and RBAC, control plane, Envoys,
    classes. Pure: the same options give the same objects."""
    options = options or DeployOptions()
    labels = common_labels()
    # Every pod meets the restricted Pod Security Standard, except host-network Envoys (host namespaces and
    # root for ports below 1024), which only the privileged level admits.
    level = "privileged" if options.host_network else "restricted"
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": options.namespace, "labels": {**labels, "pod-security.kubernetes.io/enforce": level}},
    }
    return [
        namespace,
        *rbac_objects(options, labels),
        *control_plane_objects(options, labels),
        *envoy_objects(options, labels),
        *class_objects(options, labels),
    ]


def render_yaml(options: DeployOptions | None = None) -> str:
    """`render` as one multi-document YAML stream, for `kubectl apply -f -`."""
    header = (
        f"# stackway {__version__}. Requires the Gateway API CRDs {GATEWAY_API_VERSION} (standard channel):\n"
        f"# kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/"
        f"{GATEWAY_API_VERSION}/standard-install.yaml\n"
    )
    if options is not None and options.openstack_cloud is not None:
        # The Secret is a prerequisite like the CRDs: credentials are never rendered.
        header += (
            f"# OpenStack load balancers: requires a Secret with a {CLOUDS_YAML} that defines cloud "
            f"{options.openstack_cloud!r}:\n"
            f"# kubectl -n {options.namespace} create secret generic {options.openstack_secret} "
            f"--from-file={CLOUDS_YAML}\n"
        )
    documents = [dump(obj) for obj in render(options)]
    return header + "---\n" + "---\n".join(documents)
