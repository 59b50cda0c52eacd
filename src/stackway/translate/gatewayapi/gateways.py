"""GatewayClasses and Gateways: which are ours, which listeners are valid, and which sockets they need."""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from stackway.ir import model as ir
from stackway.resources.gatewayapi import GROUP, Gateway, Listener, RouteGroupKind, SecretObjectReference
from stackway.resources.raw import ObjectKey
from stackway.translate import conditions as c
from stackway.translate.certs import ca_bundle, certificate_problem
from stackway.translate.context import Context
from stackway.translate.gatewayapi.tlsoptions import OptionProblem, tls_parameters
from stackway.translate.refs import granted

SUPPORTED_PROTOCOLS = ("HTTP", "HTTPS", "TLS")
R_INVALID_CA_REF = "InvalidCACertificateRef"
R_INVALID_CA_KIND = "InvalidCACertificateKind"
R_NO_VALID_CA = "NoValidCACertificate"
#: Gateway condition (GEP-91): frontend validation is configured to let unverified clients in.
INSECURE_FRONTEND_VALIDATION = "InsecureFrontendValidationMode"
R_CONFIGURATION_CHANGED = "ConfigurationChanged"
R_INVALID_CLIENT_CERTIFICATE_REF = "InvalidClientCertificateRef"
ROUTE_KINDS_BY_PROTOCOL: dict[str, tuple[str, ...]] = {
    "HTTP": ("HTTPRoute", "GRPCRoute"),
    "HTTPS": ("HTTPRoute", "GRPCRoute"),
    "TLS": ("TLSRoute",),
}


def family(protocol: str) -> str:
    """Listeners of one family can share a socket: HTTPS and TLS both pick a filter chain by SNI."""
    return "TLS" if protocol in ("HTTPS", "TLS") else protocol


@dataclass
class ListenerView:
    """A Gateway listener with everything later steps need, and the facts its status is made of."""

    gateway: GatewayView
    spec: Listener
    supported_kinds: list[RouteGroupKind] = field(default_factory=list)
    certificates: tuple[ir.Certificate, ...] = ()
    #: Frontend client-certificate validation: (CA PEM, optional) when the Gateway asks for it on this port.
    client_validation: tuple[str, bool] | None = None
    #: tls.options of a listener that terminates TLS (None: Envoy's defaults).
    tls_parameters: ir.TLSParameters | None = None
    accepted: tuple[bool, str, str] = (True, c.R_ACCEPTED, "Listener is accepted")
    resolved: tuple[bool, str, str] = (True, c.R_RESOLVED_REFS, "All references are resolved")
    conflicted: tuple[bool, str, str] = (False, c.R_NO_CONFLICTS, "No conflicts")
    attached_routes: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def serving(self) -> bool:
        """Only listeners that are accepted, resolved and conflict-free get programmed into Envoy."""
        return self.accepted[0] and self.resolved[0] and not self.conflicted[0]


@dataclass
class GatewayView:
    key: ObjectKey
    gateway: Gateway
    addresses: tuple[str, ...]
    address_problem: str | None = None
    listeners: list[ListenerView] = field(default_factory=list)
    #: spec.tls.backend: the client certificate for TLS backends, once its Secret resolved.
    backend_client_certificate: ir.Certificate | None = None
    #: Whether spec.tls.backend resolved (ok, reason, message); None when the Gateway has none.
    backend_tls_resolved: tuple[bool, str, str] | None = None

    @property
    def namespace(self) -> str:
        return self.key.namespace


def gateway_classes(ctx: Context) -> set[str]:
    """Names of the GatewayClasses this controller owns; writes their status."""
    ours: set[str] = set()
    for name, gwc in ctx.resources.gateway_classes.items():
        if gwc.spec.controller_name != ctx.options.controller_name:
            continue
        ours.add(name)
        key = ObjectKey(GROUP, "GatewayClass", "", name)
        gen = gwc.metadata.generation
        ctx.statuses[key] = {
            "conditions": [
                c.condition(
                    c.ACCEPTED, True, c.R_ACCEPTED, "GatewayClass is accepted by stackway", gen, ctx.options.now
                )
            ]
        }
    return ours


