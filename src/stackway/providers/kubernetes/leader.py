"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's rules and timings.

Every replica serves xDS; only the leader writes status, so that two replicas never fight over an object.
The algorithm is client-go's `leaderelection` (so stackway behaves as every other controller an operator
knows): candidates read the Lease every `retry_period_s` and take it when it is free or expired; the holder
renews it every `retry_period_s`; writes carry the resourceVersion read, so of two candidates racing for
an expired Lease exactly one wins (the other gets 409).

Expiry is judged on the local clock, from when this replica last saw the Lease record change plus the
record's leaseDurationSeconds, never from the renewTime written in it: replicas' clocks need not agree.
A leader that cannot renew (the API server is unreachable, or it is partitioned from it) steps down once
`renew_deadline_s` has passed since the last renewal it *sent*, which is before any other replica can
consider the Lease expired (`lease_duration_s` after it saw that renewal), so two leaders never overlap.
After stepping down it treats its own old record like anyone else's and waits for it to expire.

A clean `stop()` releases the Lease (empty holder, one-second duration), so a rolling update hands over
within about one `retry_period_s` instead of a whole `lease_duration_s`. Cancelling `run()` instead is a
crash: nothing is released and the others wait for expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog

from stackway.providers.kubernetes.client import JSON, KubeApi, KubeApiError

log = structlog.get_logger("stackway.providers.kubernetes.leader")

LEASE_NAME = "stackway-controller"
LEASES_PATH = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
Callback = Callable[[], Awaitable[None]]


