"""`stackway lb` as an operator uses it, against the test bed: plan → apply → list/show → gc."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from stackway.cli import app
from stackway.openstack.loadbalancer import annotations as ann
from tests.openstack.conftest import OpenStackTestbed
from tests.openstack.lbkit import cloud_ids, leaks, node_body, service_body, unique_cluster

pytestmark = pytest.mark.timeout(240)
runner = CliRunner()


def write(directory: Path, docs: list[dict]) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "cluster.yaml").write_text(yaml.safe_dump_all(docs))
    return directory


def test_plan_offline_names_bad_annotations(tmp_path: Path) -> None:
    """No cloud needed: the Services themselves are checked."""
    docs = [
        service_body("good", ports=[{"port": 80, "nodePort": 30080}]),
        service_body("bad", annotations={ann.LB_METHOD: "FASTEST"}, ports=[{"port": 80, "nodePort": 30081}]),
        node_body("worker-1", "10.0.0.51"),
    ]
    result = runner.invoke(app, ["lb", "plan", str(write(tmp_path / "m", docs)), "--offline", "--subnet-id", "s1"])
    assert result.exit_code == 1
    assert "default/good → kube_service_kubernetes_default_good" in result.output
    assert "TCP/80 → TCP pool, 1 members" in result.output
    assert f"{ann.LB_METHOD}: 'FASTEST' is not one of" in result.output


def test_unknown_cloud_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "clouds.yaml"))
    (tmp_path / "clouds.yaml").write_text("clouds: {}\n")
    manifests = write(tmp_path / "m", [service_body("good", ports=[{"port": 80, "nodePort": 30080}])])
    result = runner.invoke(app, ["lb", "list", str(manifests), "--os-cloud", "nowhere"])
    assert result.exit_code == 2
    assert "cannot use cloud nowhere" in result.output
    assert "Traceback" not in result.output


def test_operator_workflow(testbed: OpenStackTestbed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    testbed.require("octavia", "neutron")
    cloud = cloud_ids(testbed)
    cluster = unique_cluster()
    monkeypatch.setenv("OS_CLOUD", testbed.admin_cloud)
    manifests = write(
        tmp_path / "m",
        [service_body("shop", ports=[{"port": 443, "nodePort": 30443}]), node_body("worker-1", "10.0.0.51")],
    )
    common = ["--cluster-name", cluster]
    create = [*common, "--subnet-id", cloud.subnet_id, "--floating-network-id", cloud.floating_network_id]
    lb_name = f"kube_service_{cluster}_default_shop"

    plan = runner.invoke(app, ["lb", "plan", str(manifests), *create, "--serial-api-calls"])
    assert plan.exit_code == 0, plan.output
    assert f"create_load_balancer {lb_name}" in plan.output

    apply = runner.invoke(app, ["lb", "apply", str(manifests), *create, "--serial-api-calls"])
    assert apply.exit_code == 0, apply.output
    assert "Active" in apply.output

    plan = runner.invoke(app, ["lb", "plan", str(manifests), *create, "--serial-api-calls"])
    assert "up to date" in plan.output

    listing = runner.invoke(app, ["lb", "list", str(manifests), *common])
    assert listing.exit_code == 0, listing.output
    assert "default/shop" in listing.output
    assert "ACTIVE" in listing.output

    missing = runner.invoke(app, ["lb", "show", "default/nothing", *common])
    assert missing.exit_code == 1
    assert f"no load balancer kube_service_{cluster}_default_nothing" in missing.output

    show = runner.invoke(app, ["lb", "show", "default/shop", *common, "--wait"])
    assert show.exit_code == 0, show.output
    assert "TCP/443" in show.output
    assert "member worker-1 10.0.0.51:30443" in show.output

    # A manifest that stops validating is reported, and its LB is not taken for an orphan.
    write(manifests, [service_body("shop", ports=[{"port": "https"}]), node_body("worker-1", "10.0.0.51")])
    dry = runner.invoke(app, ["lb", "gc", str(manifests), *common, "--dry-run"])
    assert "no orphaned load balancers" in dry.output
    assert "Service default/shop" in dry.output

    # The Service leaves the manifests: gc --dry-run lists it, gc deletes it.
    write(manifests, [node_body("worker-1", "10.0.0.51")])
    dry = runner.invoke(app, ["lb", "gc", str(manifests), *common, "--dry-run"])
    assert f"would delete {lb_name}" in dry.output
    assert leaks(testbed, cluster).load_balancers
    gc = runner.invoke(app, ["lb", "gc", str(manifests), *common])
    assert f"deleted {lb_name}" in gc.output
    assert leaks(testbed, cluster).total == 0
