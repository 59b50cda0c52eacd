"""Keep every LoadBalancer Service's Octavia load balancer in line with the Service, concurrently.

The controller owns no watch: a provider (the files watcher, the Kubernetes watch, the CLI's one-shot read)
hands it the current Services and Nodes, and it reconciles only those whose plan changed since the last
success — a Service whose LB is already right costs no API call. Each Service reconciles on one thread of a
pool at a time (Octavia serializes per LB anyway); different Services proceed in parallel.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import structlog

from stackway.openstack.clients.errors import OpenStackError
from stackway.openstack.loadbalancer import names
from stackway.openstack.loadbalancer.actuator import Actuator, LoadBalancerError, StillPending
from stackway.openstack.loadbalancer.config import LBConfig
from stackway.openstack.loadbalancer.metrics import RECONCILE_ERRORS, RECONCILE_SECONDS, RECONCILES, SERVICES
from stackway.openstack.loadbalancer.plan import Plan, plan, wants_load_balancer
from stackway.openstack.loadbalancer.spec import FloatingIPSpec, LoadBalancerSpec
from stackway.resources.core import Node, Service

log = structlog.get_logger("stackway.loadbalancer")

ServiceKey = tuple[str, str]
FINALIZER = "service.kubernetes.io/load-balancer-cleanup"
#: States in which a Service goes on showing its previous LB and address.
KEEPS_ADDRESS = frozenset({"Pending", "Deleting", "Invalid"})


@dataclass(frozen=True)
class LBStatus:
    """What the Service shows: ``ingress`` goes to status.loadBalancer, the rest to conditions and Events."""

    state: str  # Pending | Active | Invalid | Error | Deleting | Deleted
    lb_name: str
    lb_id: str | None = None
    ingress_ip: str | None = None
    ingress_hostname: str | None = None
    message: str = ""
    warnings: tuple[str, ...] = ()
    steps: int = 0
    seconds: float = 0.0


@dataclass
class _Entry:
    spec: LoadBalancerSpec | None = None
    applied: LoadBalancerSpec | None = None
    future: Future[None] | None = None
    status: LBStatus | None = None
    again: bool = False
    deleted: bool = False
    failures: int = 0
    retry: threading.Timer | None = None
    floating: FloatingIPSpec = field(default_factory=lambda: FloatingIPSpec(wanted=False))


class LoadBalancerController:
    def __init__(
        self,
        actuator: Actuator,
        config: LBConfig,
        *,
        workers: int = 8,
        on_status: Callable[[ServiceKey, LBStatus], None] | None = None,
        retry_initial: float = 1.0,
        retry_cap: float = 60.0,
    ) -> None:
        self.actuator = actuator
        self.config = config
        self.on_status = on_status or (lambda _key, _status: None)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lb")
        self._lock = threading.Lock()
        self._entries: dict[ServiceKey, _Entry] = {}
        self._closed = False
        self.retry_initial = retry_initial
        self.retry_cap = retry_cap

    # ---- input -------------------------------------------------------------------------------------

    def update(self, services: Iterable[Service], nodes: Iterable[Node]) -> None:
        """The whole current picture: start work for what changed, delete LBs of Services that are gone."""
        node_list = list(nodes)
        current: dict[ServiceKey, Service] = {}
        for svc in services:
            if wants_load_balancer(svc):
                current[(svc.metadata.namespace, svc.metadata.name)] = svc
        with self._lock:
            for key, svc in current.items():
                if svc.metadata.deletion_timestamp:
                    self._schedule_delete(key)
                    continue
                self._schedule_plan(key, plan(svc, node_list, self.config))
            for key in [k for k, e in self._entries.items() if k not in current and not e.deleted]:
                self._schedule_delete(key)

    def _schedule_plan(self, key: ServiceKey, result: Plan) -> None:
        entry = self._entries.setdefault(key, _Entry())
        entry.deleted = False
        lb = names.lb_name(self.config.cluster_name, *key)
        if result.spec is None:
            message = "; ".join(str(p) for p in result.problems)
            if entry.status is None or entry.status.message != message:
                log.warning("load balancer left as it was", service="/".join(key), problems=message)
            self.on_status(key, self._record(entry, LBStatus("Invalid", lb, message=message)))
            return
        entry.floating = result.spec.floating_ip
        if result.spec == entry.spec:
            running = entry.future is not None and not entry.future.done()
            retrying = entry.retry is not None and entry.retry.is_alive()
            done = result.spec == entry.applied and entry.status is not None and entry.status.state == "Active"
            if running or retrying or done:
                return  # nothing new: provider updates for unrelated objects cost no API call
        entry.spec = result.spec
        self._submit(key, entry)

    def _schedule_delete(self, key: ServiceKey) -> None:
        entry = self._entries.setdefault(key, _Entry())
        if entry.deleted:
            return
        entry.deleted = True
        entry.spec = None
        self._submit(key, entry)

    def _submit(self, key: ServiceKey, entry: _Entry) -> None:
        if entry.future is not None and not entry.future.done():
            entry.again = True  # the running reconcile re-checks when it ends
            return
        entry.future = self._pool.submit(self._run, key)

    # ---- work --------------------------------------------------------------------------------------

    def _run(self, key: ServiceKey) -> None:
        while True:
            with self._lock:
                entry = self._entries[key]
                entry.again = False
                spec, deleted, floating = entry.spec, entry.deleted, entry.floating
            lb = names.lb_name(self.config.cluster_name, *key)
            started = time.monotonic()
            operation = "loadbalancer_delete" if deleted else "loadbalancer_ensure"
            RECONCILES.labels(operation).inc()
            try:
                if deleted:
                    self._publish(key, LBStatus("Deleting", lb))
                    self.actuator.delete(lb, floating, None)
                    status = LBStatus("Deleted", lb, seconds=time.monotonic() - started)
                elif spec is not None:
                    self._publish(key, LBStatus("Pending", lb, warnings=spec.warnings))
                    result = self.actuator.ensure(spec)
                    hostname = spec.hostname
                    status = LBStatus(
                        "Active",
                        lb,
                        str(result.lb["id"]),
                        None if hostname else result.address,
                        hostname,
                        warnings=spec.warnings,
                        steps=len(result.applied),
                        seconds=time.monotonic() - started,
                    )
                    with self._lock:
                        entry.applied = spec
                else:
                    return
            except (LoadBalancerError, StillPending, OpenStackError) as err:
                RECONCILE_ERRORS.labels(operation).inc()
                log.warning("load balancer reconcile failed", service="/".join(key), error=str(err))
                state = "Pending" if isinstance(err, StillPending) or getattr(err, "retryable", False) else "Error"
                status = LBStatus(state, lb, message=str(err), seconds=time.monotonic() - started)
            except Exception as err:  # a bug must not kill the worker thread silently
                RECONCILE_ERRORS.labels(operation).inc()
                log.exception("load balancer reconcile crashed", service="/".join(key))
                status = LBStatus("Error", lb, message=f"internal error: {err}")
            RECONCILE_SECONDS.labels(operation).observe(time.monotonic() - started)
            self._publish(key, status)
            with self._lock:
                if status.state in ("Active", "Deleted"):
                    entry.failures = 0
                elif status.state == "Pending" or deleted:
                    self._retry_later(key, entry)
                if not entry.again:
                    if status.state == "Deleted":
                        self._entries.pop(key, None)
                    return

    def _retry_later(self, key: ServiceKey, entry: _Entry) -> None:
        """A transient failure (OpenStack down, LB still PENDING): try again after a capped backoff, without
        waiting for the Service to change. Lock held by the caller."""
        entry.failures += 1
        delay = min(self.retry_cap, self.retry_initial * 2 ** (entry.failures - 1))
        if entry.retry is not None:
            entry.retry.cancel()

        def fire() -> None:
            with self._lock:
                if self._entries.get(key) is entry and not self._closed:
                    self._submit(key, entry)

        entry.retry = threading.Timer(delay, fire)
        entry.retry.daemon = True
        entry.retry.start()

    def _record(self, entry: _Entry, status: LBStatus) -> LBStatus:
        """Store ``status`` as the entry's (lock held). While work is pending, being deleted or blocked by a
        bad annotation, the Service keeps showing the LB and address it had: traffic to it still works."""
        previous = entry.status
        if previous is not None and status.state in KEEPS_ADDRESS and not status.lb_id:
            status = replace(status, lb_id=previous.lb_id, ingress_ip=previous.ingress_ip)
        entry.status = status
        self._count_states()
        return status

    def _publish(self, key: ServiceKey, status: LBStatus) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                status = self._record(entry, status)
        self.on_status(key, status)

    # ---- output ------------------------------------------------------------------------------------

    def _count_states(self) -> None:
        """The per-state gauge; lock held by the caller."""
        counts: dict[str, int] = dict.fromkeys(("Pending", "Active", "Invalid", "Error", "Deleting"), 0)
        for entry in self._entries.values():
            if entry.status is not None and entry.status.state in counts:
                counts[entry.status.state] += 1
        for state, count in counts.items():
            SERVICES.labels(state).set(count)

    def statuses(self) -> Mapping[ServiceKey, LBStatus]:
        with self._lock:
            return {k: e.status for k, e in self._entries.items() if e.status is not None}

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no reconcile is running (CLI one-shot runs, tests, benchmarks)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                pending = [e.future for e in self._entries.values() if e.future and not e.future.done()]
            if not pending:
                return True
            for fut in pending:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    fut.result(timeout=remaining)
                except TimeoutError:
                    return False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for entry in self._entries.values():
                if entry.retry is not None:
                    entry.retry.cancel()
        self._pool.shutdown(wait=True, cancel_futures=False)
