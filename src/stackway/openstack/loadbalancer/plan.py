"""Service + Nodes + annotations → the Octavia load balancer it should have. Pure: no I/O, no clock.

The rules are OCCM's (cloud-provider-openstack ``loadbalancer.go``), so a cluster moving to stackway keeps its
load balancers: the same names, one listener + pool per Service port, members on node ports.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from stackway.openstack.loadbalancer import annotations as ann
from stackway.openstack.loadbalancer import names
from stackway.openstack.loadbalancer.config import LBConfig
from stackway.openstack.loadbalancer.spec import (
    FloatingIPSpec,
    ListenerSpec,
    LoadBalancerSpec,
    MemberSpec,
    MonitorSpec,
    PoolSpec,
)
from stackway.resources.catalog import parse
from stackway.resources.core import Node, Service
from stackway.resources.raw import ObjectKey, RawObject

EXCLUDE_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
SOURCE_RANGES_ANNOTATION = "service.beta.kubernetes.io/load-balancer-source-ranges"


@dataclass(frozen=True)
class Plan:
    """The planner's answer: a spec, or the problems that stop one (the LB is then left as it was)."""

    spec: LoadBalancerSpec | None
    problems: tuple[ann.AnnotationProblem, ...] = ()


def wants_load_balancer(service: Service) -> bool:
    """Ours when type LoadBalancer and no other implementation is named by ``spec.loadBalancerClass``."""
    return service.spec.type == "LoadBalancer" and service.spec.load_balancer_class is None


@dataclass(frozen=True)
class Inputs:
    """What the load-balancer controller reads from a set of objects: valid Services and Nodes, and a line
    for every Service or Node that does not validate (it is left out, never guessed at)."""

    services: list[Service] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    invalid: list[tuple[ObjectKey, str]] = field(default_factory=list)

    @property
    def live(self) -> set[tuple[str, str]]:
        """(namespace, name) of every Service whose LB orphan collection must keep: those that want one, and
        those that do not validate (a broken manifest is not a deleted Service)."""
        broken = {(key.namespace, key.name) for key, _ in self.invalid if key.kind == "Service"}
        return broken | {(s.metadata.namespace, s.metadata.name) for s in self.services if wants_load_balancer(s)}


def select(objects: Iterable[RawObject]) -> Inputs:
    """The Services and Nodes among ``objects`` (a provider's picture or a manifest directory), typed."""
    inputs = Inputs()
    for raw in objects:
        if raw.key.group != "" or raw.key.kind not in ("Service", "Node"):
            continue
        model = parse(raw)
        if isinstance(model, Service):
            inputs.services.append(model)
        elif isinstance(model, Node):
            inputs.nodes.append(model)
        else:
            inputs.invalid.append((raw.key, f"{raw.key.kind} {raw.key.namespace}/{raw.key.name}: {model}"))
    return inputs


def member_nodes(nodes: Iterable[Node], selector: dict[str, str]) -> list[Node]:
    """Nodes that serve as members: addressable, not excluded, matching the node selector, sorted by name.

    Readiness does not filter (Kubernetes ≥ 1.28 service controller behaviour): the health monitor takes
    unhealthy nodes out of rotation without a member update for every flap.
    """
    chosen = []
    for node in nodes:
        labels = node.metadata.labels
        if EXCLUDE_LABEL in labels or node.metadata.deletion_timestamp:
            continue
        if any(labels.get(k) != v for k, v in selector.items()):
            continue
        if node.address() is None:
            continue
        chosen.append(node)
    return sorted(chosen, key=lambda n: n.metadata.name)


def _protocols(port_protocol: str, options: ann.LBOptions) -> tuple[str, str]:
    """(listener protocol, pool protocol) for one Service port."""
    if port_protocol == "UDP":
        return "UDP", "UDP"
    if port_protocol == "SCTP":
        return "SCTP", "SCTP"
    if options.tls_container_ref:
        return "TERMINATED_HTTPS", "HTTP"
    if options.x_forwarded_for:
        return "HTTP", "HTTP"
    return "TCP", options.proxy_protocol or "TCP"


def _monitor(index: int, lb: str, pool_protocol: str, local_port: int | None, o: ann.LBOptions) -> MonitorSpec:
    name = names.monitor_name(index, lb)
    timing = (o.monitor_delay, o.monitor_timeout, o.monitor_max_retries, o.monitor_max_retries_down)
    if local_port:
        return MonitorSpec(name, "HTTP", *timing, http_method="GET", url_path="/healthz", expected_codes="200")
    kind = {"UDP": "UDP-CONNECT", "SCTP": "SCTP"}.get(pool_protocol, "TCP")
    return MonitorSpec(name, kind, *timing)


def _source_ranges(service: Service, problems: list[ann.AnnotationProblem]) -> tuple[str, ...]:
    ranges = list(service.spec.load_balancer_source_ranges)
    field = "spec.loadBalancerSourceRanges"
    if not ranges and SOURCE_RANGES_ANNOTATION in service.metadata.annotations:
        field = SOURCE_RANGES_ANNOTATION
        ranges = [r.strip() for r in service.metadata.annotations[SOURCE_RANGES_ANNOTATION].split(",") if r.strip()]
    for index, cidr in enumerate(ranges):
        if not ann.valid_cidr(cidr):
            problems.append(ann.AnnotationProblem(f"{field}[{index}]", f"{cidr!r} is not a CIDR"))
    return tuple(sorted(set(ranges)))


