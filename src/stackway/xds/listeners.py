"""IR listeners → Envoy Listener: one per socket, one filter chain per hostname (SNI) on HTTPS.

Routes live in RDS, so a route edit never touches a Listener: Envoy then drains nothing. Filter chains
carry stable names so that adding a hostname only drains connections of the chain that changed.
"""

from __future__ import annotations

import re

from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.http.stateful_session.v3 import stateful_session_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from google.protobuf import any_pb2, wrappers_pb2
from google.protobuf.message import Message

from stackway.ir import model as ir


def _pack(msg: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


def stat_prefix(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _http_connection_manager(chain: ir.FilterChain, listener: ir.Listener) -> hcm.HttpConnectionManager:
    assert chain.route_config is not None
    return hcm.HttpConnectionManager(
        stat_prefix=stat_prefix(f"{listener.name}_{chain.name}"),
        codec_type=hcm.HttpConnectionManager.AUTO,
        rds=hcm.Rds(
            config_source=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource(), resource_api_version="V3"
            ),
            route_config_name=chain.route_config.name,
        ),
        # Every listener carries the same filter chain so that enabling CORS on a route never changes (and
        # so never drains) a listener; the CORS filter does nothing for routes without a policy.
        http_filters=[
            hcm.HttpFilter(name="envoy.filters.http.cors", typed_config=_pack(cors_pb2.Cors())),
            hcm.HttpFilter(
                name="envoy.filters.http.stateful_session", typed_config=_pack(stateful_session_pb2.StatefulSession())
            ),
            hcm.HttpFilter(name="envoy.filters.http.router", typed_config=_pack(router_pb2.Router())),
        ],
        upgrade_configs=[hcm.HttpConnectionManager.UpgradeConfig(upgrade_type="websocket")],
        normalize_path=wrappers_pb2.BoolValue(value=True),
        merge_slashes=True,
    )


def _tcp_proxy(chain: ir.FilterChain, listener: ir.Listener) -> tcp_proxy_pb2.TcpProxy:
    """TLSRoute: the (possibly still encrypted) stream goes to the backends by weight."""
    out = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix(f"{listener.name}_{chain.name}"))
    if len(chain.tcp) == 1:
        out.cluster = chain.tcp[0].cluster
    else:
        out.weighted_clusters.clusters.extend(
            tcp_proxy_pb2.TcpProxy.WeightedCluster.ClusterWeight(name=wc.cluster, weight=wc.weight) for wc in chain.tcp
        )
    return out


#: tls.options' protocol versions → Envoy's.
_TLS_VERSIONS = {
    "1.0": common_pb2.TlsParameters.TLSv1_0,
    "1.1": common_pb2.TlsParameters.TLSv1_1,
    "1.2": common_pb2.TlsParameters.TLSv1_2,
    "1.3": common_pb2.TlsParameters.TLSv1_3,
}


def _tls_socket(chain: ir.FilterChain) -> base_pb2.TransportSocket:
    options = chain.tls_parameters or ir.TLSParameters()
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_certificates=[
                common_pb2.TlsCertificate(
                    certificate_chain=base_pb2.DataSource(inline_string=cert.cert_chain),
                    private_key=base_pb2.DataSource(inline_string=cert.private_key),
                )
                for cert in chain.certificates
            ],
            alpn_protocols=list(options.alpn) or ["h2", "http/1.1"],
        )
    )
    if options.min_version or options.max_version or options.cipher_suites:
        params = context.common_tls_context.tls_params  # unset (Envoy's defaults) unless an option asks
        if options.min_version:
            params.tls_minimum_protocol_version = _TLS_VERSIONS[options.min_version]
        if options.max_version:
            params.tls_maximum_protocol_version = _TLS_VERSIONS[options.max_version]
        params.cipher_suites.extend(options.cipher_suites)
    if chain.client_ca_pem:
        validation = context.common_tls_context.validation_context
        validation.trusted_ca.inline_string = chain.client_ca_pem
        if chain.client_cert_optional:
            validation.trust_chain_verification = common_pb2.CertificateValidationContext.ACCEPT_UNTRUSTED
        else:
            context.require_client_certificate.value = True
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=_pack(context))


def listener_signature(listener: ir.Listener) -> tuple[object, ...]:
    """Everything `build_listener` reads: equal signatures build equal Listeners.

    A listener holds its route configurations by name only (RDS), so a route edit leaves the signature, and
    with it the built Listener and its version, as they were; comparing the whole IR listener instead
    would compare every route behind it.
    """
    return (
        listener.name,
        listener.address,
        listener.port,
        listener.protocol,
        tuple(
            (
                chain.name,
                chain.server_names,
                chain.certificates,
                chain.route_config.name if chain.route_config is not None else None,
                chain.tcp,
                chain.client_ca_pem,
                chain.client_cert_optional,
                chain.tls_parameters,
            )
            for chain in listener.filter_chains
        ),
    )


def build_listener(listener: ir.Listener) -> listener_pb2.Listener:
    out = listener_pb2.Listener(
        name=listener.name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=listener.address, port_value=listener.port)
        ),
        per_connection_buffer_limit_bytes=wrappers_pb2.UInt32Value(value=32768),
    )
    if listener.protocol == "TLS":
        out.listener_filters.append(
            listener_components_pb2.ListenerFilter(
                name="envoy.filters.listener.tls_inspector", typed_config=_pack(tls_inspector_pb2.TlsInspector())
            )
        )
    for chain in listener.filter_chains:
        if chain.route_config is not None:
            network = listener_components_pb2.Filter(
                name="envoy.filters.network.http_connection_manager",
                typed_config=_pack(_http_connection_manager(chain, listener)),
            )
        else:
            network = listener_components_pb2.Filter(
                name="envoy.filters.network.tcp_proxy", typed_config=_pack(_tcp_proxy(chain, listener))
            )
        fc = listener_components_pb2.FilterChain(name=chain.name, filters=[network])
        if chain.server_names:
            fc.filter_chain_match.server_names.extend(chain.server_names)
        if chain.certificates:
            fc.transport_socket.CopyFrom(_tls_socket(chain))
        out.filter_chains.append(fc)
    return out
