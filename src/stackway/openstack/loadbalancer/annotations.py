"""OCCM's Service annotations, parsed once into typed options; every bad value names its annotation.

A wrong annotation must never change the load balancer: parsing collects every problem, and the controller
then leaves the LB as it was and reports them all (Event + status), rather than acting on half a config.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from stackway.openstack.loadbalancer.config import LBConfig

P = "loadbalancer.openstack.org/"
INTERNAL = "service.beta.kubernetes.io/openstack-internal-load-balancer"
FLOATING_NETWORK_ID = P + "floating-network-id"
FLOATING_SUBNET = P + "floating-subnet"
FLOATING_SUBNET_ID = P + "floating-subnet-id"
KEEP_FLOATINGIP = P + "keep-floatingip"
LB_METHOD = P + "lb-method"
PROXY_PROTOCOL = P + "proxy-protocol"
SUBNET_ID = P + "subnet-id"
NETWORK_ID = P + "network-id"
MEMBER_SUBNET_ID = P + "member-subnet-id"
PORT_ID = P + "port-id"
CONNECTION_LIMIT = P + "connection-limit"
TIMEOUT_CLIENT_DATA = P + "timeout-client-data"
TIMEOUT_MEMBER_CONNECT = P + "timeout-member-connect"
TIMEOUT_MEMBER_DATA = P + "timeout-member-data"
TIMEOUT_TCP_INSPECT = P + "timeout-tcp-inspect"
ENABLE_HEALTH_MONITOR = P + "enable-health-monitor"
HM_DELAY = P + "health-monitor-delay"
HM_TIMEOUT = P + "health-monitor-timeout"
HM_MAX_RETRIES = P + "health-monitor-max-retries"
HM_MAX_RETRIES_DOWN = P + "health-monitor-max-retries-down"
X_FORWARDED_FOR = P + "x-forwarded-for"
FLAVOR_ID = P + "flavor-id"
AVAILABILITY_ZONE = P + "availability-zone"
NODE_SELECTOR = P + "node-selector"
LOAD_BALANCER_ID = P + "load-balancer-id"
HOSTNAME = P + "hostname"
DEFAULT_TLS_CONTAINER_REF = P + "default-tls-container-ref"
LOAD_BALANCER_ADDRESS = P + "load-balancer-address"

#: Annotations OCCM knows that stackway does not act on; using one is reported, never silently ignored.
UNSUPPORTED = (P + "class", P + "floating-subnet-tags", P + "enable-ingress-hostname")

LB_METHODS = ("ROUND_ROBIN", "LEAST_CONNECTIONS", "SOURCE_IP", "SOURCE_IP_PORT")


@dataclass(frozen=True)
class AnnotationProblem:
    annotation: str
    message: str

    def __str__(self) -> str:
        return f"{self.annotation}: {self.message}"


@dataclass(frozen=True)
class LBOptions:
    internal: bool
    floating_network_id: str | None
    floating_subnet_id: str | None
    floating_subnet: str | None
    keep_floating_ip: bool
    lb_method: str
    proxy_protocol: str | None
    subnet_id: str | None
    network_id: str | None
    member_subnet_id: str | None
    port_id: str | None
    connection_limit: int | None
    timeout_client_data: int | None
    timeout_member_connect: int | None
    timeout_member_data: int | None
    timeout_tcp_inspect: int | None
    health_monitor: bool
    monitor_delay: int
    monitor_timeout: int
    monitor_max_retries: int
    monitor_max_retries_down: int
    x_forwarded_for: bool
    flavor_id: str | None
    availability_zone: str | None
    node_selector: dict[str, str]
    load_balancer_id: str | None
    hostname: str | None
    tls_container_ref: str | None


@dataclass
class _Reader:
    annotations: dict[str, str]
    problems: list[AnnotationProblem] = field(default_factory=list)

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.annotations.get(key)
        if value is None:
            return default
        value = value.strip()
        if not value:
            self.problems.append(AnnotationProblem(key, "must not be empty"))
            return default
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.annotations.get(key)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in ("true", "yes", "1"):
            return True
        if lowered in ("false", "no", "0"):
            return False
        self.problems.append(AnnotationProblem(key, f"{value!r} is not a boolean (use true or false)"))
        return default

    def integer(self, key: str, default: int | None, *, minimum: int, maximum: int = 2**31 - 1) -> int | None:
        value = self.annotations.get(key)
        if value is None:
            return default
        try:
            number = int(value.strip())
        except ValueError:
            self.problems.append(AnnotationProblem(key, f"{value!r} is not an integer"))
            return default
        if not minimum <= number <= maximum:
            self.problems.append(AnnotationProblem(key, f"{number} is outside {minimum}..{maximum}"))
            return default
        return number

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.annotations.get(key)
        if value is None:
            return default
        if value.strip().upper() not in choices:
            self.problems.append(AnnotationProblem(key, f"{value!r} is not one of {', '.join(choices)}"))
            return default
        return value.strip().upper()


def parse_selector(text: str) -> dict[str, str]:
    """OCCM's ``k=v,k2=v2`` node selector (a bare ``k`` means the label must exist with an empty value)."""
    selector: dict[str, str] = {}
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        key, _, value = part.partition("=")
        if not key.strip():
            raise ValueError(f"{part!r} has no label key")
        selector[key.strip()] = value.strip()
    return selector


