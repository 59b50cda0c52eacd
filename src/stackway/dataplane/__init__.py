"""Envoy data plane: bootstrap rendering and a process supervisor."""
