"""The incremental xDS build gives exactly what a build from nothing gives, and its assembled bytes are the
deterministic serialisation of the plain RouteConfiguration message."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import yaml

from stackway.ir import model as ir
from stackway.ir.serialize import from_data
from stackway.xds.build import BuildMemo, build_incremental, build_snapshot
from stackway.xds.routes import build_route_config
from stackway.xds.snapshot import ROUTE, Snapshot, resource_version
from stackway.xds.validate import InvalidConfig

GOLDENS = sorted((Path(__file__).parents[1] / "golden" / "translator").glob("*.out.yaml"))


def route_configs(config: ir.IR) -> dict[str, ir.RouteConfig]:
    return {
        fc.route_config.name: fc.route_config
        for lst in config.listeners
        for fc in lst.filter_chains
        if fc.route_config is not None
    }


def assert_same(a: Snapshot, b: Snapshot) -> None:
    assert a.versions == b.versions
    assert a.version == b.version
    for type_url, by_name in a.resources.items():
        for name, msg in by_name.items():
            assert msg.SerializeToString(deterministic=True) == b.resources[type_url][name].SerializeToString(
                deterministic=True
            )


@pytest.mark.parametrize("case", GOLDENS, ids=[c.name.removesuffix(".out.yaml") for c in GOLDENS])
def test_assembled_route_configs_are_the_plain_messages(case: Path) -> None:
    config = from_data(ir.IR, yaml.safe_load(case.read_text())["ir"])
    snapshot = build_snapshot(config)
    for name, rcfg in route_configs(config).items():
        plain = build_route_config(rcfg)
        assert snapshot.of_type(ROUTE)[name] == plain
        assert snapshot.versions[ROUTE][name] == resource_version(plain)
    for type_url, by_name in snapshot.resources.items():
        for name, msg in by_name.items():
            assert snapshot.versions[type_url][name] == resource_version(msg)


CLUSTERS = [f"service/ns/svc{i}/80" for i in range(6)]


def random_route(rng: random.Random, name: str) -> ir.Route:
    path = rng.choice(
        [
            ir.PathMatch("PathPrefix", f"/{name}"),
            ir.PathMatch("Exact", f"/{name}/x"),
            ir.PathMatch("RegularExpression", f"/{name}/[0-9]+"),
            ir.PathMatch("PathPrefix", "/"),
        ]
    )
    headers = tuple(ir.StringMatch(f"h{i}", "v" * (i + 1)) for i in range(rng.randint(0, 2)))
    action: ir.Action
    kind = rng.random()
    if kind < 0.6:
        picked = rng.sample(CLUSTERS, rng.randint(1, 3))
        action = ir.Forward(
            tuple(ir.WeightedCluster(c, rng.randint(1, 5)) for c in picked),
            mirrors=(ir.Mirror(rng.choice(CLUSTERS), 500_000),) if rng.random() < 0.2 else (),
            timeout_ms=rng.choice([None, 0, 1500]),
        )
    elif kind < 0.8:
        action = ir.Redirect(status_code=rng.choice([301, 302]), hostname="example.com")
    else:
        action = ir.DirectResponse(rng.choice([404, 500]), body="x" * rng.randint(0, 200))
    return ir.Route(
        name=name,
        match=ir.Match(path=path, headers=headers),
        action=action,
        request_headers=ir.HeaderModifier(set=(("x-a", "b"),)) if rng.random() < 0.2 else None,
    )


def random_config(rng: random.Random) -> ir.IR:
    vhosts = tuple(
        ir.VirtualHost(
            name=host,
            domains=(host,),
            routes=tuple(random_route(rng, f"r/{host}/{i}") for i in range(rng.randint(0, 40))),
        )
        for host in ("*", "a.example", "b.example")
    )
    chain = ir.FilterChain(name="*", server_names=(), certificates=(), route_config=ir.RouteConfig("route/l", vhosts))
    listener = ir.Listener(name="listener/l", address="0.0.0.0", port=8080, protocol="HTTP", filter_chains=(chain,))
    return ir.IR(listeners=(listener,), clusters=tuple(ir.Cluster(c) for c in CLUSTERS))


def edit(rng: random.Random, config: ir.IR, step: int) -> ir.IR:
    """A new IR sharing most objects with `config`, as an incremental translation hands it over."""
    listener = config.listeners[0]
    chain = listener.filter_chains[0]
    assert chain.route_config is not None
    vhosts = list(chain.route_config.virtual_hosts)
    index = rng.randrange(len(vhosts))
    routes = list(vhosts[index].routes)
    choice = rng.random()
    if choice < 0.4 and routes:
        routes[rng.randrange(len(routes))] = random_route(rng, f"edited/{step}")
    elif choice < 0.6:
        routes.insert(rng.randint(0, len(routes)), random_route(rng, f"added/{step}"))
    elif choice < 0.75 and routes:
        del routes[rng.randrange(len(routes))]
    elif choice < 0.8 and routes:
        routes.append(routes[0])  # the same route object twice
    elif choice < 0.85:
        routes = [*reversed(routes), *(random_route(rng, f"more/{step}/{i}") for i in range(70))]
    elif choice < 0.9:
        endpoints = (ir.Endpoint("10.0.0.1", step),)
        return dataclasses.replace(config, clusters=tuple(ir.Cluster(c, endpoints) for c in CLUSTERS))
    vhosts[index] = dataclasses.replace(vhosts[index], routes=tuple(routes))
    chain = dataclasses.replace(chain, route_config=ir.RouteConfig(chain.route_config.name, tuple(vhosts)))
    return dataclasses.replace(config, listeners=(dataclasses.replace(listener, filter_chains=(chain,)),))


@pytest.mark.parametrize("seed", range(8))
def test_incremental_build_equals_a_build_from_nothing(seed: int) -> None:
    rng = random.Random(seed)
    config = random_config(rng)
    snapshot, memo = build_incremental(config, None)
    for step in range(60):
        config = edit(rng, config, step)
        snapshot, memo = build_incremental(config, memo)
        assert_same(snapshot, build_snapshot(config))


def test_an_invalid_route_fails_both_ways_and_leaves_the_memo_usable() -> None:
    rng = random.Random(1)
    config = random_config(rng)
    _, memo = build_incremental(config, None)
    chain = config.listeners[0].filter_chains[0]
    assert chain.route_config is not None
    bad = ir.Route("bad", ir.Match(), ir.Forward((ir.WeightedCluster("service/ns/missing/80", 1),)))
    first = chain.route_config.virtual_hosts[0]
    broken_vh = dataclasses.replace(first, routes=(*first.routes, bad))
    broken_rc = ir.RouteConfig(chain.route_config.name, (broken_vh, *chain.route_config.virtual_hosts[1:]))
    broken_listener = dataclasses.replace(
        config.listeners[0], filter_chains=(dataclasses.replace(chain, route_config=broken_rc),)
    )
    broken = dataclasses.replace(config, listeners=(broken_listener,))
    with pytest.raises(InvalidConfig, match="bad: unknown cluster service/ns/missing/80"):
        build_snapshot(broken)
    with pytest.raises(InvalidConfig, match="bad: unknown cluster service/ns/missing/80"):
        build_incremental(broken, memo)
    again, _ = build_incremental(config, memo)
    assert_same(again, build_snapshot(config))
    assert isinstance(memo, BuildMemo)


def test_snapshots_carry_their_route_configurations_serialised() -> None:
    """What the xDS server sends without serialising the RouteConfiguration again."""
    snapshot = build_snapshot(random_config(random.Random(2)))
    for name, msg in snapshot.of_type(ROUTE).items():
        assert snapshot.encoded[ROUTE][name] == msg.SerializeToString(deterministic=True)
    changed = snapshot.with_changes({})
    assert changed.encoded == snapshot.encoded


def test_the_cache_sends_the_bytes_the_build_assembled() -> None:
    import asyncio

    from stackway.xds_server.cache import SnapshotCache

    snapshot = build_snapshot(random_config(random.Random(3)))
    cache = SnapshotCache()
    asyncio.run(cache.set(snapshot))
    for name, msg in snapshot.of_type(ROUTE).items():
        packed = cache.pack(ROUTE, name, snapshot.versions[ROUTE][name], msg)
        assert packed.type_url == ROUTE
        assert packed.value == snapshot.encoded[ROUTE][name]
