"""`stackway serve`: the Kubernetes API → control plane → xDS for every Envoy that connects.

In a cluster the Envoys run on their own (the DaemonSet or Deployment that `stackway manifests` will render)
and connect to this server; nothing here launches one. Every replica serves xDS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog

from stackway.providers.kubernetes import KubernetesProvider
from stackway.service import ControlService, configure_logging, run_until_signal
from stackway.translate import Options

log = structlog.get_logger("stackway.cluster")


@dataclass(frozen=True)
class ClusterConfig:
    kubeconfig: Path | None = None
    context: str | None = None
    namespace: str | None = None
    address: str = "0.0.0.0"
    admin: tuple[str, int] = ("0.0.0.0", 9900)
    xds: tuple[str, int] = ("0.0.0.0", 18000)
    log_level: str = "info"


class ClusterService:
    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.service = ControlService(Options(default_address=config.address), config.xds, config.admin)
        self.provider = KubernetesProvider(
            self.service.on_change, namespace=config.namespace, kubeconfig=config.kubeconfig, context=config.context
        )

    async def start(self) -> None:
        await self.service.start_serving(self.provider)
        log.info(
            "stackway is serving the cluster",
            namespace=self.config.namespace or "(all)",
            xds=f"{self.config.xds[0]}:{self.config.xds[1]}",
            admin=f"http://{self.config.admin[0]}:{self.config.admin[1]}",
        )

    async def stop(self) -> None:
        await self.service.stop_serving()


async def run_cluster(config: ClusterConfig) -> None:
    configure_logging(config.log_level)
    service = ClusterService(config)
    await run_until_signal(service.start, service.stop)
