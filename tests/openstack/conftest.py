"""Tests against a real OpenStack: the test bed in tests/openstack/testbed (install.sh, up.sh, down.sh).

- Everything under tests/openstack carries the `openstack` marker: `pytest -m "not openstack"` runs the rest.
- The session fixture `testbed` makes sure the test bed is up (up.sh, a fast no-op when it already is),
  sets OS_CLIENT_CONFIG_FILE for the session and yields an `OpenStackTestbed`.
- Where the test bed's packages are not installed (install.sh never ran: not Debian 12, not root), the
  tests that use it are skipped with the reason, unless STACKWAY_REQUIRE_TESTBED=1 (CI sets it): then
  they fail. A failing up.sh always fails them.
- `fault_proxy("load-balancer")` starts a FaultProxy (tests/openstack/faultproxy.py) in front of a service.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.openstack.faultproxy import FaultProxy, write_clouds_yaml

if TYPE_CHECKING:
    from openstack.connection import Connection

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE / "testbed"
INSTALL_SH = SCRIPTS / "install.sh"
UP_SH = SCRIPTS / "up.sh"
ALL_SERVICES = ("octavia", "cinder", "neutron", "glance", "nova")
# service type -> endpoint, as up.sh registers them in the catalog
ENDPOINTS = {
    "identity": "http://127.0.0.1:5000/v3",
    "load-balancer": "http://127.0.0.1:9876",
    "block-storage": "http://127.0.0.1:8776/v3/%(project_id)s",
    "network": "http://127.0.0.1:9696",
    "image": "http://127.0.0.1:9292",
    "compute": "http://127.0.0.1:8774/v2.1",
    "placement": "http://127.0.0.1:8778",
}
SERVICE_OF_TYPE = {
    "identity": "keystone",
    "load-balancer": "octavia",
    "block-storage": "cinder",
    "network": "neutron",
    "image": "glance",
    "compute": "nova",
    "placement": "nova",
}


@dataclass(frozen=True)
class OpenStackTestbed:
    """Where the running test bed is and what it holds (all created by up.sh)."""

    base_dir: Path
    services: frozenset[str]  # keystone plus what STACKWAY_TESTBED_SERVICES selected
    clouds_yaml: Path
    admin_cloud: str = "testbed-admin"  # admin / password, project admin
    appcred_cloud: str = "testbed-appcred"  # an application credential of admin
    region: str = "RegionOne"
    external_network: str = "public"  # router:external, shared, flat; floating IPs come from here
    external_subnet: str = "public-subnet"  # 203.0.113.0/24, pool .10-.250
    private_network: str = "private"  # shared tenant network, joined to public by router1
    private_subnet: str = "private-subnet"  # 10.0.0.0/24
    router: str = "router1"
    image: str = "testbed-image"
    flavor: str = "testbed.tiny"
    multiattach_volume_type: str = "multiattach"
    endpoints: Mapping[str, str] = field(default_factory=lambda: dict(ENDPOINTS))

    @property
    def clouds(self) -> tuple[str, str]:
        return (self.admin_cloud, self.appcred_cloud)

    def require(self, *services: str) -> None:
        """Skip the calling test unless up.sh started these services (names or service types)."""
        missing = [s for s in services if SERVICE_OF_TYPE.get(s, s) not in self.services]
        if missing:
            pytest.skip(f"test bed runs without {', '.join(missing)} (STACKWAY_TESTBED_SERVICES)")

    def connect(self, cloud: str | None = None, *, clouds_yaml: str | Path | None = None) -> Connection:
        """An openstacksdk Connection to CLOUD (default admin), from CLOUDS_YAML (default the test bed's)."""
        import openstack.connection
        from openstack.config import OpenStackConfig

        config = OpenStackConfig(config_files=[str(clouds_yaml or self.clouds_yaml)], load_envvars=False)
        return openstack.connection.Connection(config=config.get_one(cloud=cloud or self.admin_cloud))

    def clouds_with_overrides(
        self, destination: str | Path, endpoint_overrides: Mapping[str, str], *, api_timeout: float | None = None
    ) -> Path:
        """A copy of clouds.yaml at DESTINATION whose clouds reach some services elsewhere (service type ->
        URL, e.g. {"load-balancer": proxy.url}); API_TIMEOUT is openstacksdk's per-request timeout."""
        return write_clouds_yaml(self.clouds_yaml, destination, endpoint_overrides, api_timeout=api_timeout)


def _base_dir() -> Path:
    return Path(os.environ.get("STACKWAY_TESTBED_DIR", "/tmp/stackway-testbed"))


def _wanted_services() -> frozenset[str]:
    value = os.environ.get("STACKWAY_TESTBED_SERVICES", "all").split()
    wanted = set(ALL_SERVICES if value in ([], ["all"]) else value)
    if "nova" in wanted:  # as up.sh: nova brings glance and neutron
        wanted |= {"glance", "neutron"}
    return frozenset(wanted | {"keystone"})


@dataclass(frozen=True)
class _Outcome:
    testbed: OpenStackTestbed | None = None
    skip: str | None = None
    fail: str | None = None


@functools.cache
def _bring_up() -> _Outcome:
    """Check the installation and run up.sh once per session; the verdict is shared by every test."""
    required = os.environ.get("STACKWAY_REQUIRE_TESTBED") == "1"

    def unavailable(reason: str) -> _Outcome:
        if required:
            return _Outcome(fail=f"{reason} (STACKWAY_REQUIRE_TESTBED=1, so this is an error)")
        return _Outcome(skip=reason)

    try:
        check = subprocess.run([INSTALL_SH, "--check"], capture_output=True, text=True, timeout=60, check=False)
    except OSError as e:
        return unavailable(f"OpenStack test bed unavailable: {e}")
    if check.returncode != 0:
        missing = (check.stdout + check.stderr).replace("missing packages:", "").split()
        shown = " ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        return unavailable(
            f"OpenStack test bed not installed ({len(missing)} packages missing: {shown}); "
            "as root on Debian 12 run tests/openstack/testbed/install.sh, then up.sh"
        )
    if subprocess.run([UP_SH, "--check"], capture_output=True, timeout=60, check=False).returncode != 0:
        try:
            up = subprocess.run([UP_SH], capture_output=True, text=True, timeout=900, check=False)
        except subprocess.TimeoutExpired:
            return _Outcome(fail="up.sh did not finish within 15 minutes")
        if up.returncode != 0:
            tail = "\n".join((up.stdout + up.stderr).splitlines()[-30:])
            return _Outcome(fail=f"the OpenStack test bed did not come up (up.sh exit {up.returncode}):\n{tail}")
    base = _base_dir()
    return _Outcome(
        testbed=OpenStackTestbed(base_dir=base, services=_wanted_services(), clouds_yaml=base / "clouds.yaml")
    )


