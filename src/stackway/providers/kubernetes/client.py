"""The Kubernetes API as stackway uses it: raw JSON lists, watches and writes of any kind, by URL.

kubernetes_asyncio supplies what is hard to get right by hand and must match kubectl: kubeconfig parsing
(contexts, client certificates, exec and OIDC token plugins, token refresh) and in-cluster service-account
credentials. Its generated typed APIs are not used: they turn every object into a model class and back,
which drops fields the models do not know and costs a conversion per watch event, while the translator
wants the object exactly as the API server sent it. So requests go through the library's `ApiClient`
(auth, TLS, its aiohttp session) at the raw level, and this module decodes JSON and watch streams itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration

JSON = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    """A resource the provider lists and watches, addressed without discovery (its URL is known)."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        """The URL path of the collection (all namespaces when `namespace` is None) or of one object."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base

    def __str__(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


_GW = "gateway.networking.k8s.io"

#: Every kind the translator reads.
DEFAULT_KINDS: tuple[Kind, ...] = (
    Kind(_GW, "v1", "GatewayClass", "gatewayclasses", namespaced=False),
    Kind(_GW, "v1", "Gateway", "gateways", namespaced=True),
    Kind(_GW, "v1", "HTTPRoute", "httproutes", namespaced=True),
    Kind(_GW, "v1", "GRPCRoute", "grpcroutes", namespaced=True),
    Kind(_GW, "v1", "TLSRoute", "tlsroutes", namespaced=True),
    Kind(_GW, "v1", "BackendTLSPolicy", "backendtlspolicies", namespaced=True),
    Kind(_GW, "v1beta1", "ReferenceGrant", "referencegrants", namespaced=True),
    Kind("networking.k8s.io", "v1", "Ingress", "ingresses", namespaced=True),
    Kind("networking.k8s.io", "v1", "IngressClass", "ingressclasses", namespaced=False),
    Kind("", "v1", "Service", "services", namespaced=True),
    Kind("", "v1", "Secret", "secrets", namespaced=True),
    Kind("", "v1", "Namespace", "namespaces", namespaced=False),
    Kind("", "v1", "ConfigMap", "configmaps", namespaced=True),
    Kind("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", namespaced=True),
)


class KubeApiError(Exception):
    """A non-2xx answer (or an ERROR watch event), with the Status object's code, reason and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @classmethod
    def from_status(cls, status: Any, http_status: int = 0) -> KubeApiError:
        body = status if isinstance(status, dict) else {}
        return cls(int(body.get("code") or http_status), str(body.get("reason", "")), str(body.get("message", "")))


async def load_configuration(kubeconfig: str | Path | None = None, context: str | None = None) -> Configuration:
    """Credentials as kubectl finds them: an explicit kubeconfig; else in-cluster service-account
    credentials when running in a pod; else `$KUBECONFIG` or `~/.kube/config`."""
    configuration: Configuration = type.__call__(Configuration)  # fresh, not a copy of the library's default
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        load_incluster: Any = kube_config.load_incluster_config  # untyped in the library
        load_incluster(client_configuration=configuration)
    else:
        await kube_config.load_kube_config(
            config_file=str(kubeconfig) if kubeconfig is not None else None,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    return configuration


class KubeApi:
    """Lists, watches and writes objects of any kind as plain JSON, over one library `ApiClient`."""

    def __init__(self, api_client: ApiClient, *, request_timeout_s: float = 60.0) -> None:
        self.api_client = api_client
        self.request_timeout_s = request_timeout_s

    @classmethod
    async def connect(cls, kubeconfig: str | Path | None = None, context: str | None = None, **options: Any) -> KubeApi:
        return cls(ApiClient(await load_configuration(kubeconfig, context)), **options)

    async def close(self) -> None:
        await self.api_client.close()

    async def _send(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        *,
        content_type: str = "application/json",
        client_timeout: aiohttp.ClientTimeout | None = None,
    ) -> aiohttp.ClientResponse:
        """One request through the library (auth headers, token refresh, TLS); the raw response."""
        response: aiohttp.ClientResponse = await self.api_client.call_api(
            path,
            method,
            query_params=list(query),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=client_timeout or aiohttp.ClientTimeout(total=self.request_timeout_s),
        )
        return response

    async def request(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        *,
        content_type: str = "application/json",
    ) -> JSON:
        """Any verb on any path; the decoded answer, or KubeApiError with the server's Status."""
        response = await self._send(method, path, query, body, content_type=content_type)
        async with response:
            text = await response.text()
            try:
                decoded = json.loads(text) if text else {}
            except ValueError:
                decoded = {"message": text[:200]}
            if not 200 <= response.status < 300:
                raise KubeApiError.from_status(decoded, response.status)
            return decoded if isinstance(decoded, dict) else {}

    async def list(self, kind: Kind, namespace: str | None = None, *, limit: int = 500) -> tuple[list[JSON], str]:
        """Every object of `kind` (in pages of `limit`) and the list's resourceVersion. Items get their
        apiVersion and kind back: the server sends them once per list for built-in kinds, not per item."""
        items: list[JSON] = []
        resource_version = ""
        token = ""
        while True:
            query = [("limit", str(limit))] + ([("continue", token)] if token else [])
            page = await self.request("GET", kind.path(namespace), query)
            metadata = page.get("metadata") or {}
            resource_version = resource_version or str(metadata.get("resourceVersion", ""))
            for item in page.get("items") or []:
                item.setdefault("apiVersion", kind.api_version)
                item.setdefault("kind", kind.kind)
                items.append(item)
            token = str(metadata.get("continue") or "")
            if not token:
                return items, resource_version

    async def watch(
        self, kind: Kind, namespace: str | None, resource_version: str, *, timeout_s: int = 300
    ) -> AsyncGenerator[JSON, None]:
        """Events after `resource_version`, bookmarks included, until the server ends the watch (after
        about `timeout_s`). The read timeout allows for a quiet stream: the server sends bookmarks."""
        query = [
            ("watch", "1"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_s)),
        ]
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout_s + 30)
        response = await self._send("GET", kind.path(namespace), query, client_timeout=timeout)
        try:
            if response.status != 200:
                text = await response.text()
                try:
                    decoded = json.loads(text)
                except ValueError:
                    decoded = {"message": text[:200]}
                raise KubeApiError.from_status(decoded, response.status)
            async for line in response.content:
                if line.strip():
                    event = json.loads(line)
                    if isinstance(event, dict):
                        yield event
        finally:
            response.release()
