"""The CSI install `stackway manifests --csi` adds: schema-valid objects, sidecars wired to one socket, the
driver's own flags accepted by `stackway csi`, and the default output left exactly as it was."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest
import typer
import yaml
from typer.testing import CliRunner

from stackway.cli import app
from stackway.deploy.csi import SIDECARS, SOCKET, SOCKET_DIR, CsiOptions, render_csi, render_csi_yaml

KUBERNETES_VERSIONS = ("1.33", "1.37")
OPTION_SETS = {
    "default": CsiOptions(),
    "custom": CsiOptions(
        driver_name="cinder.example.org",
        namespace="storage",
        controller_replicas=2,
        topology=False,
        volume_type="multiattach",
        default_storage_class=True,
        kubelet_dir="/var/lib/k0s/kubelet",
    ),
}


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list(obj["spec"]["template"]["spec"]["containers"])


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


@pytest.mark.parametrize("options_name", sorted(OPTION_SETS))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_core_object_validates_strictly(options_name: str, version: str) -> None:
    objects = render_csi(OPTION_SETS[options_name])
    kinds = []
    for obj in objects:
        if obj["kind"] == "VolumeSnapshotClass":
            continue  # a CRD of external-snapshotter: see test_snapshot_class_matches_its_crd
        kubernetes_validate.validate(obj, version, strict=True)
        kinds.append(obj["kind"])
    assert {"CSIDriver", "Deployment", "DaemonSet", "StorageClass", "ClusterRole"} <= set(kinds)


def test_snapshot_class_matches_its_crd() -> None:
    """snapshot.storage.k8s.io/v1 VolumeSnapshotClass: driver and deletionPolicy required, parameters strings."""
    snapshot_class = one(render_csi(), "VolumeSnapshotClass")
    assert set(snapshot_class) == {"apiVersion", "kind", "metadata", "driver", "deletionPolicy", "parameters"}
    assert snapshot_class["apiVersion"] == "snapshot.storage.k8s.io/v1"
    assert snapshot_class["deletionPolicy"] in ("Delete", "Retain")
    assert all(isinstance(v, str) for v in snapshot_class["parameters"].values())


@pytest.mark.parametrize("options_name", sorted(OPTION_SETS))
def test_the_driver_name_is_the_same_everywhere(options_name: str) -> None:
    options = OPTION_SETS[options_name]
    objects = render_csi(options)
    assert one(objects, "CSIDriver")["metadata"]["name"] == options.driver_name
    assert one(objects, "StorageClass")["provisioner"] == options.driver_name
    assert one(objects, "VolumeSnapshotClass")["driver"] == options.driver_name
    for kind in ("Deployment", "DaemonSet"):
        plugin = containers(one(objects, kind))[0]
        assert f"--driver-name={options.driver_name}" in plugin["args"]


@pytest.mark.parametrize("options_name", sorted(OPTION_SETS))
def test_every_container_talks_to_the_one_socket(options_name: str) -> None:
    options = OPTION_SETS[options_name]
    objects = render_csi(options)
    for kind in ("Deployment", "DaemonSet"):
        for container in containers(one(objects, kind)):
            assert any(m["mountPath"] == SOCKET_DIR for m in container["volumeMounts"]), container["name"]
            args = container["args"]
            assert f"--csi-address={SOCKET}" in args or f"--endpoint=unix://{SOCKET}" in args, container["name"]
    daemonset = one(objects, "DaemonSet")
    paths = {v["name"]: v["hostPath"]["path"] for v in daemonset["spec"]["template"]["spec"]["volumes"]}
    registrar = next(c for c in containers(daemonset) if c["name"] == "node-driver-registrar")
    assert f"--kubelet-registration-path={paths['plugin-dir']}/csi.sock" in registrar["args"]
    assert paths["plugin-dir"] == f"{options.kubelet_dir}/plugins/{options.driver_name}"
    plugin = containers(daemonset)[0]
    kubelet_mount = next(m for m in plugin["volumeMounts"] if m["name"] == "kubelet-dir")
    assert kubelet_mount["mountPropagation"] == "Bidirectional"  # the kubelet must see the driver's mounts
    assert plugin["securityContext"]["privileged"]


def test_sidecars_are_pinned_releases() -> None:
    objects = render_csi()
    images = {c["image"] for kind in ("Deployment", "DaemonSet") for c in containers(one(objects, kind))}
    for name, image in SIDECARS.items():
        assert image in images, name
        assert re.fullmatch(r"registry\.k8s\.io/sig-storage/[a-z-]+:v\d+\.\d+\.\d+", image), image
    names = [c["name"] for c in containers(one(objects, "Deployment"))]
    assert names == [
        "cinder-csi-plugin",
        "csi-provisioner",
        "csi-attacher",
        "csi-snapshotter",
        "csi-resizer",
        "liveness-probe",
    ]


@pytest.mark.parametrize("options_name", sorted(OPTION_SETS))
def test_plugin_arguments_are_accepted_by_stackway_csi(options_name: str) -> None:
    """Parse (without running) each pod's arguments with the real `stackway csi` command line."""
    command = typer.main.get_command(app)
    csi_command = command.commands["csi"]  # type: ignore[attr-defined]
    objects = render_csi(OPTION_SETS[options_name])
    for kind in ("Deployment", "DaemonSet"):
        args = containers(one(objects, kind))[0]["args"]
        assert args[0] == "csi"
        ctx = csi_command.make_context("csi", list(args[1:]))
        assert ctx.params["mode"] in ("controller", "node")


def test_manifests_output_is_unchanged_unless_csi_is_asked_for() -> None:
    runner = CliRunner()
    plain = runner.invoke(app, ["manifests"])
    with_csi = runner.invoke(app, ["manifests", "--csi", "--csi-driver-name", "cinder.example.org"])
    assert plain.exit_code == 0, plain.output
    assert with_csi.exit_code == 0, with_csi.output
    assert with_csi.stdout.startswith(plain.stdout)
    assert "CSIDriver" not in plain.stdout
    added = [d for d in yaml.safe_load_all(with_csi.stdout[len(plain.stdout) :]) if d]
    assert [d["kind"] for d in added] == [d["kind"] for d in render_csi()]
    assert one(added, "CSIDriver")["metadata"]["name"] == "cinder.example.org"
    assert render_csi_yaml().startswith("---\n# Cinder CSI driver")