def gateways(ctx: Context, our_classes: set[str]) -> list[GatewayView]:
    views: list[GatewayView] = []
    ordered = sorted(
        ctx.resources.gateways.items(),
        key=lambda item: (item[1].metadata.creation_timestamp, item[0]),
    )
    for (ns, name), gw in ordered:
        cls = gw.spec.gateway_class_name
        if cls not in our_classes and not (ctx.options.accept_any_class and cls not in ctx.resources.gateway_classes):
            continue
        view = GatewayView(ObjectKey(GROUP, "Gateway", ns, name), gw, ())
        _resolve_addresses(ctx, view)
        _resolve_backend_client_certificate(ctx, view)
        for index, spec in enumerate(gw.spec.listeners):
            lv = ListenerView(view, spec)
            _validate_listener(ctx, lv, index)
            view.listeners.append(lv)
        _detect_conflicts_within(ctx, view)
        views.append(view)
    _detect_socket_conflicts(ctx, views)
    return views


def _resolve_addresses(ctx: Context, view: GatewayView) -> None:
    addrs: list[str] = []
    for index, addr in enumerate(view.gateway.spec.addresses):
        fld = f"spec.addresses[{index}]"
        if addr.type != "IPAddress":
            view.address_problem = f"{fld}.type {addr.type!r} is not supported; use IPAddress"
        else:
            try:
                addrs.append(str(ipaddress.ip_address(addr.value)))
            except ValueError:
                view.address_problem = f"{fld}.value {addr.value!r} is not an IP address"
        if view.address_problem:
            ctx.problem(view.key, fld, view.address_problem)
            break
    view.addresses = tuple(addrs) or (ctx.options.default_address,)


def _secret_failure(ctx: Context, gateway_ns: str, ref: SecretObjectReference, bad_ref: str) -> tuple[str, str] | None:
    """Why a Gateway may not use the TLS Secret `ref` ((reason, message); `bad_ref` is the reason for a
    reference of the wrong kind or a missing or unusable Secret), or None when it may."""
    ns = ref.namespace or gateway_ns
    if ref.group != "" or ref.kind != "Secret":
        return bad_ref, f"{ref.group}/{ref.kind} is not a supported certificate kind"
    if not granted(
        ctx.resources.reference_grants,
        from_group=GROUP,
        from_kind="Gateway",
        from_namespace=gateway_ns,
        to_group="",
        to_kind="Secret",
        to_namespace=ns,
        to_name=ref.name,
    ):
        return c.R_REF_NOT_PERMITTED, f"Secret {ns}/{ref.name} is in another namespace and no ReferenceGrant allows it"
    secret = ctx.resources.secrets.get((ns, ref.name))
    why = "does not exist" if secret is None else certificate_problem(secret)
    return (bad_ref, f"Secret {ns}/{ref.name}: {why}") if why is not None else None


def _resolve_backend_client_certificate(ctx: Context, view: GatewayView) -> None:
    """spec.tls.backend.clientCertificateRef: the certificate Envoy presents to TLS backends (those a
    BackendTLSPolicy governs) for this Gateway's routes. A bad reference leaves the Gateway Accepted and its
    backends served without a client certificate, and says why in the Gateway's ResolvedRefs condition."""
    backend = view.gateway.spec.tls.backend if view.gateway.spec.tls else None
    if backend is None or backend.client_certificate_ref is None:
        return
    ref = backend.client_certificate_ref
    failure = _secret_failure(ctx, view.namespace, ref, R_INVALID_CLIENT_CERTIFICATE_REF)
    if failure is not None:
        view.backend_tls_resolved = (False, *failure)
        ctx.problem(view.key, "spec.tls.backend.clientCertificateRef", failure[1])
        return
    ns = ref.namespace or view.namespace
    secret = ctx.resources.secrets[(ns, ref.name)]
    crt, key = secret.value("tls.crt"), secret.value("tls.key")
    assert crt is not None
    assert key is not None
    view.backend_client_certificate = ir.Certificate(f"{ns}/{ref.name}", crt.decode(), key.decode())
    view.backend_tls_resolved = (True, c.R_RESOLVED_REFS, "The backend client certificate is resolved")


