"""Cluster mode's side of the load-balancer controller: Service status, the cleanup finalizer, and Events.

Only the leader runs it (and the controller): two replicas acting on Octavia would race each other.

- **Status** goes through the ``/status`` subresource as a read-modify-write carrying the resourceVersion:
  our condition is replaced in ``status.conditions`` and other controllers' conditions are kept (a merge
  patch would replace the whole list). A 409 re-reads and retries with backoff.
- **Finalizer** ``service.kubernetes.io/load-balancer-cleanup`` (the one Kubernetes' own service controller
  uses) is added before an LB is made, so a Service deleted while no controller runs waits for cleanup;
  it is removed once the LB is gone.
- **Events** as the service controller records them (EnsuringLoadBalancer, EnsuredLoadBalancer,
  DeletedLoadBalancer, SyncLoadBalancerFailed), so ``kubectl describe service`` tells the story; a Warning
  for an invalid annotation names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import random
import uuid
from typing import Any

import structlog

from stackway.openstack.loadbalancer.bridge import CONDITION, service_status
from stackway.openstack.loadbalancer.controller import FINALIZER, LBStatus, ServiceKey
from stackway.providers.kubernetes.client import KubeApi, KubeApiError

log = structlog.get_logger("stackway.loadbalancer")

EVENT_FOR_STATE = {
    "Pending": ("Normal", "EnsuringLoadBalancer"),
    "Active": ("Normal", "EnsuredLoadBalancer"),
    "Invalid": ("Warning", "InvalidLoadBalancerConfig"),
    "Error": ("Warning", "SyncLoadBalancerFailed"),
    "Deleting": ("Normal", "DeletingLoadBalancer"),
    "Deleted": ("Normal", "DeletedLoadBalancer"),
}


def _path(key: ServiceKey, subresource: str = "") -> str:
    namespace, name = key
    return f"/api/v1/namespaces/{namespace}/services/{name}" + (f"/{subresource}" if subresource else "")


def merge_status(live: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """The live status with our loadBalancer ingress and our condition in place; others' conditions kept,
    and lastTransitionTime kept unless our condition's status flips."""
    merged = copy.deepcopy(live) if live else {}
    merged["loadBalancer"] = ours["loadBalancer"]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conditions = [c for c in merged.get("conditions") or [] if c.get("type") != CONDITION]
    previous = next((c for c in merged.get("conditions") or [] if c.get("type") == CONDITION), None)
    (mine,) = ours["conditions"]
    kept = previous is not None and previous.get("status") == mine["status"]
    mine = {**mine, "lastTransitionTime": previous.get("lastTransitionTime", now) if kept and previous else now}
    merged["conditions"] = [*conditions, mine]
    return merged


def _same(live: dict[str, Any], desired: dict[str, Any]) -> bool:
    def strip(status: dict[str, Any]) -> Any:
        conds = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status.get("conditions") or []]
        return (status.get("loadBalancer") or {}, conds)

    return bool(strip(live) == strip(desired))


class ServiceStatusWriter:
    def __init__(self, api: KubeApi, *, component: str = "stackway-loadbalancer", attempts: int = 6) -> None:
        self.api = api
        self.component = component
        self.attempts = attempts
        self._latest: dict[ServiceKey, LBStatus] = {}
        self._queue: asyncio.Queue[ServiceKey] = asyncio.Queue()
        self._queued: set[ServiceKey] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_event: dict[ServiceKey, tuple[str, str]] = {}

    def observe(self, key: ServiceKey, status: LBStatus) -> None:
        """The controller's callback, from its worker threads: hand over to the event loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._enqueue, key, status)

    def _enqueue(self, key: ServiceKey, status: LBStatus) -> None:
        self._latest[key] = status
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._loop = None

    async def _run(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            status = self._latest[key]
            try:
                await self._write(key, status)
            except Exception as err:  # the API is down or refuses: log, try again later, never die
                log.warning("service status not written", service="/".join(key), error=str(err))
                await asyncio.sleep(1.0)
                if key not in self._queued:
                    self._queued.add(key)
                    self._queue.put_nowait(key)

    async def _write(self, key: ServiceKey, status: LBStatus) -> None:
        await self._event(key, status)
        if status.state == "Deleted":
            await self._update(key, lambda obj: self._finalizer(obj, add=False), subresource="")
            return
        if status.state in ("Pending", "Active"):
            await self._update(key, lambda obj: self._finalizer(obj, add=True), subresource="")
        desired = service_status(status)
        await self._update(key, lambda obj: self._status(obj, desired), subresource="status")

    @staticmethod
    def _finalizer(obj: dict[str, Any], *, add: bool) -> bool:
        meta = obj.setdefault("metadata", {})
        finalizers = list(meta.get("finalizers") or [])
        if add == (FINALIZER in finalizers):
            return False
        if add and meta.get("deletionTimestamp"):
            return False  # a deleting object takes no new finalizers
        meta["finalizers"] = [*finalizers, FINALIZER] if add else [f for f in finalizers if f != FINALIZER]
        return True

    @staticmethod
    def _status(obj: dict[str, Any], desired: dict[str, Any]) -> bool:
        live = obj.get("status") or {}
        merged = merge_status(live, desired)
        if _same(live, merged):
            return False
        obj["status"] = merged
        return True

    async def _update(self, key: ServiceKey, change: Any, *, subresource: str) -> None:
        """GET, change, PUT with the resourceVersion read; 409 → again. A Service that is gone is done."""
        for attempt in range(self.attempts):
            try:
                obj = await self.api.request("GET", _path(key))
            except KubeApiError as err:
                if err.status == 404:
                    return
                raise
            if not change(obj):
                return
            try:
                await self.api.request("PUT", _path(key, subresource), body=obj)
                return
            except KubeApiError as err:
                if err.status == 404:
                    return
                if err.status != 409 or attempt == self.attempts - 1:
                    raise
                await asyncio.sleep(random.uniform(0.05, 0.2) * 2**attempt)

    async def _event(self, key: ServiceKey, status: LBStatus) -> None:
        """One Event per change of (reason, message): repeats of the same state are not re-recorded."""
        kind, reason = EVENT_FOR_STATE.get(status.state, ("Normal", status.state))
        message = status.message or (
            f"{status.lb_name} {status.lb_id or ''} {status.ingress_hostname or status.ingress_ip or ''}".strip()
        )
        if self._last_event.get(key) == (reason, message):
            return
        self._last_event[key] = (reason, message)
        namespace, name = key
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            # client-go's naming: the object's name and a unique suffix
            "metadata": {"name": f"{name}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Service", "name": name, "namespace": namespace},
            "reason": reason,
            "message": message[:1024],
            "type": kind,
            "source": {"component": self.component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.api.request("POST", f"/api/v1/namespaces/{namespace}/events", body=event)
        except KubeApiError as err:  # Events are best effort, as everywhere in Kubernetes
            log.debug("event not recorded", service="/".join(key), error=str(err))
