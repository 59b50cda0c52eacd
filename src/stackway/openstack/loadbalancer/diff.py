"""What Octavia has vs what the spec wants → the fewest mutating calls, in an order Octavia accepts. Pure.

Octavia makes the whole LB immutable (409) while any child is PENDING_*, so every step is one call after
which the actuator waits for ACTIVE; fewer steps is both fewer API calls and less waiting. A new LB is one
fully-populated create; on an existing one only what differs is touched, and members go in one batch call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stackway.openstack.loadbalancer import names
from stackway.openstack.loadbalancer.spec import ListenerSpec, LoadBalancerSpec, MemberSpec, MonitorSpec, PoolSpec

Json = dict[str, Any]


@dataclass(frozen=True)
class ObservedPool:
    pool: Json
    members: tuple[Json, ...]
    monitor: Json | None


@dataclass(frozen=True)
class Observed:
    """One LB as Octavia reports it, with the children the controller reads."""

    lb: Json
    listeners: tuple[Json, ...] = ()
    pools: tuple[ObservedPool, ...] = ()

    @property
    def id(self) -> str:
        return str(self.lb["id"])

    @property
    def status(self) -> str:
        return str(self.lb.get("provisioning_status", ""))


@dataclass(frozen=True)
class Step:
    """One mutating API call. ``target`` is the Octavia ID it acts on, when there is one."""

    action: str
    name: str
    target: str | None = None
    body: Json = field(default_factory=dict)

    def describe(self) -> str:
        detail = ", ".join(f"{k}={v}" for k, v in sorted(self.body.items()) if not isinstance(v, list | dict))
        return f"{self.action} {self.name}" + (f" ({detail})" if detail else "")


IMMUTABLE_LB_FIELDS = ("vip_subnet_id", "vip_network_id", "vip_port_id", "flavor_id", "availability_zone", "provider")


def immutable_conflicts(spec: LoadBalancerSpec, observed: Observed) -> list[str]:
    """Fields Octavia cannot change on an existing LB that the spec asks to change.

    These are reported, never 'fixed' by deleting a working LB behind the user's back.
    """
    conflicts = []
    for key in IMMUTABLE_LB_FIELDS:
        wanted = getattr(spec, key)
        have = observed.lb.get(key)
        if key == "provider" and wanted in (None, "octavia") and have in ("amphora", "octavia"):
            continue
        if wanted and have and wanted != have:
            conflicts.append(f"{key} is {have} on the existing load balancer; it cannot change to {wanted}")
    return conflicts


def sharing_conflicts(spec: LoadBalancerSpec, observed: Observed, max_shared: int) -> list[str]:
    """Why this Service cannot join (or stay on) a load balancer named by ``load-balancer-id``: too many
    Services on it already, or a port another Service's listener holds (Octavia would answer 409 forever)."""
    if observed.lb.get("name") == spec.name:
        return []
    conflicts = []
    sharers = {t for t in observed.lb.get("tags") or [] if t.startswith(names.LB_PREFIX)} | {observed.lb.get("name")}
    if spec.name not in sharers and len(sharers) >= max_shared:
        conflicts.append(
            f"load balancer {observed.id} is already shared by {len(sharers)} Services (max-shared-lb {max_shared})"
        )
    foreign = {
        (li.get("protocol_port"), li.get("protocol")): li.get("name")
        for li in observed.listeners
        if not names.owns_child(str(li.get("name")), spec.name)
    }
    for listener in spec.listeners:
        other = foreign.get((listener.protocol_port, listener.protocol))
        if other:
            conflicts.append(f"port {listener.protocol_port}/{listener.protocol} is taken on {observed.id} by {other}")
    return conflicts


def _member_key(m: Json | MemberSpec) -> tuple[Any, ...]:
    if isinstance(m, MemberSpec):
        return (m.name, m.address, m.protocol_port, m.subnet_id or None, m.monitor_port or None)
    return (m.get("name"), m.get("address"), m.get("protocol_port"), m.get("subnet_id"), m.get("monitor_port"))


def members_differ(wanted: tuple[MemberSpec, ...], have: tuple[Json, ...]) -> bool:
    """Compared as sets: a batch update with the same set would still make the LB PENDING_UPDATE."""
    want = {_member_key(m) for m in wanted}
    got = {_member_key(m) for m in have}
    if any(key[3] is None for key in want):
        got = {(*key[:3], None, key[4]) for key in got}
    return want != got


def _changed(wanted: Json, have: Json) -> Json:
    changed: Json = {}
    for key, value in wanted.items():
        current = have.get(key)
        if isinstance(value, list):
            if sorted(value) != sorted(current or []):
                changed[key] = value
        elif key == "allowed_cidrs" and value is None:
            if current:
                changed[key] = None
        elif value != current and not (key == "insert_headers" and not value and not current):
            changed[key] = value
    return changed


def _monitor_fields(monitor: MonitorSpec) -> Json:
    body = monitor.body()
    return {k: v for k, v in body.items() if k not in ("type", "name")}