def _validate_listener(ctx: Context, lv: ListenerView, index: int) -> None:
    spec = lv.spec
    fld = f"spec.listeners[{index}]"
    if spec.protocol not in SUPPORTED_PROTOCOLS:
        lv.accepted = (False, c.R_UNSUPPORTED_PROTOCOL, f"Protocol {spec.protocol} is not supported")
        ctx.problem(lv.gateway.key, f"{fld}.protocol", f"{spec.protocol!r} is not supported (HTTP, HTTPS, TLS)")
        return
    _resolve_route_kinds(ctx, lv, fld)
    if spec.protocol == "HTTPS":
        _resolve_certificates(ctx, lv, fld)
        _resolve_client_validation(ctx, lv)
    elif spec.protocol == "TLS":
        if lv.spec.tls is None:
            lv.accepted = (False, c.R_UNSUPPORTED_PROTOCOL, "TLS listener needs tls.mode")
            ctx.problem(lv.gateway.key, f"{fld}.tls", lv.accepted[2])
        elif lv.spec.tls.mode == "Terminate":
            _resolve_certificates(ctx, lv, fld)
    if spec.tls is not None and spec.tls.options and lv.accepted[0]:
        _resolve_tls_options(ctx, lv, fld)


def _resolve_tls_options(ctx: Context, lv: ListenerView, fld: str) -> None:
    """tls.options: an option that is unknown, has an invalid value or cannot apply (no TLS is terminated
    here) leaves the listener not Accepted (UnsupportedValue), naming the option; the Gateway's other
    listeners are not affected. Serving the listener without an option asked for, a minimum TLS version
    say, would quietly weaken what the user configured."""
    assert lv.spec.tls is not None
    terminates = lv.spec.protocol == "HTTPS" or lv.spec.tls.mode == "Terminate"
    parsed = tls_parameters(lv.spec.tls.options)
    if not terminates and not isinstance(parsed, OptionProblem):
        key = sorted(lv.spec.tls.options)[0]
        parsed = OptionProblem(key, f"tls.options: {key} needs a listener that terminates TLS")
    if isinstance(parsed, OptionProblem):
        lv.accepted = (False, c.R_UNSUPPORTED_VALUE, parsed.message)
        ctx.problem(lv.gateway.key, f"{fld}.tls.options[{parsed.key}]", parsed.message)
        return
    lv.tls_parameters = parsed


def _resolve_route_kinds(ctx: Context, lv: ListenerView, fld: str) -> None:
    allowed = ROUTE_KINDS_BY_PROTOCOL[lv.spec.protocol]
    wanted = lv.spec.allowed_routes.kinds
    if not wanted:
        lv.supported_kinds = [RouteGroupKind(group=GROUP, kind=kind) for kind in allowed]
        return
    bad = [k for k in wanted if not (k.group == GROUP and k.kind in allowed)]
    lv.supported_kinds = [k for k in wanted if k not in bad]
    if bad:
        names = ", ".join(f"{k.group}/{k.kind}" for k in bad)
        lv.resolved = (False, c.R_INVALID_ROUTE_KINDS, f"Route kinds not supported on {lv.spec.protocol}: {names}")
        ctx.problem(lv.gateway.key, f"{fld}.allowedRoutes.kinds", lv.resolved[2])


def _resolve_certificates(ctx: Context, lv: ListenerView, fld: str) -> None:
    tls = lv.spec.tls
    if tls is None or not tls.certificate_refs:
        lv.resolved = (False, c.R_INVALID_CERTIFICATE_REF, "HTTPS listener needs tls.certificateRefs")
        ctx.problem(lv.gateway.key, f"{fld}.tls.certificateRefs", lv.resolved[2])
        return
    if tls.mode != "Terminate":
        lv.accepted = (False, c.R_UNSUPPORTED_PROTOCOL, "HTTPS listeners terminate TLS; for Passthrough use TLS")
        ctx.problem(lv.gateway.key, f"{fld}.tls.mode", lv.accepted[2])
        return
    certs: list[ir.Certificate] = []
    for index, ref in enumerate(tls.certificate_refs):
        rfld = f"{fld}.tls.certificateRefs[{index}]"
        ns = ref.namespace or lv.gateway.namespace
        failure = _secret_failure(ctx, lv.gateway.namespace, ref, c.R_INVALID_CERTIFICATE_REF)
        if failure is None:
            secret = ctx.resources.secrets[(ns, ref.name)]
            crt, key = secret.value("tls.crt"), secret.value("tls.key")
            assert crt is not None
            assert key is not None
            certs.append(ir.Certificate(f"{ns}/{ref.name}", crt.decode(), key.decode()))
        else:
            lv.resolved = (False, *failure)
            ctx.problem(lv.gateway.key, rfld, failure[1])
    lv.certificates = tuple(certs)


