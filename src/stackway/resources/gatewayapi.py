"""Gateway API v1 kinds (gateway.networking.k8s.io), with the spec's defaults applied.

Defaults matter for correctness: the API server's CRD defaulting fills them in a cluster, and standalone
manifests must mean the same thing (e.g. a rule without matches matches PathPrefix "/").
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from stackway.resources.base import LabelSelector, Model, ObjectMeta

GROUP = "gateway.networking.k8s.io"

_DURATION = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")
_UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}


def duration_ms(value: str) -> int:
    """A Gateway API duration (GEP-2257: "1h2m3s", "500ms") in milliseconds."""
    if not _DURATION.match(value):
        raise ValueError(f"{value!r} is not a Gateway API duration such as 500ms, 10s or 1m30s")
    return sum(int(n) * _UNIT_MS[unit] for n, unit in re.findall(r"([0-9]+)(h|ms|m|s)", value))


def _check_duration(value: str) -> str:
    duration_ms(value)
    return value


Duration = Annotated[str, AfterValidator(_check_duration)]


class GatewayClassSpec(Model):
    controller_name: str
    description: str | None = None


class GatewayClass(Model):
    metadata: ObjectMeta
    spec: GatewayClassSpec


class SecretObjectReference(Model):
    group: str = ""
    kind: str = "Secret"
    name: str
    namespace: str | None = None


class GatewayTLSConfig(Model):
    mode: Literal["Terminate", "Passthrough"] = "Terminate"
    certificate_refs: tuple[SecretObjectReference, ...] = ()
    options: dict[str, str] = Field(default_factory=dict)


class RouteNamespaces(Model):
    from_: Literal["All", "Same", "Selector", "None"] = Field(default="Same", alias="from")
    selector: LabelSelector | None = None


class RouteGroupKind(Model):
    group: str = GROUP
    kind: str


class AllowedRoutes(Model):
    namespaces: RouteNamespaces = RouteNamespaces()
    kinds: tuple[RouteGroupKind, ...] = ()


class Listener(Model):
    name: str
    hostname: str | None = None
    port: int = Field(ge=1, le=65535)
    protocol: str
    tls: GatewayTLSConfig | None = None
    allowed_routes: AllowedRoutes = AllowedRoutes()


class GatewayAddress(Model):
    type: str = "IPAddress"
    value: str


class ObjectReference(Model):
    group: str = ""
    kind: str
    name: str
    namespace: str | None = None


class FrontendTLSValidation(Model):
    ca_certificate_refs: tuple[ObjectReference, ...] = Field(min_length=1)
    mode: Literal["AllowValidOnly", "AllowInsecureFallback"] = "AllowValidOnly"


class TLSConfig(Model):
    validation: FrontendTLSValidation | None = None


class TLSPortConfig(Model):
    port: int = Field(ge=1, le=65535)
    tls: TLSConfig


class FrontendTLSConfig(Model):
    default: TLSConfig = TLSConfig()
    per_port: tuple[TLSPortConfig, ...] = ()


class GatewayBackendTLS(Model):
    """spec.tls.backend: the client certificate the Gateway presents to backends it reaches over TLS."""

    client_certificate_ref: SecretObjectReference | None = None


class GatewayTLSConfigs(Model):
    frontend: FrontendTLSConfig | None = None
    backend: GatewayBackendTLS | None = None


class GatewaySpec(Model):
    gateway_class_name: str
    listeners: tuple[Listener, ...] = Field(min_length=1)
    addresses: tuple[GatewayAddress, ...] = ()
    tls: GatewayTLSConfigs | None = None


class Gateway(Model):
    metadata: ObjectMeta
    spec: GatewaySpec


class ParentReference(Model):
    group: str = GROUP
    kind: str = "Gateway"
    namespace: str | None = None
    name: str
    section_name: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)


class HTTPPathMatch(Model):
    type: Literal["Exact", "PathPrefix", "RegularExpression"] = "PathPrefix"
    value: str = "/"


class HTTPHeaderMatch(Model):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: str
    value: str


class HTTPQueryParamMatch(Model):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: str
    value: str


class HTTPRouteMatch(Model):
    path: HTTPPathMatch = HTTPPathMatch()
    headers: tuple[HTTPHeaderMatch, ...] = ()
    query_params: tuple[HTTPQueryParamMatch, ...] = ()
    method: str | None = None


class HTTPHeader(Model):
    name: str
    value: str


class HTTPHeaderFilter(Model):
    set: tuple[HTTPHeader, ...] = ()
    add: tuple[HTTPHeader, ...] = ()
    remove: tuple[str, ...] = ()


class HTTPPathModifier(Model):
    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    replace_full_path: str | None = None
    replace_prefix_match: str | None = None


class HTTPRequestRedirectFilter(Model):
    scheme: Literal["http", "https"] | None = None
    hostname: str | None = None
    path: HTTPPathModifier | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    status_code: Literal[301, 302, 303, 307, 308] = 302


class HTTPURLRewriteFilter(Model):
    hostname: str | None = None
    path: HTTPPathModifier | None = None


class Fraction(Model):
    numerator: int = Field(ge=0)
    denominator: int = Field(default=100, ge=1)


class HTTPRequestMirrorFilter(Model):
    backend_ref: BackendObjectReference
    percent: int | None = Field(default=None, ge=0, le=100)
    fraction: Fraction | None = None


class HTTPCORSFilter(Model):
    allow_origins: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    allow_credentials: bool | None = None
    max_age: int = Field(default=5, ge=1)


class HTTPRouteFilter(Model):
    type: str
    request_header_modifier: HTTPHeaderFilter | None = None
    response_header_modifier: HTTPHeaderFilter | None = None
    request_redirect: HTTPRequestRedirectFilter | None = None
    url_rewrite: HTTPURLRewriteFilter | None = Field(default=None, alias="urlRewrite")
    request_mirror: HTTPRequestMirrorFilter | None = None
    cors: HTTPCORSFilter | None = None


class HTTPRouteTimeouts(Model):
    request: Duration | None = None
    backend_request: Duration | None = None


class HTTPRouteRetry(Model):
    codes: tuple[int, ...] = ()
    attempts: int | None = Field(default=None, ge=0)
    backoff: Duration | None = None


class BackendObjectReference(Model):
    group: str = ""
    kind: str = "Service"
    name: str
    namespace: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)


class HTTPBackendRef(BackendObjectReference):
    weight: int = Field(default=1, ge=0, le=1_000_000)
    filters: tuple[HTTPRouteFilter, ...] = ()


class CookieConfig(Model):
    lifetime_type: Literal["Permanent", "Session"] = "Session"


class SessionPersistence(Model):
    session_name: str | None = None
    absolute_timeout: Duration | None = None
    idle_timeout: Duration | None = None
    type: Literal["Cookie", "Header"] = "Cookie"
    cookie_config: CookieConfig | None = None


class HTTPRouteRule(Model):
    name: str | None = None
    matches: tuple[HTTPRouteMatch, ...] = (HTTPRouteMatch(),)
    filters: tuple[HTTPRouteFilter, ...] = ()
    backend_refs: tuple[HTTPBackendRef, ...] = ()
    timeouts: HTTPRouteTimeouts | None = None
    retry: HTTPRouteRetry | None = None
    session_persistence: SessionPersistence | None = None


class HTTPRouteSpec(Model):
    parent_refs: tuple[ParentReference, ...] = ()
    hostnames: tuple[str, ...] = ()
    rules: tuple[HTTPRouteRule, ...] = (HTTPRouteRule(),)


class HTTPRoute(Model):
    metadata: ObjectMeta
    spec: HTTPRouteSpec = HTTPRouteSpec()


class ReferenceGrantFrom(Model):
    group: str
    kind: str
    namespace: str


class ReferenceGrantTo(Model):
    group: str
    kind: str
    name: str | None = None


class ReferenceGrantSpec(Model):
    from_: tuple[ReferenceGrantFrom, ...] = Field(alias="from", min_length=1)
    to: tuple[ReferenceGrantTo, ...] = Field(min_length=1)


class ReferenceGrant(Model):
    metadata: ObjectMeta
    spec: ReferenceGrantSpec


class GRPCMethodMatch(Model):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    service: str | None = None
    method: str | None = None


class GRPCRouteMatch(Model):
    method: GRPCMethodMatch | None = None
    headers: tuple[HTTPHeaderMatch, ...] = ()


class GRPCRouteRule(Model):
    name: str | None = None
    matches: tuple[GRPCRouteMatch, ...] = (GRPCRouteMatch(),)
    filters: tuple[HTTPRouteFilter, ...] = ()
    backend_refs: tuple[HTTPBackendRef, ...] = ()


class GRPCRouteSpec(Model):
    parent_refs: tuple[ParentReference, ...] = ()
    hostnames: tuple[str, ...] = ()
    rules: tuple[GRPCRouteRule, ...] = (GRPCRouteRule(),)


class GRPCRoute(Model):
    metadata: ObjectMeta
    spec: GRPCRouteSpec = GRPCRouteSpec()


class TLSRouteRule(Model):
    name: str | None = None
    backend_refs: tuple[HTTPBackendRef, ...] = ()


class TLSRouteSpec(Model):
    parent_refs: tuple[ParentReference, ...] = ()
    hostnames: tuple[str, ...] = ()
    rules: tuple[TLSRouteRule, ...] = Field(default=(), min_length=1)


class TLSRoute(Model):
    metadata: ObjectMeta
    spec: TLSRouteSpec


class LocalPolicyTargetReferenceWithSectionName(Model):
    group: str = ""
    kind: str
    name: str
    section_name: str | None = None


class LocalObjectReference(Model):
    group: str = ""
    kind: str
    name: str


class SubjectAltName(Model):
    type: Literal["Hostname", "URI"]
    hostname: str | None = None
    uri: str | None = None


class BackendTLSPolicyValidation(Model):
    ca_certificate_refs: tuple[LocalObjectReference, ...] = ()
    well_known_ca_certificates: Literal["System"] | None = Field(default=None, alias="wellKnownCACertificates")
    hostname: str
    subject_alt_names: tuple[SubjectAltName, ...] = ()


class BackendTLSPolicySpec(Model):
    target_refs: tuple[LocalPolicyTargetReferenceWithSectionName, ...] = Field(min_length=1)
    validation: BackendTLSPolicyValidation


class BackendTLSPolicy(Model):
    metadata: ObjectMeta
    spec: BackendTLSPolicySpec
