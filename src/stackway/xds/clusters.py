"""IR clusters → Envoy Cluster (EDS) + ClusterLoadAssignment.

Every cluster is EDS even though standalone endpoints are known up front: endpoint churn then travels
as one ClusterLoadAssignment instead of a Cluster update (which would re-warm the cluster and, in delta
mode, needs the CLA re-sent; see the xDS server).
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2, duration_pb2

from stackway.ir import model as ir

CONNECT_TIMEOUT_S = 5


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(), resource_api_version="V3")


def build_cluster(cluster: ir.Cluster) -> cluster_pb2.Cluster:
    msg = cluster_pb2.Cluster(
        name=cluster.name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads()),
        connect_timeout=duration_pb2.Duration(seconds=CONNECT_TIMEOUT_S),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        ignore_health_on_host_removal=True,
    )
    if cluster.tls is not None:
        msg.transport_socket.CopyFrom(upstream_tls_socket(cluster.tls, h2=cluster.protocol == "h2c"))
    if cluster.protocol == "h2c":
        options = http_protocol_options_pb2.HttpProtocolOptions(
            explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
            )
        )
        packed = any_pb2.Any()
        packed.Pack(options)
        msg.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].CopyFrom(packed)
    return msg


def upstream_tls_socket(tls: ir.UpstreamTLS, *, h2: bool) -> base_pb2.TransportSocket:
    """Verified TLS to the backend: SNI, trusted CAs (inline PEM or the system's) and required SANs, and the
    client certificate to present when there is one."""
    validation = common_pb2.CertificateValidationContext(
        match_typed_subject_alt_names=[
            common_pb2.SubjectAltNameMatcher(
                san_type=common_pb2.SubjectAltNameMatcher.DNS
                if kind == "DNS"
                else common_pb2.SubjectAltNameMatcher.URI,
                matcher=string_pb2.StringMatcher(exact=value),
            )
            for kind, value in tls.subject_alt_names
        ]
    )
    if tls.ca_pem:
        validation.trusted_ca.inline_string = tls.ca_pem
    else:
        validation.system_root_certs.SetInParent()
    context = tls_pb2.UpstreamTlsContext(
        sni=tls.sni,
        common_tls_context=tls_pb2.CommonTlsContext(
            validation_context=validation, alpn_protocols=["h2"] if h2 else ["http/1.1"]
        ),
    )
    if tls.client_certificate is not None:
        context.common_tls_context.tls_certificates.append(
            common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(inline_string=tls.client_certificate.cert_chain),
                private_key=base_pb2.DataSource(inline_string=tls.client_certificate.private_key),
            )
        )
    packed = any_pb2.Any()
    packed.Pack(context)
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=packed)


def build_load_assignment(cluster: ir.Cluster) -> endpoint_pb2.ClusterLoadAssignment:
    lb_endpoints = [
        endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(
                address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address=ep.address, port_value=ep.port)
                )
            )
        )
        for ep in cluster.endpoints
    ]
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=cluster.name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb_endpoints)] if lb_endpoints else [],
    )
