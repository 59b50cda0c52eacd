"""`stackway serve`: the Kubernetes API → control plane → xDS for every Envoy that connects.

In a cluster the Envoys run on their own (the DaemonSet or Deployment that `stackway manifests` will render)
and connect to this server; nothing here launches one. Every replica serves xDS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from stackway.openstack.loadbalancer.config import LBConfig
from stackway.providers.kubernetes import DEFAULT_KINDS, Kind, KubeApi, KubernetesProvider
from stackway.providers.kubernetes.leader import LeaderElector
from stackway.providers.kubernetes.status import StatusWriter
from stackway.service import ControlService, configure_logging, run_until_signal
from stackway.translate import Options
from stackway.xds_server import ServerTls

if TYPE_CHECKING:  # openstacksdk is imported only when a cloud is configured
    from stackway.openstack.loadbalancer.bridge import LoadBalancerBridge
    from stackway.openstack.loadbalancer.servicestatus import ServiceStatusWriter

log = structlog.get_logger("stackway.cluster")

#: Load-balancer members are nodes: watched only when an OpenStack cloud is configured.
NODE_KIND = Kind("", "v1", "Node", "nodes", namespaced=False)


@dataclass(frozen=True)
class ClusterConfig:
    kubeconfig: Path | None = None
    context: str | None = None
    namespace: str | None = None
    address: str = "0.0.0.0"
    admin: tuple[str, int] = ("0.0.0.0", 9900)
    xds: tuple[str, int] = ("0.0.0.0", 18000)
    log_level: str = "info"
    #: Campaign for the `stackway-controller` Lease; only the leader writes status (every replica serves xDS).
    leader_elect: bool = True
    #: Write the computed statuses back to the API (off: a read-only replica, e.g. a dry run).
    write_status: bool = True
    #: Where the Lease lives: POD_NAMESPACE (the downward API) by default, else `namespace`, else default.
    lease_namespace: str | None = None
    #: Directory with server.crt, server.key and ca.crt: the xDS server then requires Envoys' client certs.
    xds_tls_dir: Path | None = None
    #: With a cloud (clouds.yaml name), the leader gives Services of type LoadBalancer Octavia load balancers.
    os_cloud: str | None = None
    load_balancers: LBConfig | None = None


class ClusterService:
    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        tls = None
        if config.xds_tls_dir is not None:
            d = config.xds_tls_dir
            tls = ServerTls(cert_file=d / "server.crt", key_file=d / "server.key", client_ca_file=d / "ca.crt")
        self.bridge: LoadBalancerBridge | None = None
        kinds: tuple[Kind, ...] = DEFAULT_KINDS
        if config.os_cloud is not None:
            from stackway.openstack.loadbalancer.bridge import connect_bridge

            self.bridge = connect_bridge(config.os_cloud, config.load_balancers or LBConfig())
            self.bridge.active = False  # acting on OpenStack is the leader's job (see start)
            kinds = (*DEFAULT_KINDS, NODE_KIND)
        self.service = ControlService(
            Options(default_address=config.address),
            config.xds,
            config.admin,
            xds_tls=tls,
            require_envoy=False,
            load_balancers=self.bridge,
        )
        self.provider = KubernetesProvider(
            self._on_change,
            kinds=kinds,
            namespace=config.namespace,
            kubeconfig=config.kubeconfig,
            context=config.context,
        )
        self.service_writer: ServiceStatusWriter | None = None
        self.api: KubeApi | None = None
        self.status_writer: StatusWriter | None = None
        self.elector: LeaderElector | None = None

    async def _on_change(self, state: Any) -> None:
        """Translate and publish, then hand the statuses to the writer (which writes only while leading)."""
        await self.service.on_change(state)
        if self.status_writer is not None:
            control = self.service.control
            self.status_writer.update(control.statuses, control.generations, live=state.objects)

    async def start(self) -> None:
        if self.config.write_status:
            self.api = await KubeApi.connect(self.config.kubeconfig, self.config.context)
            writer = self.status_writer = StatusWriter(self.api, self.service.control.options.controller_name)
            if self.bridge is not None:
                from stackway.openstack.loadbalancer.servicestatus import ServiceStatusWriter

                self.service_writer = ServiceStatusWriter(self.api)
                self.bridge.add_listener(self.service_writer.observe)
        await self.service.start_serving(self.provider)
        if self.api is not None and self.config.leader_elect:
            namespace = self.config.lease_namespace or os.environ.get("POD_NAMESPACE") or self.config.namespace
            self.elector = LeaderElector(self.api, namespace or "default")

            async def started() -> None:
                writer.start()
                self._lead_load_balancers()

            async def stopped() -> None:
                await self._follow_load_balancers()
                await writer.stop()

            self.elector.on_started_leading, self.elector.on_stopped_leading = started, stopped
            self.elector.start()
        elif self.status_writer is not None:
            self.status_writer.start()
            self._lead_load_balancers()
        log.info(
            "stackway is serving the cluster",
            namespace=self.config.namespace or "(all)",
            xds=f"{self.config.xds[0]}:{self.config.xds[1]}",
            admin=f"http://{self.config.admin[0]}:{self.config.admin[1]}",
        )

    def _lead_load_balancers(self) -> None:
        if self.service_writer is not None:
            self.service_writer.start()
        if self.bridge is not None:
            self.bridge.activate()

    async def _follow_load_balancers(self) -> None:
        if self.bridge is not None:
            self.bridge.deactivate()
        if self.service_writer is not None:
            await self.service_writer.stop()

    async def stop(self) -> None:
        await self._follow_load_balancers()
        if self.elector is not None:
            await self.elector.stop()  # stops the writer first, then releases the Lease for a fast hand-over
        if self.status_writer is not None:
            await self.status_writer.stop()
        await self.service.stop_serving()
        if self.api is not None:
            await self.api.close()


async def run_cluster(config: ClusterConfig) -> None:
    configure_logging(config.log_level)
    service = ClusterService(config)
    await run_until_signal(service.start, service.stop)
