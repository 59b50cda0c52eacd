"""Memory comes back after a large shrink (the benchmark measures it end to end)."""

from __future__ import annotations

import gc

import pytest

from stackway.controlplane import ControlPlane
from stackway.demo.manifests import gateway, gateway_class, http_route, service_with_endpoints
from stackway.memory import ShrinkWatcher
from stackway.resources.raw import ObjectKey, RawObject, key_of


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS")).split()[1]) / 1024


def objects(n: int) -> dict[ObjectKey, RawObject]:
    docs = [gateway_class(), gateway("gw", "default", 80), *service_with_endpoints("svc", "default", 8080)]
    docs += [http_route(f"r{i}", "default", "gw", {"svc": 1}, path=f"/r/{i}") for i in range(n)]
    return {key_of(d): RawObject(key_of(d), d) for d in docs}


def test_watcher_releases_only_after_a_large_shrink() -> None:
    watcher = ShrinkWatcher(ratio=0.8, minimum=100)
    assert not watcher.observe(1000)
    assert not watcher.observe(900)
    assert watcher.observe(700)
    assert not watcher.observe(690)


def test_rss_returns_close_to_where_it_started() -> None:
    control, watcher = ControlPlane(), ShrinkWatcher()
    control.update(objects(10))
    watcher.observe(12)
    start = rss_mib()
    control.update(objects(5000))
    watcher.observe(5002)
    grown = rss_mib()
    control.update(objects(10))
    assert watcher.observe(12)
    after = rss_mib()
    gc.unfreeze()  # the watcher froze this process's heap; leave it as other tests expect it
    assert grown - start > 20, "the load must have grown the process for the test to mean anything"
    assert after - start < 0.35 * (grown - start), (start, grown, after)


def test_a_large_growth_freezes_the_heap_and_a_shrink_thaws_it_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from stackway import memory

    calls: list[str] = []
    monkeypatch.setattr(memory.gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(memory.gc, "unfreeze", lambda: calls.append("unfreeze"))
    monkeypatch.setattr(memory.gc, "collect", lambda: calls.append("collect") or 0)
    watcher = ShrinkWatcher(ratio=0.8, minimum=100, growth=1.25)
    watcher.observe(1000)
    assert calls == ["collect", "freeze"]
    watcher.observe(1100)  # growing by less than a quarter: nothing
    assert calls == ["collect", "freeze"]
    watcher.observe(500)
    assert calls[2:] == ["unfreeze", "collect", "freeze"]
    assert gc.isenabled()
