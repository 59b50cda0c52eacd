"""backendRefs → clusters: Service port → EndpointSlice port by name → ready endpoints."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from stackway.ir import model as ir
from stackway.resources.core import Service, ServicePort
from stackway.resources.gatewayapi import GROUP, BackendObjectReference
from stackway.translate import conditions as c
from stackway.translate.context import Context
from stackway.translate.gatewayapi.backendtls import BackendTLS
from stackway.translate.gatewayapi.gateways import GatewayView
from stackway.translate.refs import granted

H2C_APP_PROTOCOLS = frozenset({"kubernetes.io/h2c", "h2c"})


@dataclass(frozen=True)
class BackendFailure:
    reason: str
    message: str


def cluster_name(namespace: str, service: str, port: int) -> str:
    """Identity-derived, so the same Service port is one cluster however many routes use it."""
    return f"service/{namespace}/{service}/{port}"


def resolve_backend(
    ctx: Context, route_kind: str, route_ns: str, ref: BackendObjectReference, *, force_h2c: bool = False
) -> ir.Cluster | BackendFailure:
    """A Service port as a cluster. `force_h2c` (GRPCRoute) speaks HTTP/2 whatever the port's appProtocol."""
    if ref.group != "" or ref.kind != "Service":
        return BackendFailure(c.R_INVALID_KIND, f"backendRef kind {ref.group or 'core'}/{ref.kind} is not supported")
    ns = ref.namespace or route_ns
    if not granted(
        ctx.resources.reference_grants,
        from_group=GROUP,
        from_kind=route_kind,
        from_namespace=route_ns,
        to_group="",
        to_kind="Service",
        to_namespace=ns,
        to_name=ref.name,
    ):
        return BackendFailure(
            c.R_REF_NOT_PERMITTED, f"Service {ns}/{ref.name} is in another namespace and no ReferenceGrant allows it"
        )
    svc = ctx.resources.services.get((ns, ref.name))
    if svc is None:
        return BackendFailure(c.R_BACKEND_NOT_FOUND, f"Service {ns}/{ref.name} not found")
    if ref.port is None:
        return BackendFailure(c.R_BACKEND_NOT_FOUND, f"backendRef to Service {ns}/{ref.name} needs a port")
    port = svc.port(ref.port)
    if port is None:
        return BackendFailure(c.R_BACKEND_NOT_FOUND, f"Service {ns}/{ref.name} has no port {ref.port}")
    declared_h2c = port.app_protocol in H2C_APP_PROTOCOLS
    name = cluster_name(ns, ref.name, ref.port)
    policy = backend_tls(ctx).for_port(ns, ref.name, port)
    return ir.Cluster(
        # A Service port used as HTTP/1 by one route and as gRPC by another needs two clusters.
        name=f"{name}/h2c" if force_h2c and not declared_h2c else name,
        endpoints=_usable_endpoints(ctx, ns, svc, port),
        protocol="h2c" if declared_h2c or force_h2c else "http1",
        service=(ns, ref.name, ref.port),
        tls=policy.tls if policy is not None else None,
    )


def _usable_endpoints(ctx: Context, ns: str, svc: Service, port: ServicePort) -> tuple[ir.Endpoint, ...]:
    """The port's ready endpoints, or none when a BackendTLSPolicy targets it but its CA does not resolve:
    such a backend answers 503 rather than ever being reached over unverified TLS or plaintext."""
    policy = backend_tls(ctx).for_port(ns, svc.metadata.name, port)
    if policy is not None and policy.tls is None:
        return ()
    return _endpoints(ctx, ns, svc, port)


def backend_tls(ctx: Context) -> BackendTLS:
    found = ctx.memo.get("backend_tls")
    if found is None:
        found = ctx.memo["backend_tls"] = BackendTLS(ctx)
    assert isinstance(found, BackendTLS)
    return found


def refresh_endpoints(ctx: Context, cluster: ir.Cluster) -> ir.Cluster:
    """The same cluster with endpoints re-read from the current EndpointSlices (an EDS-only change)."""
    if cluster.service is None:
        return cluster
    ns, name, number = cluster.service
    svc = ctx.resources.services.get((ns, name))
    port = svc.port(number) if svc is not None else None
    if svc is None or port is None:
        return dataclasses.replace(cluster, endpoints=())
    return dataclasses.replace(cluster, endpoints=_usable_endpoints(ctx, ns, svc, port))


def _endpoints(ctx: Context, ns: str, svc: Service, port: ServicePort) -> tuple[ir.Endpoint, ...]:
    """Ready endpoints on the EndpointSlice port whose name equals the Service port's name."""
    found: set[ir.Endpoint] = set()
    for eps in ctx.resources.endpoint_slices.get((ns, svc.metadata.name), ()):
        if eps.address_type == "FQDN":
            continue
        numbers = [p.port for p in eps.ports if p.name == port.name and p.port is not None]
        if not numbers:
            continue
        for endpoint in eps.endpoints:
            if endpoint.is_ready:
                for address in endpoint.addresses:
                    found.update(ir.Endpoint(address, n) for n in numbers)
    return tuple(sorted(found, key=lambda e: (e.address, e.port)))


def presenting_client_certificate(route: ir.Route, gateway: GatewayView, clusters: dict[str, ir.Cluster]) -> ir.Route:
    """`route` as it serves `gateway`: when the Gateway has a backend client certificate (spec.tls.backend),
    its TLS backends (those a BackendTLSPolicy governs) are reached through copies of their clusters that
    present that certificate.

    A Service port is one cluster however many routes use it, but the certificate belongs to the Gateway and
    a cluster presents one; so each such Gateway gets its own copy, named after cluster and Gateway so that
    it is stable. The copy goes into `clusters` (every cluster resolved under the same inputs): it depends
    on nothing but the Gateway and the original cluster, so it stays valid for as long as they do, which is
    as long as a translation may reuse the previous one's routes. Other routes are returned as they are.
    """
    certificate = gateway.backend_client_certificate
    action = route.action
    if certificate is None or not isinstance(action, ir.Forward):
        return route

    def presenting(name: str) -> str:
        cluster = clusters.get(name)
        if cluster is None or cluster.tls is None:
            return name
        copy = f"{name}/client-certificate/{gateway.key.namespace}/{gateway.key.name}"
        if copy not in clusters:
            tls = dataclasses.replace(cluster.tls, client_certificate=certificate)
            clusters[copy] = dataclasses.replace(cluster, name=copy, tls=tls)
        return copy

    forward = dataclasses.replace(
        action,
        clusters=tuple(dataclasses.replace(wc, cluster=presenting(wc.cluster)) for wc in action.clusters),
        mirrors=tuple(dataclasses.replace(m, cluster=presenting(m.cluster)) for m in action.mirrors),
    )
    return route if forward == action else dataclasses.replace(route, action=forward)
