"""Ingress v1 → the same IR as the Gateway API, through a synthetic Gateway.

An Ingress has no listeners of its own: the controller's HTTP and HTTPS ports are implied. Modelling them
as a Gateway (one HTTP listener, one HTTPS listener per TLS host) lets Ingress share sockets, virtual
hosts, precedence and the xDS builder with Gateway API routes instead of growing a parallel path.
"""

from __future__ import annotations

from stackway.ir import model as ir
from stackway.resources.core import Service
from stackway.resources.gatewayapi import BackendObjectReference, Listener, RouteGroupKind
from stackway.resources.networking import LEGACY_CLASS_ANNOTATION, Ingress, IngressBackend
from stackway.resources.raw import ObjectKey
from stackway.translate.certs import certificate_problem
from stackway.translate.context import Context
from stackway.translate.gatewayapi.gateways import GatewayView, ListenerView
from stackway.translate.gatewayapi.routes import Placed, RouteTranslator, precedence

GROUP = "networking.k8s.io"
#: Ingress routes sort after Gateway API routes with equal matches (they are the older API).
AGE_OFFSET = 1_000_000
#: defaultBackend routes sort after every rule of every Ingress.
DEFAULT_ORDER = (9, 0, True, 0, 0)


def our_classes(ctx: Context) -> tuple[set[str], str | None]:
    """Names of IngressClasses that are ours, and the one marked default (if any)."""
    ours = {
        n for n, cls in ctx.resources.ingress_classes.items() if cls.spec.controller == ctx.options.ingress_controller
    }
    default = next((n for n in sorted(ours) if ctx.resources.ingress_classes[n].is_default), None)
    return ours, default


def is_ours(ingress: Ingress, ours: set[str], default: str | None) -> bool:
    name = ingress.spec.ingress_class_name or ingress.metadata.annotations.get(LEGACY_CLASS_ANNOTATION)
    return name in ours if name else default is not None


def translate_ingresses(ctx: Context, tr: RouteTranslator) -> list[GatewayView]:
    ours, default = our_classes(ctx)
    mine = sorted(
        ((k, i) for k, i in ctx.resources.ingresses.items() if is_ours(i, ours, default)),
        key=lambda item: (item[1].metadata.creation_timestamp, item[0]),
    )
    if not mine:
        return []
    # The synthetic Gateway has no manifest behind it (gateway=None) and never gets a status of its own.
    controller = ObjectKey(GROUP, "IngressController", "", "stackway")
    view = GatewayView(controller, None, (ctx.options.default_address,))  # type: ignore[arg-type]
    http = _listener(view, "ingress-http", ctx.options.ingress_http_port, "HTTP", None)
    view.listeners.append(http)
    https: dict[str, ListenerView] = {}
    for age, ((ns, name), ingress) in enumerate(mine, start=AGE_OFFSET):
        key = ObjectKey(GROUP, "Ingress", ns, name)
        _tls_listeners(ctx, view, key, ingress, https)
        _rules(ctx, tr, key, ingress, age, http, https)
        ctx.statuses[key] = {"loadBalancer": {"ingress": [{"ip": a} for a in view.addresses]}}
    return [view]


def _listener(view: GatewayView, name: str, port: int, protocol: str, hostname: str | None) -> ListenerView:
    spec = Listener(name=name, port=port, protocol=protocol, hostname=hostname)
    return ListenerView(view, spec, supported_kinds=[RouteGroupKind(group=GROUP, kind="Ingress")])


def _tls_listeners(
    ctx: Context, view: GatewayView, key: ObjectKey, ingress: Ingress, https: dict[str, ListenerView]
) -> None:
    for t_index, tls in enumerate(ingress.spec.tls):
        fld = f"spec.tls[{t_index}]"
        if not tls.secret_name:
            ctx.problem(key, f"{fld}.secretName", "TLS without a secretName is not served")
            continue
        secret = ctx.resources.secrets.get((key.namespace, tls.secret_name))
        why = "does not exist" if secret is None else certificate_problem(secret)
        if why is not None or secret is None:
            ctx.problem(key, f"{fld}.secretName", f"Secret {key.namespace}/{tls.secret_name}: {why}")
            continue
        crt, pem_key = secret.value("tls.crt"), secret.value("tls.key")
        assert crt is not None
        assert pem_key is not None
        cert = ir.Certificate(f"{key.namespace}/{tls.secret_name}", crt.decode(), pem_key.decode())
        for host in tls.hosts:
            if host in https:
                continue  # the oldest Ingress claiming a host's certificate keeps it
            lv = _listener(view, f"ingress-https-{host}", ctx.options.ingress_https_port, "HTTPS", host)
            lv.certificates = (cert,)
            https[host] = lv
            view.listeners.append(lv)


def _backend(ctx: Context, tr: RouteTranslator, key: ObjectKey, backend: IngressBackend, fld: str) -> ir.Action:
    if backend.service is None:
        ctx.problem(key, f"{fld}.resource", "resource backends are not supported; requests answer 500")
        return ir.DirectResponse(500)
    ref = backend.service
    port = ref.port.number
    if port is None:
        svc: Service | None = ctx.resources.services.get((key.namespace, ref.name))
        named = next((p for p in svc.spec.ports if p.name == ref.port.name), None) if svc else None
        if named is None:
            ctx.problem(
                key,
                f"{fld}.service.port.name",
                f"Service {key.namespace}/{ref.name} has no port named {ref.port.name!r}",
            )
            return ir.DirectResponse(503)
        port = named.port
    cluster = tr.resolve(key, BackendObjectReference(name=ref.name, port=port), f"{fld}.service")
    if cluster is None:
        return ir.DirectResponse(503)
    return ir.Forward((ir.WeightedCluster(cluster.name, 1),))


def _rules(
    ctx: Context,
    tr: RouteTranslator,
    key: ObjectKey,
    ingress: Ingress,
    age: int,
    http: ListenerView,
    https: dict[str, ListenerView],
) -> None:
    hosts: set[str] = set()
    for r_index, rule in enumerate(ingress.spec.rules):
        if rule.http is None:
            continue
        host = rule.host or "*"
        hosts.add(host)
        targets = [http, *([https[host]] if host in https else [])]
        for p_index, path in enumerate(rule.http.paths):
            fld = f"spec.rules[{r_index}].http.paths[{p_index}]"
            # ImplementationSpecific is treated as Prefix, as Contour and Envoy Gateway do.
            match_type: ir.PathMatchType = "Exact" if path.path_type == "Exact" else "PathPrefix"
            match = ir.Match(path=ir.PathMatch(match_type, path.path or "/"))
            route = ir.Route(
                name=f"ingress/{key.namespace}/{key.name}/rule/{r_index}/path/{p_index}",
                match=match,
                action=_backend(ctx, tr, key, path.backend, f"{fld}.backend"),
            )
            order = (*precedence(match.path, None, 0, 0), age, r_index, p_index)
            for lv in targets:
                tr.placed.append(Placed(lv, host, order, route))
    if ingress.spec.default_backend is not None:
        action = _backend(ctx, tr, key, ingress.spec.default_backend, "spec.defaultBackend")
        route = ir.Route(name=f"ingress/{key.namespace}/{key.name}/default", match=ir.Match(), action=action)
        # The default backend answers whatever no rule matched, including unmatched paths of known hosts.
        for host in sorted(hosts | {"*"}):
            for lv in [http, *([https[host]] if host in https else [])]:
                tr.placed.append(Placed(lv, host, (*DEFAULT_ORDER, age, 0, 0), route))
