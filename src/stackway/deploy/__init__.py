"""Kubernetes manifests for stackway (`stackway manifests`): control plane, Envoys, RBAC and classes."""

from stackway.deploy.manifests import render, render_yaml
from stackway.deploy.options import GATEWAY_API_VERSION, DeployOptions, parse_selector, parse_toleration

__all__ = ["GATEWAY_API_VERSION", "DeployOptions", "parse_selector", "parse_toleration", "render", "render_yaml"]