def _uses_testbed(item: pytest.Item) -> bool:
    return "testbed" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.openstack)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """Bring the test bed up before the first test runs, outside any test's timeout (from scratch,
    up.sh takes about a minute), and only when a selected test needs it."""
    if session.config.option.collectonly or not any(_uses_testbed(i) for i in session.items):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("openstack test bed: checking (tests/openstack/testbed/up.sh)")
    _bring_up()


@pytest.fixture(scope="session")
def testbed() -> Iterator[OpenStackTestbed]:
    outcome = _bring_up()
    if outcome.fail:
        pytest.fail(outcome.fail, pytrace=False)
    if outcome.skip:
        pytest.skip(outcome.skip)
    assert outcome.testbed is not None
    previous = os.environ.get("OS_CLIENT_CONFIG_FILE")
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(outcome.testbed.clouds_yaml)
    yield outcome.testbed
    if previous is None:
        os.environ.pop("OS_CLIENT_CONFIG_FILE", None)
    else:
        os.environ["OS_CLIENT_CONFIG_FILE"] = previous


@pytest.fixture
def fault_proxy(testbed: OpenStackTestbed) -> Iterator[Callable[[str], FaultProxy]]:
    """fault_proxy(service_type) -> a started FaultProxy in front of that test bed service; stopped after
    the test. Point openstacksdk at it with testbed.clouds_with_overrides(path, {service_type: proxy.url})."""
    proxies: list[FaultProxy] = []

    def make(service_type: str) -> FaultProxy:
        testbed.require(service_type)
        proxy = FaultProxy(testbed.endpoints[service_type]).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()
