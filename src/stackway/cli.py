"""The `stackway` command line.

Every command that reads manifests shares one loading path with `up`, so `validate` reports exactly what
a running gateway would do with the same directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console

from stackway.controlplane import ControlPlane
from stackway.openstack.loadbalancer.cli import Cloud, Cluster, FloatNet, Monitor, Serial, Subnet, lb_app, lb_config
from stackway.translate import Options
from stackway.xds.build import snapshot_as_data

app = typer.Typer(
    help=(
        "stackway: a Kubernetes gateway (Gateway API) with a Python control plane and an Envoy data plane.\n\n"
        "Start with `stackway demo`, then serve your own manifests with `stackway up DIR`."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
app.add_typer(lb_app, name="lb")
err = Console(stderr=True)

DirArg = Annotated[
    Path,
    typer.Argument(
        exists=True, file_okay=False, dir_okay=True, readable=True, help="Directory of Kubernetes manifests."
    ),
]
AcceptAnyClass = Annotated[
    bool,
    typer.Option(
        "--accept-any-class", help="Also serve Gateways whose GatewayClass is missing (default: only stackway's)."
    ),
]


def _hostport(value: str, option: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise typer.BadParameter(f"expected HOST:PORT, got {value!r}", param_hint=option)
    return host.strip("[]"), int(port)


def _load(directory: Path, accept_any_class: bool, address: str = "0.0.0.0") -> ControlPlane:
    from stackway.providers.files import load_directory

    loaded = load_directory(directory)
    control = ControlPlane(options=Options(default_address=address, accept_any_class=accept_any_class))
    control.update(loaded.objects, loaded.problems)
    return control


@app.command()
def validate(directory: DirArg, accept_any_class: AcceptAnyClass = False) -> None:
    """Check manifests offline: print every problem with file, object and field; exit 1 on errors.

    Runs the same parser and translator as `stackway up`, so what passes here is what would be served.
    """
    control = _load(directory, accept_any_class)
    problems = control.problem_document()
    errors = sum(1 for p in problems if p["severity"] == "error")
    out = Console(soft_wrap=True)
    for p in problems:
        where = f"{p['file']}:{p['line'] or ''}: " if p["file"] else ""
        fld = f"{p['field']}: " if p["field"] else ""
        color = "red" if p["severity"] == "error" else "yellow"
        obj = f"{p['object']}: " if p["object"] else ""
        out.print(f"[{color}]{p['severity']:<7}[/{color}] {where}{obj}{fld}{p['message']}", highlight=False)
    objects = len(control.resources.sources)
    if errors:
        out.print(f"[red]{errors} error(s)[/red] in {objects} object(s)")
        raise typer.Exit(1)
    out.print(f"[green]ok[/green]: {objects} object(s), no errors")


@app.command()
def translate(
    directory: DirArg,
    accept_any_class: AcceptAnyClass = False,
    output: Annotated[str, typer.Option("--output", "-o", help="yaml or json.")] = "yaml",
    address: Annotated[str, typer.Option(help="IP the Gateway listeners bind.")] = "0.0.0.0",
) -> None:
    """Print the xDS resources (listeners, routes, clusters, endpoints) stackway would serve for DIR."""
    control = _load(directory, accept_any_class, address)
    if control.system_error:
        err.print(f"[red]error:[/red] {control.system_error}")
        raise typer.Exit(1)
    doc = {"version": control.snapshot.version, "resources": snapshot_as_data(control.snapshot)}
    if output == "json":
        sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(doc, sort_keys=True))


@app.command()
def up(
    directory: DirArg,
    address: Annotated[
        str, typer.Option(help="IP the Gateway listeners bind (Gateways with spec.addresses bind those).")
    ] = "0.0.0.0",
    admin: Annotated[
        str, typer.Option(help="HOST:PORT of the admin API (/healthz /readyz /api/status /api/config /metrics).")
    ] = "127.0.0.1:9900",
    xds: Annotated[
        str, typer.Option(help="HOST:PORT of the xDS (ADS gRPC) server Envoy connects to.")
    ] = "127.0.0.1:18000",
    envoy_admin: Annotated[str, typer.Option(help="HOST:PORT of Envoy's own admin interface.")] = "127.0.0.1:19000",
    accept_any_class: AcceptAnyClass = False,
    delta: Annotated[
        bool, typer.Option("--delta/--sotw", help="xDS variant Envoy uses: incremental or state-of-the-world.")
    ] = True,
    concurrency: Annotated[int, typer.Option(help="Envoy worker threads.")] = 1,
    ingress_http_port: Annotated[int, typer.Option(help="Port Ingress objects are served on over HTTP.")] = 80,
    ingress_https_port: Annotated[int, typer.Option(help="Port Ingress TLS hosts are served on.")] = 443,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    os_cloud: Cloud = None,
    cluster_name: Cluster = "kubernetes",
    subnet_id: Subnet = None,
    floating_network_id: FloatNet = None,
    create_monitor: Monitor = False,
    serial_api_calls: Serial = False,
) -> None:
    """Serve the manifests in DIR through a bundled Envoy, following every file change without restart.

    With --os-cloud, Services of type LoadBalancer in DIR (members: the Node objects there) also get Octavia
    load balancers, shown in /api/status. Ctrl-C drains Envoy and stops everything this command started.
    """
    admin_at, xds_at, envoy_admin_at = (
        _hostport(admin, "--admin"),
        _hostport(xds, "--xds"),
        _hostport(envoy_admin, "--envoy-admin"),
    )
    from stackway.standalone import StandaloneConfig, run_standalone

    config = StandaloneConfig(
        directory=directory,
        address=address,
        admin=admin_at,
        xds=xds_at,
        envoy_admin=envoy_admin_at,
        accept_any_class=accept_any_class,
        delta=delta,
        concurrency=concurrency,
        log_level=log_level,
        ingress_http_port=ingress_http_port,
        ingress_https_port=ingress_https_port,
        os_cloud=os_cloud,
        load_balancers=lb_config(cluster_name, subnet_id, floating_network_id, None, create_monitor, serial_api_calls),
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_standalone(config))


@app.command()
def serve(
    kubeconfig: Annotated[
        Path | None, typer.Option(help="kubeconfig file; default: in-cluster credentials, else ~/.kube/config.")
    ] = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context to use.")] = None,
    namespace: Annotated[str | None, typer.Option(help="Watch only this namespace (default: all).")] = None,
    address: Annotated[str, typer.Option(help="IP the Envoys' Gateway listeners bind.")] = "0.0.0.0",
    admin: Annotated[str, typer.Option(help="HOST:PORT of the admin API.")] = "0.0.0.0:9900",
    xds: Annotated[str, typer.Option(help="HOST:PORT of the xDS server the Envoys connect to.")] = "0.0.0.0:18000",
    xds_tls_dir: Annotated[
        Path | None,
        typer.Option(help="Directory with server.crt, server.key and ca.crt (see certgen): require mutual TLS."),
    ] = None,
    leader_elect: Annotated[
        bool, typer.Option("--leader-elect/--no-leader-elect", help="Campaign for the stackway-controller Lease.")
    ] = True,
    status: Annotated[
        bool, typer.Option("--status/--no-status", help="Write statuses back (only the leader does).")
    ] = True,
    lease_namespace: Annotated[
        str | None, typer.Option(help="Namespace of the Lease (default: POD_NAMESPACE, else --namespace).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    os_cloud: Cloud = None,
    cluster_name: Cluster = "kubernetes",
    subnet_id: Subnet = None,
    floating_network_id: FloatNet = None,
    create_monitor: Monitor = False,
    serial_api_calls: Serial = False,
) -> None:
    """Cluster mode: watch the Kubernetes API and serve xDS to every Envoy of the cluster.

    With --os-cloud the leader also gives Services of type LoadBalancer Octavia load balancers (OCCM's names
    and annotations), writes their status.loadBalancer, records Events and holds a cleanup finalizer.

    Every replica serves xDS; the replica holding the `stackway-controller` Lease writes status (only what
    changed, rate-limited, leaving other controllers' entries alone). `/api/status` shows what is written.
    """
    admin_at, xds_at = _hostport(admin, "--admin"), _hostport(xds, "--xds")
    from stackway.cluster import ClusterConfig, run_cluster

    if xds_tls_dir is not None:
        missing = [n for n in ("server.crt", "server.key", "ca.crt") if not (xds_tls_dir / n).is_file()]
        if missing:
            raise typer.BadParameter(f"{xds_tls_dir} lacks {', '.join(missing)}", param_hint="--xds-tls-dir")
    config = ClusterConfig(
        xds_tls_dir=xds_tls_dir,
        leader_elect=leader_elect,
        write_status=status,
        lease_namespace=lease_namespace,
        kubeconfig=kubeconfig,
        context=context,
        namespace=namespace,
        address=address,
        admin=admin_at,
        xds=xds_at,
        log_level=log_level,
        os_cloud=os_cloud,
        load_balancers=lb_config(cluster_name, subnet_id, floating_network_id, None, create_monitor, serial_api_calls),
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_cluster(config))


@app.command()
def manifests(
    namespace: Annotated[str, typer.Option(help="Namespace stackway runs in.")] = "stackway-system",
    image: Annotated[str | None, typer.Option(help="stackway's image (default: the release of this version).")] = None,
    envoy_image: Annotated[str | None, typer.Option(help="Envoy's image (default: the tested Envoy release).")] = None,
    replicas: Annotated[int, typer.Option(help="Control-plane replicas (one leader writes status).")] = 2,
    envoy_kind: Annotated[str, typer.Option(help="DaemonSet (an Envoy per node) or Deployment.")] = "DaemonSet",
    envoy_replicas: Annotated[int, typer.Option(help="Envoy replicas when --envoy-kind Deployment.")] = 2,
    host_network: Annotated[bool, typer.Option(help="Envoys bind the nodes' addresses directly.")] = False,
    node_selector: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE; repeat. Put Envoys on dedicated gateway nodes.")
    ] = None,
    toleration: Annotated[
        list[str] | None, typer.Option(help="KEY[=VALUE][:Effect] of a taint Envoys tolerate; repeat.")
    ] = None,
    csi: Annotated[
        bool, typer.Option("--csi", help="Also print the Cinder CSI driver (see `stackway csi --help`).")
    ] = False,
    csi_driver_name: Annotated[str, typer.Option(help="With --csi: the CSI driver name.")] = "cinder.csi.openstack.org",
    os_cloud: Annotated[
        str | None,
        typer.Option(
            "--os-cloud",
            help="Cloud name in the Secret's clouds.yaml (see --os-cloud-secret): the leader then gives Services "
            "of type LoadBalancer Octavia load balancers (`serve --os-cloud`). Adds the Secret mount and RBAC for "
            "it: list/watch nodes, get/update services and services/status, create events.",
        ),
    ] = None,
    os_cloud_secret: Annotated[
        str,
        typer.Option(
            "--os-cloud-secret",
            help="With --os-cloud: Secret in --namespace whose key clouds.yaml defines that cloud, mounted at "
            "/etc/openstack (a CA bundle may sit beside it: clouds.yaml's cacert: /etc/openstack/ca.pem). Create "
            "it first, e.g. `kubectl -n stackway-system create secret generic stackway-cloud-config "
            "--from-file=clouds.yaml`.",
        ),
    ] = "stackway-cloud-config",
    lb_cluster_name: Annotated[
        str,
        typer.Option(
            "--lb-cluster-name",
            help="With --os-cloud: goes into every LB name (`serve --cluster-name`); unique per project.",
        ),
    ] = "kubernetes",
    lb_subnet_id: Annotated[
        str | None,
        typer.Option("--lb-subnet-id", help="With --os-cloud: default VIP subnet (`serve --subnet-id`)."),
    ] = None,
    lb_floating_network_id: Annotated[
        str | None,
        typer.Option(
            "--lb-floating-network-id",
            help="With --os-cloud: external network for floating IPs (`serve --floating-network-id`).",
        ),
    ] = None,
    lb_create_monitor: Annotated[
        bool,
        typer.Option("--lb-create-monitor", help="With --os-cloud: health monitors (`serve --create-monitor`)."),
    ] = False,
    lb_serial_api_calls: Annotated[
        bool,
        typer.Option(
            "--lb-serial-api-calls",
            help="With --os-cloud: one Octavia call at a time (`serve --serial-api-calls`).",
        ),
    ] = False,
) -> None:
    """Print everything a cluster needs (RBAC, control plane, Envoys, classes) as YAML for `kubectl apply -f -`.

    The Gateway API CRDs are a prerequisite and are not included; the output's first line names the version.
    With --os-cloud, so is the Secret with clouds.yaml (credentials are never printed); the header says how.
    """
    from stackway.deploy import DeployOptions, parse_selector, parse_toleration, render_yaml

    if envoy_kind not in ("DaemonSet", "Deployment"):
        raise typer.BadParameter("DaemonSet or Deployment", param_hint="--envoy-kind")
    try:
        selector = dict(parse_selector(item) for item in node_selector or [])
        tolerations = [parse_toleration(item) for item in toleration or []]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    defaults = DeployOptions()
    if os_cloud is None:
        # Without a cloud these would be dropped silently: say which flag needs --os-cloud instead.
        given = {
            "--os-cloud-secret": os_cloud_secret != defaults.openstack_secret,
            "--lb-cluster-name": lb_cluster_name != defaults.lb_cluster_name,
            "--lb-subnet-id": lb_subnet_id is not None,
            "--lb-floating-network-id": lb_floating_network_id is not None,
            "--lb-create-monitor": lb_create_monitor,
            "--lb-serial-api-calls": lb_serial_api_calls,
        }
        if any(given.values()):
            flags = ", ".join(flag for flag, set_ in given.items() if set_)
            raise typer.BadParameter(f"{flags} only apply to the load balancers: add --os-cloud NAME")
    options = DeployOptions(
        namespace=namespace,
        image=image or defaults.image,
        envoy_image=envoy_image or defaults.envoy_image,
        replicas=replicas,
        envoy_kind=envoy_kind,  # type: ignore[arg-type]
        envoy_replicas=envoy_replicas,
        host_network=host_network,
        node_selector=selector,
        tolerations=tolerations,
        openstack_cloud=os_cloud,
        openstack_secret=os_cloud_secret,
        lb_cluster_name=lb_cluster_name,
        lb_subnet_id=lb_subnet_id,
        lb_floating_network_id=lb_floating_network_id,
        lb_create_monitor=lb_create_monitor,
        lb_serial_api_calls=lb_serial_api_calls,
    )
    sys.stdout.write(render_yaml(options))
    if csi:
        from stackway.deploy.csi import CsiOptions, render_csi_yaml

        sys.stdout.write(render_csi_yaml(CsiOptions(driver_name=csi_driver_name, image=options.image)))


@app.command()
def certgen(
    out: Annotated[
        Path | None, typer.Option(help="Write ca/server/client .crt/.key files here (kept if still valid).")
    ] = None,
    secrets: Annotated[
        bool, typer.Option("--secrets", help="Print kubernetes.io/tls Secrets as YAML instead.")
    ] = False,
    namespace: Annotated[str, typer.Option(help="Namespace of the control plane (names in the certificate).")] = (
        "stackway-system"
    ),
    service: Annotated[str, typer.Option(help="Name of the control plane's xDS Service.")] = "stackway",
    extra_name: Annotated[list[str] | None, typer.Option(help="Another DNS name or IP for the server; repeat.")] = None,
    force: Annotated[bool, typer.Option(help="Issue new certificates even if the existing ones are valid.")] = False,
) -> None:
    """Create the CA and certificates for mutual TLS between Envoy and the control plane's xDS server.

    Files in --out are kept while valid (renewed 30 days before expiry); --secrets prints Secrets to apply.
    """
    from stackway import certs

    if (out is None) == (not secrets):
        raise typer.BadParameter("give exactly one of --out DIR and --secrets")
    options = {"service": service, "namespace": namespace, "extra_names": tuple(extra_name or ())}
    if out is not None:
        bundle = certs.ensure_files(out, force=force, **options)
        what = ", ".join(bundle.issued) or "nothing (existing certificates are valid)"
        err.print(f"[green]ok[/green]: {out}: issued {what}")
    else:
        bundle = certs.generate(force=force, **options)  # type: ignore[arg-type]
        sys.stdout.write(yaml.safe_dump_all(certs.as_secrets(bundle, namespace), sort_keys=False))


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port of the demo Gateway on 127.0.0.1.")] = 8080,
    duration: Annotated[float, typer.Option(help="Seconds to run; 0 runs until Ctrl-C.")] = 20.0,
    admin: Annotated[str, typer.Option(help="HOST:PORT of the admin API.")] = "127.0.0.1:9900",
) -> None:
    """Start two demo backends behind a 90/10 canary route and show live how traffic splits."""
    from stackway.demo.run import run_demo

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_demo(port=port, duration=duration, admin=_hostport(admin, "--admin")))


from stackway.openstack.csi.cli import csi  # noqa: E402 - imports nothing heavy until it runs

app.command()(csi)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
