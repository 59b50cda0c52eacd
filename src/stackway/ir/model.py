"""The intermediate representation between Kubernetes resources and Envoy configuration.

Why an IR at all: the translator answers "what does the user mean" (Gateway API semantics, precedence,
reference checks) and the xDS builder answers "how does Envoy express it". Keeping them apart lets each be
golden-tested alone and lets Ingress, GRPCRoute and future kinds feed the same builder.

Everything is frozen and made of tuples so that IRs compare by value, hash, and serialise deterministically.
Names here become xDS resource names: they are derived from identity (namespace/name/port), never from a
position in a list, so that reordering manifests never renames (and so never drains) anything in Envoy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PathMatchType = Literal["Exact", "PathPrefix", "RegularExpression"]
StringMatchType = Literal["Exact", "RegularExpression"]
UpstreamProtocol = Literal["http1", "h2c"]


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int


@dataclass(frozen=True)
class UpstreamTLS:
    """TLS to the backend (BackendTLSPolicy): SNI, the CAs to trust (PEM; empty = the system's), SANs."""

    sni: str
    ca_pem: str = ""
    subject_alt_names: tuple[tuple[str, str], ...] = ()  # (DNS|URI, value)
    #: The certificate Envoy presents when the backend asks for one (the Gateway's spec.tls.backend).
    client_certificate: Certificate | None = None


@dataclass(frozen=True)
class Cluster:
    """One Service port as an upstream. Endpoints travel separately (EDS) so they change without CDS."""

    name: str
    endpoints: tuple[Endpoint, ...] = ()
    protocol: UpstreamProtocol = "http1"
    #: The Service port behind the cluster (namespace, name, port), so endpoints can be refreshed alone.
    service: tuple[str, str, int] | None = None
    tls: UpstreamTLS | None = None


@dataclass(frozen=True)
class PathMatch:
    type: PathMatchType
    value: str


@dataclass(frozen=True)
class StringMatch:
    name: str
    value: str
    type: StringMatchType = "Exact"


@dataclass(frozen=True)
class Match:
    path: PathMatch = PathMatch("PathPrefix", "/")
    headers: tuple[StringMatch, ...] = ()
    query_params: tuple[StringMatch, ...] = ()
    method: str | None = None


@dataclass(frozen=True)
class HeaderModifier:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class WeightedCluster:
    cluster: str
    weight: int
    request_headers: HeaderModifier | None = None
    response_headers: HeaderModifier | None = None


@dataclass(frozen=True)
class Mirror:
    """Copy requests to `cluster` (fire and forget) for `per_million` out of every million requests."""

    cluster: str
    per_million: int = 1_000_000


@dataclass(frozen=True)
class Rewrite:
    """URL rewrite before forwarding. `prefix` is the matched PathPrefix that `prefix_replacement` replaces."""

    hostname: str | None = None
    full_path: str | None = None
    prefix: str | None = None
    prefix_replacement: str | None = None


@dataclass(frozen=True)
class Retry:
    attempts: int
    codes: tuple[int, ...] = ()
    backoff_ms: int | None = None


@dataclass(frozen=True)
class Forward:
    """Send to clusters by weight. All weights zero is expressed by the translator as a DirectResponse.

    Timeouts are in milliseconds; 0 disables a timeout, None keeps Envoy's default.
    """

    clusters: tuple[WeightedCluster, ...]
    mirrors: tuple[Mirror, ...] = ()
    rewrite: Rewrite | None = None
    timeout_ms: int | None = None
    per_try_timeout_ms: int | None = None
    retry: Retry | None = None


@dataclass(frozen=True)
class Redirect:
    status_code: int = 302
    scheme: str | None = None
    hostname: str | None = None
    port: int | None = None
    full_path: str | None = None
    prefix: str | None = None
    prefix_replacement: str | None = None


@dataclass(frozen=True)
class DirectResponse:
    status: int
    body: str = ""


Action = Forward | Redirect | DirectResponse


@dataclass(frozen=True)
class Cors:
    """A CORS policy; the gateway answers preflights itself. Origins may hold `*` wildcards."""

    allow_origins: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    allow_credentials: bool = False
    max_age_s: int = 5


@dataclass(frozen=True)
class Session:
    """Session persistence: the upstream host is remembered in a cookie (or header) Envoy sets and reads."""

    type: Literal["Cookie", "Header"]
    name: str
    ttl_s: int | None = None  # cookie lifetime; None: a session cookie


@dataclass(frozen=True)
class Route:
    """One match of one rule. `name` carries the route's identity for logs and access logs."""

    name: str
    match: Match
    action: Action
    request_headers: HeaderModifier | None = None
    response_headers: HeaderModifier | None = None
    cors: Cors | None = None
    session: Session | None = None


@dataclass(frozen=True)
class VirtualHost:
    """Routes for one hostname, already in Gateway API precedence order (Envoy takes the first match)."""

    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]


@dataclass(frozen=True)
class RouteConfig:
    name: str
    virtual_hosts: tuple[VirtualHost, ...]


@dataclass(frozen=True)
class Certificate:
    """A TLS certificate chain and key (PEM). `name` is the Secret's namespace/name."""

    name: str
    cert_chain: str
    private_key: str = field(repr=False)


@dataclass(frozen=True)
class TLSParameters:
    """A terminating listener's TLS settings beyond its certificates (the listener's tls.options); empty
    fields keep Envoy's defaults, which are what a listener without options gets."""

    #: Protocol versions, "1.0" to "1.3".
    min_version: str = ""
    max_version: str = ""
    #: Envoy (BoringSSL) cipher names for TLS 1.0-1.2, in preference order.
    cipher_suites: tuple[str, ...] = ()
    #: ALPN protocols offered instead of the default ("h2", "http/1.1").
    alpn: tuple[str, ...] = ()


@dataclass(frozen=True)
class FilterChain:
    """A hostname's slice of a socket: SNI names (empty = any), certificates (empty = plaintext or TLS
    passthrough), and either HTTP routes or, for TLSRoute, the clusters the TCP stream is proxied to."""

    name: str
    server_names: tuple[str, ...]
    certificates: tuple[Certificate, ...]
    route_config: RouteConfig | None = None
    tcp: tuple[WeightedCluster, ...] = ()
    #: Client certificates (mutual TLS at the listener): CAs to verify them against; empty = not asked for.
    client_ca_pem: str = ""
    #: AllowInsecureFallback: ask for a certificate but let clients without a valid one in.
    client_cert_optional: bool = False
    #: The listener's tls.options; None: defaults.
    tls_parameters: TLSParameters | None = None


@dataclass(frozen=True)
class Listener:
    """One socket. Several Gateway listeners (even of several Gateways) on one address:port share it."""

    name: str
    address: str
    port: int
    #: HTTP: plaintext, hosts decide. TLS: filter chains chosen by SNI (HTTPS terminated, or TLS routes).
    protocol: Literal["HTTP", "TLS"]
    filter_chains: tuple[FilterChain, ...]


@dataclass(frozen=True)
class IR:
    listeners: tuple[Listener, ...] = ()
    clusters: tuple[Cluster, ...] = ()
