"""stackway: a Kubernetes gateway with a Python control plane and an Envoy data plane."""

__version__ = "0.1.0"