def parse(annotations: dict[str, str], config: LBConfig) -> tuple[LBOptions, list[AnnotationProblem]]:
    """Typed options with the cluster defaults applied, and every problem found (empty when all is well)."""
    r = _Reader(annotations)
    for key in UNSUPPORTED:
        if key in annotations:
            r.problems.append(AnnotationProblem(key, "is not supported by stackway"))
    proxy = annotations.get(PROXY_PROTOCOL)
    proxy_protocol: str | None = None
    if proxy is not None:
        lowered = proxy.strip().lower()
        if lowered in ("true", "v1"):
            proxy_protocol = "PROXY"
        elif lowered == "v2":
            proxy_protocol = "PROXYV2"
        elif lowered != "false":
            r.problems.append(AnnotationProblem(PROXY_PROTOCOL, f"{proxy!r} is not one of true, v1, v2, false"))
    node_selector: dict[str, str] = {}
    selector_text = r.text(NODE_SELECTOR, config.node_selector)
    if selector_text:
        try:
            node_selector = parse_selector(selector_text)
        except ValueError as err:
            r.problems.append(AnnotationProblem(NODE_SELECTOR, str(err)))
    options = LBOptions(
        internal=r.flag(INTERNAL, config.internal_lb),
        floating_network_id=r.text(FLOATING_NETWORK_ID, config.floating_network_id),
        floating_subnet_id=r.text(FLOATING_SUBNET_ID, config.floating_subnet_id),
        floating_subnet=r.text(FLOATING_SUBNET),
        keep_floating_ip=r.flag(KEEP_FLOATINGIP, False),
        lb_method=r.choice(LB_METHOD, config.lb_method, LB_METHODS),
        proxy_protocol=proxy_protocol,
        subnet_id=r.text(SUBNET_ID, config.subnet_id),
        network_id=r.text(NETWORK_ID, config.network_id),
        member_subnet_id=r.text(MEMBER_SUBNET_ID, config.member_subnet_id),
        port_id=r.text(PORT_ID),
        connection_limit=r.integer(CONNECTION_LIMIT, None, minimum=-1),
        timeout_client_data=r.integer(TIMEOUT_CLIENT_DATA, None, minimum=0, maximum=31536000000),
        timeout_member_connect=r.integer(TIMEOUT_MEMBER_CONNECT, None, minimum=0, maximum=31536000000),
        timeout_member_data=r.integer(TIMEOUT_MEMBER_DATA, None, minimum=0, maximum=31536000000),
        timeout_tcp_inspect=r.integer(TIMEOUT_TCP_INSPECT, None, minimum=0, maximum=31536000000),
        health_monitor=r.flag(ENABLE_HEALTH_MONITOR, config.create_monitor),
        monitor_delay=r.integer(HM_DELAY, config.monitor_delay, minimum=1) or config.monitor_delay,
        monitor_timeout=r.integer(HM_TIMEOUT, config.monitor_timeout, minimum=1) or config.monitor_timeout,
        monitor_max_retries=r.integer(HM_MAX_RETRIES, config.monitor_max_retries, minimum=1, maximum=10)
        or config.monitor_max_retries,
        monitor_max_retries_down=r.integer(HM_MAX_RETRIES_DOWN, config.monitor_max_retries_down, minimum=1, maximum=10)
        or config.monitor_max_retries_down,
        x_forwarded_for=r.flag(X_FORWARDED_FOR, False),
        flavor_id=r.text(FLAVOR_ID, config.flavor_id),
        availability_zone=r.text(AVAILABILITY_ZONE, config.availability_zone),
        node_selector=node_selector,
        load_balancer_id=r.text(LOAD_BALANCER_ID),
        hostname=r.text(HOSTNAME),
        tls_container_ref=r.text(DEFAULT_TLS_CONTAINER_REF),
    )
    if options.monitor_timeout > options.monitor_delay:
        r.problems.append(
            AnnotationProblem(
                HM_TIMEOUT, f"{options.monitor_timeout} must not exceed the delay {options.monitor_delay}"
            )
        )
    if options.proxy_protocol and options.x_forwarded_for:
        r.problems.append(AnnotationProblem(PROXY_PROTOCOL, f"cannot be combined with {X_FORWARDED_FOR}"))
    if options.internal and options.load_balancer_id is None and annotations.get(FLOATING_NETWORK_ID):
        r.problems.append(AnnotationProblem(FLOATING_NETWORK_ID, f"an internal load balancer ({INTERNAL}) has none"))
    return options, r.problems


def valid_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True