def default_identity() -> str:
    """The pod's name (POD_NAME from the downward API, else the hostname, which is the pod name in a pod)
    and a random suffix, so that a restarted pod never mistakes its predecessor's Lease for its own."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{secrets.token_hex(4)}"


def micro_time() -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds, UTC."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Campaign for the Lease `name` in `namespace` until `stop()`; `leading` is set while we hold it.

    `on_started_leading` runs when leadership starts; `on_stopped_leading` when it ends (stepped down,
    stopped, or crashed out of `run()`), before the Lease is released, so whatever only the leader may do
    has stopped before anyone else can start it."""

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        *,
        name: str = LEASE_NAME,
        identity: str | None = None,
        lease_duration_s: float = 15.0,
        renew_deadline_s: float = 10.0,
        retry_period_s: float = 2.0,
        on_started_leading: Callback | None = None,
        on_stopped_leading: Callback | None = None,
    ) -> None:
        if not lease_duration_s > renew_deadline_s > retry_period_s > 0:
            raise ValueError("need lease_duration_s > renew_deadline_s > retry_period_s > 0")
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.lease_duration_s = lease_duration_s
        self.renew_deadline_s = renew_deadline_s
        self.retry_period_s = retry_period_s
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        #: Set while this replica holds the Lease.
        self.leading = asyncio.Event()
        #: Times leadership was gained or lost: (monotonic time, leading); for metrics and tests.
        self.transitions: list[tuple[float, bool]] = []
        self._observed: JSON | None = None  # the Lease spec last seen
        self._observed_at = 0.0  # monotonic time it was first seen
        self._yielded = False  # stepped down: our own old record counts as someone else's until it expires
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def is_leader(self) -> bool:
        return self.leading.is_set()

    @property
    def path(self) -> str:
        return LEASES_PATH.format(namespace=self.namespace) + f"/{self.name}"

    # ------------------------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Acquire, lead while renewals succeed, step down, and campaign again; until `stop()`."""
        try:
            while not self._stop.is_set():
                sent = time.monotonic()
                if not await self._attempt(self.renew_deadline_s):
                    await self._sleep(self.retry_period_s * random.uniform(1.0, 1.2))
                    continue
                if self._stop.is_set():  # stopped while the acquiring write was in flight
                    await self._release()
                    return
                await self._lead(sent)
        finally:
            if self.is_leader:  # cancelled: a crash as far as the others can tell
                await self._stopped_leading("cancelled")

    def start(self) -> None:
        """Campaign in the background; `stop()` ends it."""
        if self._task is None or self._task.done():
            self._stop.clear()
            self._task = asyncio.create_task(self.run(), name=f"leader election {self.name}")

    async def stop(self) -> None:
        """Stop campaigning; when leading, stop leading and release the Lease so another takes over fast."""
        self._stop.set()
        if self.is_leader:
            await self._stopped_leading("shutting down")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release(), self.renew_deadline_s)
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _lead(self, renewed: float) -> None:
        """Lead while renewals succeed; `renewed` is when the acquiring write was sent."""
        self._yielded = False
        self.leading.set()
        self.transitions.append((time.monotonic(), True))
        log.info("became the leader", lease=f"{self.namespace}/{self.name}", identity=self.identity)
        if self.on_started_leading is not None:
            await self.on_started_leading()
        while not self._stop.is_set() and self.is_leader:
            await self._sleep(self.retry_period_s)
            if self._stop.is_set() or not self.is_leader:
                return
            while True:
                left = renewed + self.renew_deadline_s - time.monotonic()
                if left <= 0:
                    self._yielded = True
                    await self._stopped_leading("could not renew the lease in time")
                    return
                sent = time.monotonic()
                if await self._attempt(left):
                    renewed = sent
                    break
                if self._stop.is_set():
                    return
                await self._sleep(min(self.retry_period_s, max(0.0, left - (time.monotonic() - sent))))

    async def _stopped_leading(self, why: str) -> None:
        if not self.is_leader:
            return
        self.leading.clear()
        self.transitions.append((time.monotonic(), False))
        log.warning("stopped leading", lease=f"{self.namespace}/{self.name}", identity=self.identity, reason=why)
        if self.on_stopped_leading is not None:
            await self.on_stopped_leading()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), max(0.0, seconds))

    # ------------------------------------------------------------------------------- one attempt

    async def _attempt(self, timeout_s: float) -> bool:
        """One acquire-or-renew, given up after `timeout_s`; False on any failure (logged)."""
        try:
            return await asyncio.wait_for(self._try_acquire_or_renew(), timeout_s)
        except KubeApiError as exc:
            if exc.status != 409:
                log.warning("lease request failed", lease=self.name, error=str(exc))
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            log.warning("lease request failed", lease=self.name, error=str(exc) or type(exc).__name__)
        return False

    async def _try_acquire_or_renew(self) -> bool:
        try:
            lease = await self.api.request("GET", self.path)
        except KubeApiError as exc:
            if exc.status != 404:
                raise
            created = await self.api.request(
                "POST",
                LEASES_PATH.format(namespace=self.namespace),
                body={
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._record(None),
                },
            )
            self._observe(created)
            return True
        self._observe(lease)
        record = self._observed or {}
        holder = record.get("holderIdentity") or ""
        mine = holder == self.identity and not self._yielded
        if holder and not mine and not self._expired(record):
            return False
        body = {**lease, "spec": {**record, **self._record(record if mine else None)}}
        updated = await self.api.request("PUT", self.path, body=body)
        self._observe(updated)
        return True

    def _record(self, current: JSON | None) -> JSON:
        """Our Lease spec: a renewal keeps acquireTime and the transition count, an acquisition bumps both."""
        now = micro_time()
        transitions = int((self._observed or {}).get("leaseTransitions") or 0)
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, math.ceil(self.lease_duration_s)),
            "acquireTime": (current or {}).get("acquireTime") or now,
            "renewTime": now,
            "leaseTransitions": transitions if current is not None or self._observed is None else transitions + 1,
        }

    def _observe(self, lease: JSON) -> None:
        spec = lease.get("spec")
        spec = dict(spec) if isinstance(spec, dict) else {}
        if spec != self._observed:
            self._observed = spec
            self._observed_at = time.monotonic()

    def _expired(self, record: JSON) -> bool:
        duration = record.get("leaseDurationSeconds")
        seconds = float(duration) if isinstance(duration, int | float) else self.lease_duration_s
        return time.monotonic() > self._observed_at + seconds

    async def _release(self) -> None:
        """Give the Lease up: empty holder, one second left, so the next candidate's next read takes it."""
        try:
            lease = await self.api.request("GET", self.path)
            spec: Any = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            now = micro_time()
            released = {**spec, "holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": now, "renewTime": now}
            await self.api.request("PUT", self.path, body={**lease, "spec": released})
            log.info("released the lease", lease=f"{self.namespace}/{self.name}", identity=self.identity)
        except (KubeApiError, aiohttp.ClientError, OSError, ValueError) as exc:
            log.warning("could not release the lease; the others wait for it to expire", error=str(exc))