def _resolve_client_validation(ctx: Context, lv: ListenerView) -> None:
    """spec.tls.frontend: the CA that clients of this listener's port must present certificates from.

    A listener whose CA does not resolve is not programmed: serving it without the validation the user asked
    for would silently drop an access control. ResolvedRefs says why (the first bad reference: a kind other
    than ConfigMap or Secret, another namespace without a ReferenceGrant, which is checked before the object
    is looked up so that a missing grant does not reveal whether it exists, or a missing or unusable CA);
    with no usable CA at all the listener is also not Accepted (NoValidCACertificate).
    """
    frontend = lv.gateway.gateway.spec.tls.frontend if lv.gateway.gateway.spec.tls else None
    if frontend is None:
        return
    per_port = next((p for p in frontend.per_port if p.port == lv.spec.port), None)
    config, fld = (
        (per_port.tls, f"spec.tls.frontend.perPort[{frontend.per_port.index(per_port)}].tls.validation")
        if per_port is not None
        else (frontend.default, "spec.tls.frontend.default.validation")
    )
    if config.validation is None:
        return
    pems: list[str] = []
    for index, ref in enumerate(config.validation.ca_certificate_refs):
        ns = ref.namespace or lv.gateway.namespace
        failure: tuple[str, str] | None = None
        if ref.group != "" or ref.kind not in ("ConfigMap", "Secret"):
            failure = (R_INVALID_CA_KIND, f"{ref.group or 'core'}/{ref.kind} is not a ConfigMap or Secret")
        elif ns != lv.gateway.namespace and not granted(
            ctx.resources.reference_grants,
            from_group=GROUP,
            from_kind="Gateway",
            from_namespace=lv.gateway.namespace,
            to_group=ref.group,
            to_kind=ref.kind,
            to_namespace=ns,
            to_name=ref.name,
        ):
            failure = (
                c.R_REF_NOT_PERMITTED,
                f"{ref.kind} {ns}/{ref.name} is in another namespace and no ReferenceGrant allows it",
            )
        else:
            pem, why = ca_bundle(ctx.resources, ns, ref.group, ref.kind, ref.name)
            if why is None:
                pems.append(pem)
            else:
                failure = (R_INVALID_CA_REF, why)
        if failure is not None:
            ctx.problem(lv.gateway.key, f"{fld}.caCertificateRefs[{index}]", failure[1])
            if lv.resolved[0]:
                lv.resolved = (False, *failure)
    if not pems:
        lv.accepted = (False, R_NO_VALID_CA, "No caCertificateRefs entry is a usable CA certificate")
    if lv.resolved[0]:
        lv.client_validation = ("".join(pems), config.validation.mode == "AllowInsecureFallback")


def insecure_frontend_validation(gateway: Gateway) -> bool:
    """Whether any frontend validation of the Gateway lets clients without a valid certificate in."""
    frontend = gateway.spec.tls.frontend if gateway.spec.tls else None
    if frontend is None:
        return False
    configs = [frontend.default, *(p.tls for p in frontend.per_port)]
    return any(t.validation is not None and t.validation.mode == "AllowInsecureFallback" for t in configs)


def _detect_conflicts_within(ctx: Context, view: GatewayView) -> None:
    by_port: dict[int, list[ListenerView]] = defaultdict(list)
    for lv in view.listeners:
        if lv.accepted[0]:
            by_port[lv.spec.port].append(lv)
    for port, group in by_port.items():
        protocols = {lv.spec.protocol for lv in group}
        if len({family(p) for p in protocols}) > 1:
            for lv in group:
                lv.conflicted = (True, c.R_PROTOCOL_CONFLICT, f"Listeners on port {port} use different protocols")
            ctx.problem(view.key, "spec.listeners", f"port {port}: protocols {sorted(protocols)} conflict")
            continue
        seen: dict[str | None, list[ListenerView]] = defaultdict(list)
        for lv in group:
            seen[lv.spec.hostname].append(lv)
        for hostname, same in seen.items():
            if len(same) > 1:
                for lv in same:
                    lv.conflicted = (
                        True,
                        c.R_HOSTNAME_CONFLICT,
                        f"Listeners on port {port} share hostname {hostname or '(none)'}",
                    )
                ctx.problem(
                    view.key,
                    "spec.listeners",
                    f"port {port}: listeners {[lv.name for lv in same]} share hostname {hostname!r}",
                )


