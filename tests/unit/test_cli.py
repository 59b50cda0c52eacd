"""The offline commands: validate (exit codes, file:line, field) and translate (xDS for a directory)."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from stackway.cli import app

EXAMPLES = Path(__file__).parents[2] / "examples"
runner = CliRunner()


def test_validate_clean_directory_exits_zero() -> None:
    result = runner.invoke(app, ["validate", str(EXAMPLES)])
    assert result.exit_code == 0, result.output
    assert "no errors" in result.output


def test_validate_reports_file_line_object_and_field(tmp_path: Path) -> None:
    (tmp_path / "route.yaml").write_text(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\n"
        "spec:\n  parentRefs: [{name: gw}]\n---\n"
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: bad}\n"
        "spec:\n  rules: [{backendRefs: [{name: s, port: many}]}]\n"
    )
    (tmp_path / "broken.yaml").write_text("kind: Service\nmetadata: {name: [\n")
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "route.yaml:7" in result.output
    assert "HTTPRoute.gateway.networking.k8s.io default/bad" in result.output
    assert "spec.rules[0].backendRefs[0].port" in result.output
    assert "broken.yaml:" in result.output


def test_translate_prints_listeners_routes_and_clusters() -> None:
    result = runner.invoke(app, ["translate", str(EXAMPLES), "--address", "127.0.0.1"])
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(result.output)
    resources = doc["resources"]
    assert list(resources["Listener"]) == ["listener/127.0.0.1/8080"]
    assert set(resources["Cluster"]) == {"service/demo/checkout-v1/80", "service/demo/checkout-v2/80"}
    [route_config] = resources["RouteConfiguration"].values()
    weights = route_config["virtual_hosts"][0]["routes"][0]["route"]["weighted_clusters"]["clusters"]
    assert sorted(c["weight"] for c in weights) == [10, 90]


def test_bad_hostport_is_a_clear_cli_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["up", str(tmp_path), "--admin", "nope"])
    assert result.exit_code == 2
    assert "HOST:PORT" in result.output


def test_manifests_renders_a_daemonset_and_rejects_bad_flags() -> None:
    result = runner.invoke(app, ["manifests", "--node-selector", "role=gateway"])
    assert result.exit_code == 0, result.output
    docs = [d for d in yaml.safe_load_all(result.output) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "Deployment", "DaemonSet", "GatewayClass", "ClusterRole"} <= kinds
    daemonset = next(d for d in docs if d["kind"] == "DaemonSet")
    assert daemonset["spec"]["template"]["spec"]["nodeSelector"] == {"role": "gateway"}
    bad = runner.invoke(app, ["manifests", "--envoy-kind", "StatefulSet"])
    assert bad.exit_code == 2


def test_certgen_writes_files_once_and_prints_secrets(tmp_path: Path) -> None:
    first = runner.invoke(app, ["certgen", "--out", str(tmp_path / "tls")])
    assert first.exit_code == 0, first.output
    assert {p.name for p in (tmp_path / "tls").iterdir()} >= {"ca.crt", "server.crt", "server.key", "client.crt"}
    again = runner.invoke(app, ["certgen", "--out", str(tmp_path / "tls")])
    assert again.exit_code == 0
    assert "nothing" in again.output
    printed = runner.invoke(app, ["certgen", "--secrets", "--namespace", "gw"])
    secrets = [d for d in yaml.safe_load_all(printed.stdout) if d]
    assert {s["type"] for s in secrets} == {"kubernetes.io/tls"}
    assert {s["metadata"]["namespace"] for s in secrets} == {"gw"}
    assert runner.invoke(app, ["certgen"]).exit_code == 2


def test_serve_refuses_an_incomplete_tls_directory(tmp_path: Path) -> None:
    (tmp_path / "server.crt").write_text("x")
    result = runner.invoke(app, ["serve", "--xds-tls-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "server.key" in result.output
    assert "ca.crt" in result.output
