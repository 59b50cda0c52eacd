"""Apply a LoadBalancerSpec to Octavia and Neutron: idempotent, bounded, and leak-free under faults.

Every mutating call is followed by a wait for ACTIVE (Octavia answers 409 to anything else while the LB is
PENDING_*). When a call fails in a way that may or may not have taken effect (timeout, reset, 5xx), the
actuator never repeats it blindly: it reads Octavia again and diffs anew, so a create whose answer was lost
is adopted, not duplicated. That is what keeps the count at one LB per Service through faults.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import Any

import structlog

from stackway.openstack.clients.errors import Conflict, NotFound, OpenStackError
from stackway.openstack.clients.loadbalancer import LoadBalancerAPI
from stackway.openstack.clients.network import NetworkAPI
from stackway.openstack.loadbalancer import names
from stackway.openstack.loadbalancer.diff import (
    STRUCTURAL,
    Observed,
    ObservedPool,
    Step,
    immutable_conflicts,
    sharing_conflicts,
    steps,
)
from stackway.openstack.loadbalancer.spec import FloatingIPSpec, LoadBalancerSpec
from stackway.openstack.retry import Backoff

log = structlog.get_logger("stackway.loadbalancer")

Json = dict[str, Any]
Progress = Callable[[str, str], None]


class LoadBalancerError(Exception):
    """A problem the user has to see (Event/status); retrying the same input will not fix it."""


class StillPending(Exception):
    """The LB did not reach ACTIVE within the deadline; the next reconcile picks it up where it is."""


@dataclass(frozen=True)
class Timing:
    """Waits, tunable for tests; the defaults give a slow cloud 10 minutes, polling quickly at first."""

    active_timeout: float = 600.0
    poll: Backoff = field(default_factory=lambda: Backoff(initial=0.25, factor=1.5, cap=5.0, jitter=0.2))
    retry: Backoff = field(default_factory=lambda: Backoff(initial=0.5, factor=2.0, cap=10.0))
    attempts: int = 8


@dataclass(frozen=True)
class Result:
    lb: Json
    address: str
    floating_ip: Json | None
    applied: tuple[Step, ...]


class Actuator:
    def __init__(
        self,
        octavia: LoadBalancerAPI,
        neutron: NetworkAPI,
        *,
        timing: Timing | None = None,
        sleep: Callable[[float], None] = time.sleep,
        progress: Progress | None = None,
    ) -> None:
        self.octavia = octavia
        self.neutron = neutron
        self.timing = timing or Timing()
        self.sleep = sleep
        self.progress = progress or (lambda _name, _status: None)

    # ---- reading -------------------------------------------------------------------------------------

    def find(self, name: str, existing_id: str | None = None) -> Json | None:
        """The LB for a Service: the shared one it names, else the one with its name (oldest if several)."""
        if existing_id:
            try:
                return self.octavia.get_load_balancer(existing_id)
            except NotFound:
                raise LoadBalancerError(f"load-balancer-id {existing_id} names no load balancer") from None
        found = [lb for lb in self.octavia.list_load_balancers(name=name) if lb.get("provisioning_status") != "DELETED"]
        if len(found) > 1:
            log.warning("duplicate load balancers", name=name, ids=[lb["id"] for lb in found])
        found.sort(key=lambda lb: (lb.get("created_at") or "", lb["id"]))
        return found[0] if found else None

    def observe(self, lb: Json) -> Observed:
        """The LB's listeners, pools, members and monitors: 2 calls + 1 per pool + 1 per monitor."""
        listeners = tuple(self.octavia.list_listeners(lb["id"]))
        pools = []
        for pool in self.octavia.list_pools(lb["id"]):
            members = tuple(self.octavia.list_members(pool["id"]))
            monitor = None
            if pool.get("healthmonitor_id"):
                try:
                    monitor = self.octavia.get_health_monitor(pool["healthmonitor_id"])
                except NotFound:
                    monitor = None
            pools.append(ObservedPool(pool, members, monitor))
        return Observed(lb, listeners, tuple(pools))

    def wait_active(self, lb_id: str, name: str) -> Json:
        """Poll until ACTIVE. ERROR raises LoadBalancerError; the deadline raises StillPending."""
        start = time.monotonic()
        for delay in self.timing.poll.delays():
            lb = self.octavia.get_load_balancer(lb_id)
            status = str(lb.get("provisioning_status"))
            self.progress(name, status)
            if status == "ACTIVE":
                return lb
            if status == "ERROR":
                raise LoadBalancerError(f"load balancer {name} ({lb_id}) went to ERROR")
            if time.monotonic() - start + delay > self.timing.active_timeout:
                raise StillPending(f"load balancer {name} ({lb_id}) is still {status}")
            self.sleep(delay)
        raise AssertionError("unreachable")

    def wait_gone(self, lb_id: str, name: str) -> None:
        start = time.monotonic()
        for delay in self.timing.poll.delays():
            try:
                status = str(self.octavia.get_load_balancer(lb_id).get("provisioning_status"))
            except NotFound:
                self.progress(name, "DELETED")
                return
            self.progress(name, status)
            if status == "DELETED":
                return
            if time.monotonic() - start + delay > self.timing.active_timeout:
                raise StillPending(f"load balancer {name} ({lb_id}) is still {status}")
            self.sleep(delay)

    # ---- ensure ---------------------------------------------------------------------------------------

    def ensure(self, spec: LoadBalancerSpec) -> Result:
        """Make Octavia match ``spec`` and give the VIP its floating IP; returns the address to publish."""
        applied: list[Step] = []
        delays = self.timing.retry.delays()
        failures = 0
        while True:
            try:
                lb = self._converge(spec, applied)
                break
            except OpenStackError as err:
                if not err.retryable or failures >= self.timing.attempts:
                    raise
                failures += 1
                delay = next(delays)
                log.info("retrying after an OpenStack fault", lb=spec.name, error=str(err), delay=round(delay, 2))
                self.sleep(delay)
        fip = self._ensure_floating_ip(spec, lb)
        address = str(fip["floating_ip_address"]) if fip else str(lb.get("vip_address") or "")
        return Result(lb, address, fip, tuple(applied))

    def _converge(self, spec: LoadBalancerSpec, applied: list[Step]) -> Json:
        """Read, diff, apply; re-read after a fault (the caller retries) so no step is ever applied twice."""
        lb = self.find(spec.name, spec.existing_id)
        owned = lb is not None and lb.get("name") == spec.name
        if lb is not None and lb.get("provisioning_status") == "ERROR" and owned:
            log.warning("load balancer in ERROR: deleting and recreating", lb=spec.name, id=lb["id"])
            # Detach (never delete) the floating IP: the new LB gets the same address back.
            self._release_all(lb, FloatingIPSpec(wanted=False, keep=True))
            self._delete_lb(lb, spec.name)
            lb = None
        if lb is not None and str(lb.get("provisioning_status", "")).startswith("PENDING"):
            lb = self.wait_active(lb["id"], spec.name)
        while True:
            observed = self.observe(lb) if lb is not None else None
            if observed is not None:
                conflicts = immutable_conflicts(spec, observed) + sharing_conflicts(spec, observed, spec.max_shared)
                if conflicts:
                    raise LoadBalancerError("; ".join(conflicts))
            reread = False
            for step in steps(spec, observed):
                lb_id = self._apply(step, lb)
                applied.append(step)
                lb = self.wait_active(lb_id, spec.name)
                if step.action == "create_load_balancer" and not spec.serial:
                    self._check_children(lb, spec)
                    break
                if step.action in STRUCTURAL:
                    reread = True
                    break
            if lb is None:
                raise AssertionError("a load balancer exists after converging")
            if not reread:
                return lb

    def _check_children(self, lb: Json, spec: LoadBalancerSpec) -> None:
        """After a fully-populated create the LB is ACTIVE; its children must be too, or the provider
        built them only in the database (seen with some providers/releases) and the LB would never change."""
        if not spec.listeners:
            return
        children = [*self.octavia.list_listeners(lb["id"]), *self.octavia.list_pools(lb["id"])]
        stuck = sorted(str(c.get("name")) for c in children if c.get("provisioning_status") != "ACTIVE")
        if stuck or len(children) < 2 * len(spec.listeners):
            raise LoadBalancerError(
                f"the Octavia provider left {', '.join(stuck) or 'children'} unbuilt after a fully-populated create "
                f"of {spec.name}; run stackway with --serial-api-calls for this provider"
            )

    def _apply(self, step: Step, lb: Json | None) -> str:
        """One call; a 409 (LB immutable while PENDING_*) is waited out here, everything else propagates."""
        for attempt in range(self.timing.attempts):
            try:
                return self._call(step, lb)
            except Conflict:
                if lb is None or attempt == self.timing.attempts - 1:
                    raise
                self.wait_active(lb["id"], step.name)
        raise AssertionError("unreachable")

    def _call(self, step: Step, lb: Json | None) -> str:
        o = self.octavia
        a, target, body = step.action, step.target or "", step.body
        log.info("octavia", action=a, name=step.name)
        if a == "create_load_balancer":
            return str(o.create_load_balancer(body)["id"])
        if lb is None:
            raise AssertionError(f"{a} needs a load balancer")
        if a == "update_load_balancer":
            o.update_load_balancer(target, body)
        elif a == "create_listener":
            o.create_listener(body)
        elif a == "update_listener":
            o.update_listener(target, body)
        elif a == "delete_listener":
            o.delete_listener(target)
        elif a == "create_pool":
            o.create_pool(body)
        elif a == "update_pool":
            o.update_pool(target, body)
        elif a == "delete_pool":
            o.delete_pool(target)
        elif a == "replace_members":
            o.replace_members(target, body["members"])
        elif a == "create_health_monitor":
            o.create_health_monitor(body)
        elif a == "update_health_monitor":
            o.update_health_monitor(target, body)
        elif a == "delete_health_monitor":
            o.delete_health_monitor(target)
        else:
            raise AssertionError(f"unknown step {a}")
        return str(lb["id"])

    # ---- floating IPs -------------------------------------------------------------------------------

    def _ensure_floating_ip(self, spec: LoadBalancerSpec, lb: Json) -> Json | None:
        want = spec.floating_ip
        port = lb.get("vip_port_id")
        if not port or (spec.existing_id and lb.get("name") != spec.name):
            return None
        attached = self.neutron.list_floating_ips(port_id=port)
        if not want.wanted:
            for fip in attached:
                self._release(fip, want)
            return None
        if attached:
            return attached[0]
        return self._retrying(lambda: self._attach(want, port), lambda: self._first(port))

    def _first(self, port: str) -> Json | None:
        found = self.neutron.list_floating_ips(port_id=port)
        return found[0] if found else None

    def _retrying(self, act: Callable[[], Json], already: Callable[[], Json | None]) -> Json:
        """Retry ``act`` after faults, but first check whether the faulted call took effect after all."""
        delays = self.timing.retry.delays()
        for attempt in range(self.timing.attempts):
            try:
                return act()
            except OpenStackError as err:
                if not err.retryable or attempt == self.timing.attempts - 1:
                    raise
                self.sleep(next(delays))
                done = already()
                if done is not None:
                    return done
        raise AssertionError("unreachable")

    def _attach(self, want: FloatingIPSpec, port: str) -> Json:
        if want.address:
            matches = self.neutron.list_floating_ips(floating_ip_address=want.address)
            if not matches:
                raise LoadBalancerError(f"spec.loadBalancerIP {want.address} is not an existing floating IP")
            fip = matches[0]
            if fip.get("port_id") and fip["port_id"] != port:
                raise LoadBalancerError(
                    f"spec.loadBalancerIP {want.address} is already associated with port {fip['port_id']}"
                )
            return self.neutron.update_floating_ip(fip["id"], {"port_id": port})
        # One of ours left unattached (an LB recreated after ERROR, a create whose answer was lost, a crash
        # between create and associate): reuse it, so the Service keeps its address and nothing leaks.
        for fip in self.neutron.list_floating_ips(description=want.description):
            if not fip.get("port_id"):
                return self.neutron.update_floating_ip(fip["id"], {"port_id": port})
        if not want.network_id:
            raise LoadBalancerError("no floating network to allocate a floating IP from")
        body: Json = {"floating_network_id": want.network_id, "port_id": port, "description": want.description}
        subnet = want.subnet_id or self._match_subnet(want)
        if subnet:
            body["subnet_id"] = subnet
        return self.neutron.create_floating_ip(body)

    def _match_subnet(self, want: FloatingIPSpec) -> str | None:
        """OCCM's ``floating-subnet`` pattern: a glob, ``~regex``, ``!`` negates; first match by name wins."""
        pattern = want.subnet_pattern
        if not pattern or not want.network_id:
            return None
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        for subnet in sorted(self.neutron.list_subnets(network_id=want.network_id), key=lambda s: s.get("name", "")):
            name = str(subnet.get("name", ""))
            hit = bool(re.search(body[1:], name)) if body.startswith("~") else fnmatch(name, body)
            if hit != negate:
                return str(subnet["id"])
        raise LoadBalancerError(f"no subnet of floating network {want.network_id} matches {pattern!r}")

    def _release(self, fip: Json, want: FloatingIPSpec) -> None:
        """Delete a floating IP only if we made it (its description says so) and it is not kept; else detach."""
        ours = str(fip.get("description") or "").startswith(names.FIP_DESCRIPTION_PREFIX)
        try:
            if ours and not want.keep:
                self.neutron.delete_floating_ip(fip["id"])
            elif fip.get("port_id"):
                self.neutron.update_floating_ip(fip["id"], {"port_id": None})
        except NotFound:
            pass

    # ---- delete -------------------------------------------------------------------------------------

    def delete(self, name: str, floating_ip: FloatingIPSpec, existing_id: str | None = None) -> bool:
        """Remove the Service's LB (or, on a shared LB, only its listeners); True when something was there."""
        lb = self.find(name) if not existing_id else self._get_or_none(existing_id)
        if lb is None:
            if not existing_id:
                self._release_unattached(floating_ip)
            return False
        if lb.get("name") != name:
            self._leave_shared(lb, name)
            return True
        self._release_all(lb, floating_ip)
        self._delete_lb(lb, name)
        self._release_unattached(floating_ip)
        return True

    def _release_all(self, lb: Json, floating_ip: FloatingIPSpec) -> None:
        port = lb.get("vip_port_id")
        if port:
            for fip in self.neutron.list_floating_ips(port_id=port):
                self._release(fip, floating_ip)

    def _release_unattached(self, floating_ip: FloatingIPSpec) -> None:
        """Floating IPs we made for this Service that no port holds any more (a crash between allocate and
        associate, or an LB that vanished under us): deleted unless the Service asked to keep them."""
        if floating_ip.keep or not floating_ip.description:
            return
        for fip in self.neutron.list_floating_ips(description=floating_ip.description):
            if not fip.get("port_id"):
                self._release(fip, floating_ip)

    def _get_or_none(self, lb_id: str) -> Json | None:
        try:
            return self.octavia.get_load_balancer(lb_id)
        except NotFound:
            return None

    def _delete_lb(self, lb: Json, name: str) -> None:
        """Cascade delete; a 409 waits out PENDING_*, a lost answer is checked before asking again."""
        delays = self.timing.retry.delays()
        for attempt in range(self.timing.attempts):
            last = attempt == self.timing.attempts - 1
            try:
                self.octavia.delete_load_balancer(lb["id"], cascade=True)
                break
            except NotFound:
                return
            except Conflict:
                if last:
                    raise
                self._wait_settled(lb["id"], name)
            except OpenStackError as err:
                if not err.retryable or last:
                    raise
                self.sleep(next(delays))
                current = self._get_or_none(lb["id"])
                if current is None:
                    return
                if current.get("provisioning_status") in ("PENDING_DELETE", "DELETED"):
                    break
        self.wait_gone(lb["id"], name)

    def _wait_settled(self, lb_id: str, name: str) -> None:
        """Wait out PENDING_* before a delete; ERROR counts as settled (it can be deleted)."""
        try:
            self.wait_active(lb_id, name)
        except LoadBalancerError:
            return

    def _leave_shared(self, lb: Json, name: str) -> None:
        observed = self.observe(lb)
        pools = {p.pool["id"]: p for p in observed.pools}
        for listener in observed.listeners:
            if names.owns_child(str(listener.get("name")), name):
                for step in [Step("delete_listener", str(listener["name"]), listener["id"])] + (
                    [Step("delete_pool", "", str(listener["default_pool_id"]))]
                    if listener.get("default_pool_id") in pools
                    else []
                ):
                    self._apply(step, lb)
                    self.wait_active(lb["id"], name)
        tags = [t for t in lb.get("tags") or [] if t != name]
        if tags != list(lb.get("tags") or []):
            self._apply(Step("update_load_balancer", name, lb["id"], {"tags": tags}), lb)
            self.wait_active(lb["id"], name)
