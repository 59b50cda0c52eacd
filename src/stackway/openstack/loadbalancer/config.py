"""Cluster-wide load-balancer settings: OCCM's ``[LoadBalancer]`` section, as command-line options."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LBConfig:
    """Defaults that annotations override per Service (same names and defaults as OCCM's cloud.conf)."""

    cluster_name: str = "kubernetes"
    subnet_id: str | None = None
    network_id: str | None = None
    member_subnet_id: str | None = None
    floating_network_id: str | None = None
    floating_subnet_id: str | None = None
    lb_provider: str | None = None
    lb_method: str = "ROUND_ROBIN"
    internal_lb: bool = False
    create_monitor: bool = False
    monitor_delay: int = 5
    monitor_timeout: int = 3
    monitor_max_retries: int = 1
    monitor_max_retries_down: int = 3
    flavor_id: str | None = None
    availability_zone: str | None = None
    node_selector: str | None = None
    enable_ingress_hostname: bool = False
    ingress_hostname_suffix: str = "nip.io"
    #: Services may share one LB through the ``load-balancer-id`` annotation, up to this many.
    max_shared_lb: int = 2
    #: OCCM's ``provider-requires-serial-api-calls``: build LB, listeners, pools, members and monitors one call
    #: at a time, for providers whose fully-populated create leaves children in PENDING_CREATE.
    serial_api_calls: bool = False