def _detect_socket_conflicts(ctx: Context, views: list[GatewayView]) -> None:
    """Gateways share sockets; the oldest Gateway decides a socket's protocol, later ones yield."""
    owner: dict[tuple[str, int], tuple[str, ObjectKey]] = {}
    for view in views:
        for lv in view.listeners:
            if not lv.serving:
                continue
            for address in view.addresses:
                sock = (address, lv.spec.port)
                first = owner.setdefault(sock, (family(lv.spec.protocol), view.key))
                if first[0] != family(lv.spec.protocol):
                    msg = (
                        f"{address}:{lv.spec.port} already serves {first[0]} for {first[1]}; "
                        f"cannot also serve {lv.spec.protocol}"
                    )
                    lv.accepted = (False, c.R_PORT_UNAVAILABLE, msg)
                    ctx.problem(view.key, f"listener {lv.name}", msg)


def gateway_status(ctx: Context, view: GatewayView) -> dict[str, Any]:
    gen, now = view.gateway.metadata.generation, ctx.options.now
    listeners: list[dict[str, Any]] = []
    for lv in view.listeners:
        listeners.append(
            {
                "name": lv.name,
                "supportedKinds": [{"group": k.group, "kind": k.kind} for k in lv.supported_kinds],
                "attachedRoutes": lv.attached_routes,
                "conditions": [
                    c.condition(c.ACCEPTED, lv.accepted[0], lv.accepted[1], lv.accepted[2], gen, now),
                    c.condition(c.RESOLVED_REFS, lv.resolved[0], lv.resolved[1], lv.resolved[2], gen, now),
                    c.condition(c.CONFLICTED, lv.conflicted[0], lv.conflicted[1], lv.conflicted[2], gen, now),
                    c.condition(
                        c.PROGRAMMED,
                        lv.serving,
                        c.R_PROGRAMMED if lv.serving else c.R_INVALID,
                        "Listener is programmed" if lv.serving else "Listener is not programmed",
                        gen,
                        now,
                    ),
                ],
            }
        )
    valid = [lv for lv in view.listeners if lv.serving]
    if view.address_problem:
        accepted = c.condition(c.ACCEPTED, False, c.R_UNSUPPORTED_ADDRESS, view.address_problem, gen, now)
        programmed = c.condition(c.PROGRAMMED, False, c.R_INVALID, view.address_problem, gen, now)
    else:
        all_ok = len(valid) == len(view.listeners)
        accepted = c.condition(
            c.ACCEPTED,
            True,
            c.R_ACCEPTED if all_ok else c.R_LISTENERS_NOT_VALID,
            "Gateway is accepted" if all_ok else "Some listeners are not valid",
            gen,
            now,
        )
        programmed = c.condition(
            c.PROGRAMMED,
            bool(valid),
            c.R_PROGRAMMED if valid else c.R_INVALID,
            "Gateway is programmed" if valid else "No listener is valid",
            gen,
            now,
        )
    conditions = [accepted, programmed]
    if view.backend_tls_resolved is not None:
        ok, reason, message = view.backend_tls_resolved
        conditions.append(c.condition(c.RESOLVED_REFS, ok, reason, message, gen, now))
    if insecure_frontend_validation(view.gateway):
        conditions.append(
            c.condition(
                INSECURE_FRONTEND_VALIDATION,
                True,
                R_CONFIGURATION_CHANGED,
                "Frontend TLS validation lets clients without a valid certificate in (AllowInsecureFallback)",
                gen,
                now,
            )
        )
    return {
        "addresses": [{"type": "IPAddress", "value": a} for a in view.addresses],
        "conditions": conditions,
        "listeners": listeners,
    }
