"""The conformance environment: upstream manifests, echo backends and one gateway per mode for the whole run.

A module picks its modes with `pytest.mark.parametrize("conformance", [...], indirect=True)` (standalone
without one); the fixture is session-scoped, so pytest groups the tests by mode and runs one gateway at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.harness import STANDALONE, Conformance, can_bind
from tests.conformance.manifests import ENV_DIR, conformance_dir


@pytest.fixture(scope="session")
def conformance(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Conformance]:
    mode: str = getattr(request, "param", STANDALONE)
    upstream = conformance_dir()
    if not (upstream / "base" / "manifests.yaml").is_file():
        pytest.skip(f"upstream conformance manifests not found at {upstream} (set {ENV_DIR})")
    if not can_bind("127.0.0.1", 80) and not can_bind("127.0.0.2", 80):
        pytest.skip("the upstream Gateways listen on ports 80 and 443, which this user may not bind")
    env = Conformance(upstream=upstream, workdir=tmp_path_factory.mktemp(f"conformance-{mode}"), mode=mode)
    try:
        env.start()
        yield env
    finally:
        env.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing conformance test shows the end of the gateway's log next to the failed expectation."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    env = getattr(item, "funcargs", {}).get("conformance")
    if report.when == "call" and report.failed and isinstance(env, Conformance) and env.backend is not None:
        report.sections.append((f"{env.mode} gateway log (last lines)", env.backend.log_tail()))
