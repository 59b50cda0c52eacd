"""Cluster mode's source of objects: the Kubernetes API, listed and watched."""

from stackway.providers.kubernetes.client import DEFAULT_KINDS, Kind, KubeApi, KubeApiError, load_configuration
from stackway.providers.kubernetes.watch import KubernetesProvider

__all__ = ["DEFAULT_KINDS", "Kind", "KubeApi", "KubeApiError", "KubernetesProvider", "load_configuration"]