def plan(service: Service, nodes: Iterable[Node], config: LBConfig) -> Plan:
    """The desired load balancer for ``service``; ``Plan.spec`` is None when a problem forbids acting."""
    meta = service.metadata
    options, found = ann.parse(meta.annotations, config)
    problems = list(found)
    lb = names.lb_name(config.cluster_name, meta.namespace, meta.name)
    warnings: list[str] = []
    allowed = _source_ranges(service, problems)
    local = (service.spec.external_traffic_policy or "Cluster") == "Local"
    local_port = service.spec.health_check_node_port if local and options.health_monitor else None
    if local and not options.health_monitor:
        warnings.append(
            f"externalTrafficPolicy Local without a health monitor: set {ann.ENABLE_HEALTH_MONITOR}=true so "
            "nodes without endpoints leave the pool"
        )
    if not service.spec.ports:
        problems.append(ann.AnnotationProblem("spec.ports", "a LoadBalancer Service needs at least one port"))
    members_nodes = member_nodes(nodes, options.node_selector)
    member_subnet = options.member_subnet_id or options.subnet_id
    listeners = []
    seen: set[tuple[str, int]] = set()
    for index, port in enumerate(service.spec.ports):
        where = f"spec.ports[{index}]"
        listener_protocol, pool_protocol = _protocols(port.protocol, options)
        if options.proxy_protocol and port.protocol != "TCP":
            problems.append(ann.AnnotationProblem(ann.PROXY_PROTOCOL, f"{where} is {port.protocol}; PROXY needs TCP"))
        if port.node_port is None:
            problems.append(ann.AnnotationProblem(f"{where}.nodePort", "not allocated; members listen on node ports"))
            continue
        key = (port.protocol, port.port)
        if key in seen:
            problems.append(ann.AnnotationProblem(where, f"{port.protocol}/{port.port} is listed twice"))
        seen.add(key)
        members = tuple(
            MemberSpec(
                name=node.metadata.name,
                address=node.address() or "",
                protocol_port=port.node_port,
                subnet_id=member_subnet,
                monitor_port=local_port,
            )
            for node in members_nodes
        )
        monitor = _monitor(index, lb, pool_protocol, local_port, options) if options.health_monitor else None
        pool = PoolSpec(names.pool_name(index, lb), pool_protocol, options.lb_method, members, monitor)
        insert_headers = (("X-Forwarded-For", "true"),) if listener_protocol in ("HTTP", "TERMINATED_HTTPS") else ()
        listeners.append(
            ListenerSpec(
                name=names.listener_name(index, lb),
                protocol=listener_protocol,
                protocol_port=port.port,
                pool=pool,
                connection_limit=options.connection_limit if options.connection_limit is not None else -1,
                timeout_client_data=options.timeout_client_data,
                timeout_member_connect=options.timeout_member_connect,
                timeout_member_data=options.timeout_member_data,
                timeout_tcp_inspect=options.timeout_tcp_inspect,
                allowed_cidrs=allowed,
                insert_headers=insert_headers if options.x_forwarded_for else (),
                default_tls_container_ref=options.tls_container_ref,
                tags=(lb,),
            )
        )
    shared = options.load_balancer_id
    if shared and options.internal:
        problems.append(ann.AnnotationProblem(ann.LOAD_BALANCER_ID, "an internal Service cannot share a load balancer"))
    if not shared and not (options.subnet_id or options.network_id or options.port_id):
        problems.append(
            ann.AnnotationProblem(ann.SUBNET_ID, "no VIP subnet: set it on the Service or give --subnet-id to stackway")
        )
    floating = _floating(service, options, config, shared, warnings)
    if problems:
        return Plan(None, tuple(problems))
    spec = LoadBalancerSpec(
        name=lb,
        description=f"Kubernetes external service {meta.namespace}/{meta.name} from cluster {config.cluster_name}",
        vip_subnet_id=options.subnet_id,
        vip_network_id=options.network_id if not options.subnet_id else None,
        vip_port_id=options.port_id,
        flavor_id=options.flavor_id,
        availability_zone=options.availability_zone,
        provider=config.lb_provider,
        listeners=tuple(listeners),
        floating_ip=floating,
        tags=(lb,),
        existing_id=shared,
        hostname=options.hostname,
        warnings=tuple(warnings),
        serial=config.serial_api_calls,
        max_shared=config.max_shared_lb,
    )
    return Plan(spec)


def _floating(
    service: Service, options: ann.LBOptions, config: LBConfig, shared: str | None, warnings: list[str]
) -> FloatingIPSpec:
    meta = service.metadata
    description = names.fip_description(config.cluster_name, meta.namespace, meta.name)
    if options.internal:
        return FloatingIPSpec(wanted=False, keep=options.keep_floating_ip, description=description)
    if shared:
        warnings.append("a Service sharing a load balancer gets no floating IP of its own (only the owner does)")
        return FloatingIPSpec(wanted=False, keep=True, description=description)
    address = service.spec.load_balancer_ip or None
    if not options.floating_network_id and not address:
        warnings.append(
            f"no floating network ({ann.FLOATING_NETWORK_ID} or --floating-network-id): the load balancer is internal"
        )
        return FloatingIPSpec(wanted=False, keep=options.keep_floating_ip, description=description)
    return FloatingIPSpec(
        wanted=True,
        network_id=options.floating_network_id,
        subnet_id=options.floating_subnet_id,
        subnet_pattern=options.floating_subnet,
        address=address,
        keep=options.keep_floating_ip,
        description=description,
    )
