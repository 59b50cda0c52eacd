"""Leader election on a Lease in the fake API server, with client-go's rules at test-sized timings.

What matters is measured, not assumed: at most one leader at any instant (leadership intervals taken from
the electors' own transition records never overlap), how long a hand-over takes after a clean release
and after a crash, and that a leader cut off from the API server steps down before its Lease can expire.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.fakes.kube_apiserver import FakeKubeApiServer

from stackway.providers.kubernetes import KubeApi
from stackway.providers.kubernetes.leader import LEASE_NAME, LeaderElector

pytestmark = pytest.mark.timeout(30)

NS = "stackway-system"
LEASE_S, RENEW_S, RETRY_S = 2.0, 1.0, 0.1


@pytest.fixture
async def api() -> AsyncIterator[FakeKubeApiServer]:
    async with FakeKubeApiServer(namespaces=("default", NS)) as server:
        yield server


async def elector(api: FakeKubeApiServer, tmp_path: Path, name: str, clients: list[KubeApi]) -> LeaderElector:
    client = await KubeApi.connect(api.write_kubeconfig(tmp_path / f"{name}.kubeconfig"), request_timeout_s=2.0)
    clients.append(client)
    return LeaderElector(
        client,
        NS,
        identity=name,
        lease_duration_s=LEASE_S,
        renew_deadline_s=RENEW_S,
        retry_period_s=RETRY_S,
    )


async def until(predicate: object, limit: float) -> float:
    """Seconds until `predicate()` holds; fails after `limit`."""
    assert callable(predicate)
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < limit, "condition not reached in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def intervals(electors: list[LeaderElector], end: float) -> list[tuple[float, float, str]]:
    out = []
    for e in electors:
        start: float | None = None
        for at, leading in e.transitions:
            if leading:
                start = at
            elif start is not None:
                out.append((start, at, e.identity))
                start = None
        if start is not None:
            out.append((start, end, e.identity))
    return sorted(out)


def assert_never_two_leaders(electors: list[LeaderElector]) -> None:
    spans = intervals(electors, time.monotonic())
    for (_, end, who), (start, _, other) in itertools.pairwise(spans):
        assert start >= end, f"{who} and {other} led at the same time"


async def close(electors: list[LeaderElector], clients: list[KubeApi]) -> None:
    for e in electors:
        await e.stop()
    for c in clients:
        await c.close()


async def test_one_leader_and_clean_release_hands_over_within_a_retry_period(
    api: FakeKubeApiServer, tmp_path: Path
) -> None:
    clients: list[KubeApi] = []
    a, b, c = [await elector(api, tmp_path, n, clients) for n in ("a", "b", "c")]
    try:
        a.start()
        await until(lambda: a.is_leader, 2.0)
        b.start()
        c.start()
        await asyncio.sleep(LEASE_S + 0.5)  # longer than a lease: renewals keep it, nobody else takes it
        assert a.is_leader
        assert not b.is_leader
        assert not c.is_leader
        lease = api.get("coordination.k8s.io/v1", "Lease", LEASE_NAME, NS)
        assert lease["spec"]["holderIdentity"] == "a"
        assert lease["spec"]["leaseDurationSeconds"] == 2
        transitions_before = lease["spec"]["leaseTransitions"]

        released_at = time.monotonic()
        await a.stop()
        took = await until(lambda: b.is_leader or c.is_leader, 2.0)
        print(f"\nfail-over after a clean release: {took * 1000:.0f} ms (retry period {RETRY_S * 1000:.0f} ms)")
        assert took < 3 * RETRY_S + 0.2
        assert time.monotonic() - released_at < LEASE_S  # not a wait for expiry
        await asyncio.sleep(0.3)
        assert b.is_leader != c.is_leader
        lease = api.get("coordination.k8s.io/v1", "Lease", LEASE_NAME, NS)
        assert lease["spec"]["holderIdentity"] in ("b", "c")
        assert lease["spec"]["leaseTransitions"] == transitions_before + 1
        assert_never_two_leaders([a, b, c])
    finally:
        await close([a, b, c], clients)


async def test_a_crashed_leader_is_replaced_after_the_lease_expires(api: FakeKubeApiServer, tmp_path: Path) -> None:
    clients: list[KubeApi] = []
    a, b = [await elector(api, tmp_path, n, clients) for n in ("a", "b")]
    crashed = asyncio.create_task(a.run())
    try:
        await until(lambda: a.is_leader, 2.0)
        b.start()
        await asyncio.sleep(0.3)
        crashed.cancel()  # no release: the process died
        await asyncio.gather(crashed, return_exceptions=True)
        took = await until(lambda: b.is_leader, LEASE_S + 1.0)
        print(f"\nfail-over after a crash: {took * 1000:.0f} ms (lease duration {LEASE_S * 1000:.0f} ms)")
        assert LEASE_S - 0.5 < took < LEASE_S + 3 * RETRY_S + 0.3
        assert_never_two_leaders([a, b])
    finally:
        await close([a, b], clients)


async def test_a_leader_that_cannot_renew_steps_down_before_its_lease_expires(
    api: FakeKubeApiServer, tmp_path: Path
) -> None:
    clients: list[KubeApi] = []
    a, b = [await elector(api, tmp_path, n, clients) for n in ("a", "b")]
    stopped = asyncio.Event()

    async def on_stopped() -> None:
        stopped.set()

    a.on_stopped_leading = on_stopped
    try:
        a.start()
        await until(lambda: a.is_leader, 2.0)
        b.start()
        await asyncio.sleep(0.3)
        # the API server refuses every Lease write from now on (a partition of the leader from etcd)
        fault = api.inject_fault(503, count=10_000, verb="update", plural="leases")
        partitioned_at = time.monotonic()
        await asyncio.wait_for(stopped.wait(), LEASE_S)
        stepped_down = time.monotonic() - partitioned_at
        print(f"\npartitioned leader stepped down after {stepped_down * 1000:.0f} ms (renew deadline {RENEW_S:g} s)")
        assert not a.is_leader
        assert stepped_down < RENEW_S + RETRY_S + 0.3 < LEASE_S
        assert not b.is_leader  # b cannot write the Lease either, and before expiry it does not try
        fault.count = 1  # heal: one more refusal, then the API server accepts writes again
        healed_at = time.monotonic()
        took = await until(lambda: a.is_leader or b.is_leader, LEASE_S + 1.0)
        print(f"a new leader {took * 1000:.0f} ms after the API server healed")
        assert_never_two_leaders([a, b])
    finally:
        await close([a, b], clients)
    assert healed_at > partitioned_at


async def test_api_server_down_the_leader_steps_down_and_leadership_returns(
    api: FakeKubeApiServer, tmp_path: Path
) -> None:
    clients: list[KubeApi] = []
    (a,) = [await elector(api, tmp_path, "a", clients)]
    try:
        a.start()
        await until(lambda: a.is_leader, 2.0)
        down = asyncio.create_task(api.restart(downtime=RENEW_S + 0.5))
        took = await until(lambda: not a.is_leader, RENEW_S + 1.0)
        assert took < RENEW_S + RETRY_S + 0.3
        await down
        # its own old record counts as someone else's until it expires: no instant flip-flop
        await until(lambda: a.is_leader, LEASE_S + 2.0)
        assert [leading for _, leading in a.transitions] == [True, False, True]
    finally:
        await close([a], clients)


async def test_timings_must_leave_room_to_step_down(api: FakeKubeApiServer, tmp_path: Path) -> None:
    client = await KubeApi.connect(api.write_kubeconfig(tmp_path / "kubeconfig"))
    try:
        with pytest.raises(ValueError, match="lease_duration_s > renew_deadline_s"):
            LeaderElector(client, NS, lease_duration_s=10, renew_deadline_s=10, retry_period_s=2)
        assert LeaderElector(client, NS).identity != LeaderElector(client, NS).identity
    finally:
        await client.close()