def _pool_steps(index_pool: PoolSpec, have: ObservedPool, listener_name: str) -> list[Step]:
    steps: list[Step] = []
    pool = have.pool
    if pool.get("lb_algorithm") != index_pool.lb_algorithm:
        steps.append(Step("update_pool", index_pool.name, pool["id"], {"lb_algorithm": index_pool.lb_algorithm}))
    if members_differ(index_pool.members, have.members):
        members = [m.body() for m in index_pool.members]
        steps.append(Step("replace_members", index_pool.name, pool["id"], {"members": members}))
    wanted, current = index_pool.monitor, have.monitor
    if wanted is None and current is not None:
        steps.append(Step("delete_health_monitor", str(current.get("name") or ""), current["id"]))
    elif wanted is not None and current is None:
        steps.append(Step("create_health_monitor", wanted.name, pool["id"], {**wanted.body(), "pool_id": pool["id"]}))
    elif wanted is not None and current is not None:
        if current.get("type") != wanted.type:
            steps.append(Step("delete_health_monitor", wanted.name, current["id"]))
            steps.append(
                Step("create_health_monitor", wanted.name, pool["id"], {**wanted.body(), "pool_id": pool["id"]})
            )
        else:
            fields = _changed(_monitor_fields(wanted), current)
            if fields:
                steps.append(Step("update_health_monitor", wanted.name, current["id"], fields))
    return steps


def _recreate(listener: ListenerSpec, lb_id: str) -> Step:
    """A new listener on an existing LB; its pool follows once the listener has an ID (see STRUCTURAL)."""
    return Step("create_listener", listener.name, lb_id, {**listener.plain_body(), "loadbalancer_id": lb_id})


#: Steps after which the next steps depend on IDs Octavia just assigned: the actuator re-reads and re-diffs.
STRUCTURAL = frozenset({"create_load_balancer", "create_listener", "create_pool"})


def steps(spec: LoadBalancerSpec, observed: Observed | None) -> list[Step]:
    """The calls that take ``observed`` to ``spec``; empty when nothing differs (no call, no PENDING_UPDATE)."""
    if observed is None:
        return [Step("create_load_balancer", spec.name, None, spec.create_body())]
    lb_id = observed.id
    owned = observed.lb.get("name") == spec.name
    result: list[Step] = []
    if owned:
        # Tags only grow here: Services sharing this LB (load-balancer-id) have added theirs.
        tags = sorted({*(observed.lb.get("tags") or []), *spec.tags})
        fields = _changed({"description": spec.description, "tags": tags}, observed.lb)
        if fields:
            result.append(Step("update_load_balancer", spec.name, lb_id, fields))
    elif spec.name not in (observed.lb.get("tags") or []):
        tags = sorted({*(observed.lb.get("tags") or []), spec.name})
        result.append(Step("update_load_balancer", str(observed.lb.get("name") or lb_id), lb_id, {"tags": tags}))
    pools_by_id = {p.pool["id"]: p for p in observed.pools}
    listeners_by_name = {str(li.get("name")): li for li in observed.listeners}
    wanted_names = {listener.name for listener in spec.listeners}
    # Removals first: a port that moved from one index to another must free its protocol_port before the
    # new listener claims it (Octavia refuses two listeners on one port).
    for name, stale in sorted(listeners_by_name.items()):
        if names.owns_child(name, spec.name) and name not in wanted_names:
            result.extend(_delete_listener(stale, pools_by_id))
    for listener in spec.listeners:
        have = listeners_by_name.get(listener.name)
        if have is None:
            result.append(_recreate(listener, lb_id))
            continue
        pool = pools_by_id.get(str(have.get("default_pool_id")))
        if (have.get("protocol"), have.get("protocol_port")) == (listener.protocol, listener.protocol_port) and (
            not have.get("default_pool_id")
        ):
            body = {**listener.pool.plain_body(), "listener_id": have["id"]}
            result.append(Step("create_pool", listener.pool.name, have["id"], body))
            continue
        if (have.get("protocol"), have.get("protocol_port")) != (listener.protocol, listener.protocol_port) or (
            pool is None or pool.pool.get("protocol") != listener.pool.protocol
        ):
            result.extend(_delete_listener(have, pools_by_id))
            result.append(_recreate(listener, lb_id))
            continue
        fields = _changed(listener.mutable_fields(), have)
        if fields:
            result.append(Step("update_listener", listener.name, have["id"], fields))
        result.extend(_pool_steps(listener.pool, pool, listener.name))
    return result


def _delete_listener(listener: Json, pools_by_id: dict[str, ObservedPool]) -> list[Step]:
    """The listener, then its pool (which takes members and monitor with it)."""
    out = [Step("delete_listener", str(listener.get("name")), listener["id"])]
    pool = pools_by_id.get(str(listener.get("default_pool_id")))
    if pool is not None:
        out.append(Step("delete_pool", str(pool.pool.get("name")), pool.pool["id"]))
    return out
