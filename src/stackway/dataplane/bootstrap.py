"""Envoy bootstrap: the only static configuration; everything else arrives over ADS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

_T = "type.googleapis.com/"

#: Upper bound on downstream connections across all listeners. Envoy warns at start-up without one, and a
#: bound keeps a connection flood from exhausting file descriptors and memory.
MAX_DOWNSTREAM_CONNECTIONS = 50_000


def _socket(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


@dataclass(frozen=True)
class XdsClientTls:
    """Envoy's side of mutual TLS to the control plane: its client certificate and key, the CA that signed the
    control plane's certificate, and the name that certificate must carry (sent as SNI, checked as DNS SAN).
    Envoy reads the files itself (paths, not contents, go into the bootstrap), so mounted Secrets work."""

    cert_file: Path | str
    key_file: Path | str
    ca_file: Path | str
    server_name: str


def xds_transport_socket(tls: XdsClientTls | None) -> dict[str, Any]:
    """`transport_socket` entry for a cluster that reaches the control plane: none (plaintext) without `tls`.
    Public so that bootstraps rendered elsewhere (the cluster manifests) configure TLS the same way."""
    if tls is None:
        return {}
    context = {
        "@type": _T + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "sni": tls.server_name,
        "common_tls_context": {
            # A gRPC server over TLS insists on HTTP/2 being negotiated by ALPN.
            "alpn_protocols": ["h2"],
            "tls_certificates": [
                {
                    "certificate_chain": {"filename": str(tls.cert_file)},
                    "private_key": {"filename": str(tls.key_file)},
                }
            ],
            "validation_context": {
                "trusted_ca": {"filename": str(tls.ca_file)},
                "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": tls.server_name}}],
            },
        },
    }
    return {"transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": context}}


def render_bootstrap(
    node_id: str,
    cluster: str,
    xds_host: str,
    xds_port: int,
    admin_host: str,
    admin_port: int,
    delta: bool,
    *,
    xds_tls: XdsClientTls | None = None,
) -> dict[str, Any]:
    """Bootstrap as plain data (dump it as JSON or YAML). Pure: no file or network access. With `xds_tls`
    Envoy talks to the control plane over mutual TLS; without it, plaintext (fine on a loopback address)."""
    ads_source = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {"id": node_id, "cluster": cluster},
        "admin": {"address": _socket(admin_host, admin_port)},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                # The node is identified once per stream, not on every request.
                "set_node_on_first_message_only": True,
                "grpc_services": [
                    {
                        "envoy_grpc": {
                            "cluster_name": "xds_cluster",
                            # Reconnect quickly after a control-plane restart (default backoff is 0.5 to 30 s).
                            "retry_policy": {"retry_back_off": {"base_interval": "0.1s", "max_interval": "2s"}},
                        }
                    }
                ],
            },
            "lds_config": ads_source,
            "cds_config": ads_source,
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds_cluster",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": _T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            # gRPC needs HTTP/2; keepalive notices a silently dead control plane.
                            "explicit_http_config": {
                                "http2_protocol_options": {
                                    "connection_keepalive": {"interval": "30s", "timeout": "5s"},
                                }
                            },
                        }
                    },
                    "upstream_connection_options": {"tcp_keepalive": {}},
                    "load_assignment": {
                        "cluster_name": "xds_cluster",
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket(xds_host, xds_port)}}]}],
                    },
                    **xds_transport_socket(xds_tls),
                }
            ]
        },
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": _T + "envoy.extensions.resource_monitors.downstream_connections.v3."
                        "DownstreamConnectionsConfig",
                        "max_active_downstream_connections": MAX_DOWNSTREAM_CONNECTIONS,
                    },
                }
            ]
        },
    }
