"""`stackway lb`: what each LoadBalancer Service maps to in Octavia, what would change, and making it so.

Every command reads Services and Nodes from a directory of manifests (the same loading path as `stackway up`)
and talks to the cloud named by ``--os-cloud`` in clouds.yaml.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from stackway.openstack.clients.errors import OpenStackError
from stackway.openstack.clients.loadbalancer import OctaviaClient
from stackway.openstack.clients.network import NeutronClient
from stackway.openstack.loadbalancer import names
from stackway.openstack.loadbalancer.actuator import Actuator, LoadBalancerError
from stackway.openstack.loadbalancer.config import LBConfig
from stackway.openstack.loadbalancer.controller import LBStatus, LoadBalancerController
from stackway.openstack.loadbalancer.diff import steps
from stackway.openstack.loadbalancer.orphans import collect, find_orphans
from stackway.openstack.loadbalancer.plan import Inputs, plan, select, wants_load_balancer
from stackway.providers.files import load_directory

lb_app = typer.Typer(
    help=(
        "Octavia load balancers for Services of type LoadBalancer (OCCM-compatible names and annotations).\n\n"
        "[bold]plan DIR[/bold]: what would be created or changed, without changing anything.\n\n"
        "[bold]apply DIR[/bold]: create/update every LB and wait until ACTIVE, with progress.\n\n"
        "[bold]list DIR[/bold]: this cluster's LBs, their state and address, and orphans.\n\n"
        "[bold]show NAMESPACE/NAME[/bold]: one Service's LB tree (--wait: progress until ACTIVE).\n\n"
        "[bold]gc DIR[/bold]: delete LBs whose Service is gone (--dry-run only lists them).\n\n"
        "Credentials come from clouds.yaml: --os-cloud NAME or OS_CLOUD."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)
out = Console()
err = Console(stderr=True)

DirArg = Annotated[Path, typer.Argument(exists=True, file_okay=False, help="Directory of Kubernetes manifests.")]
#: Where these options appear in `--help` of `up` and `serve`, apart from the gateway's own.
PANEL = "OpenStack load balancers"
Cloud = Annotated[
    str | None, typer.Option("--os-cloud", envvar="OS_CLOUD", rich_help_panel=PANEL, help="Cloud name in clouds.yaml.")
]
Cluster = Annotated[
    str, typer.Option("--cluster-name", rich_help_panel=PANEL, help="Goes into LB names, as OCCM's --cluster-name.")
]
Subnet = Annotated[
    str | None,
    typer.Option("--subnet-id", rich_help_panel=PANEL, help="Default VIP subnet (annotation subnet-id wins)."),
]
FloatNet = Annotated[
    str | None,
    typer.Option("--floating-network-id", rich_help_panel=PANEL, help="Default external network for floating IPs."),
]
Provider = Annotated[
    str | None, typer.Option("--lb-provider", rich_help_panel=PANEL, help="Octavia provider (default: the cloud's).")
]
Monitor = Annotated[
    bool,
    typer.Option("--create-monitor", rich_help_panel=PANEL, help="Health monitors by default (OCCM create-monitor)."),
]
Serial = Annotated[
    bool,
    typer.Option(
        "--serial-api-calls",
        rich_help_panel=PANEL,
        help="Create listeners, pools, members and monitors one call at a time (OCCM "
        "provider-requires-serial-api-calls), for providers without a working fully-populated create.",
    ),
]


def read_inputs(directory: Path) -> Inputs:
    """Services and Nodes of a manifest directory; a file or object that does not parse is reported."""
    result = load_directory(directory)
    for problem in result.problems:
        err.print(f"[red]{problem}[/red]")
    inputs = select(result.objects.values())
    for _key, line in inputs.invalid:
        err.print(f"[red]{line}[/red]")
    return inputs


def make_actuator(cloud: str | None, **kwargs: object) -> Actuator:
    from stackway.openstack.clients.connection import connect

    try:
        conn = connect(cloud)
    except OpenStackError as exc:
        err.print(f"[red]cannot use cloud {cloud or os.environ.get('OS_CLOUD') or '(default)'}: {exc}[/red]")
        raise typer.Exit(2) from exc
    return Actuator(OctaviaClient(conn.load_balancer), NeutronClient(conn.network), **kwargs)  # type: ignore[arg-type]


def lb_config(
    cluster: str, subnet: str | None, floating: str | None, provider: str | None, monitor: bool, serial: bool
) -> LBConfig:
    return LBConfig(
        cluster_name=cluster,
        subnet_id=subnet,
        floating_network_id=floating,
        lb_provider=provider,
        create_monitor=monitor,
        serial_api_calls=serial,
    )


@lb_app.command("plan")
def plan_command(
    directory: DirArg,
    cloud: Cloud = None,
    cluster_name: Cluster = "kubernetes",
    subnet_id: Subnet = None,
    floating_network_id: FloatNet = None,
    lb_provider: Provider = None,
    create_monitor: Monitor = False,
    serial_api_calls: Serial = False,
    offline: Annotated[bool, typer.Option("--offline", help="Only check the Services; do not read Octavia.")] = False,
) -> None:
    """Show, per Service, the problems that block it or the Octavia calls that would bring it in line."""
    config = lb_config(cluster_name, subnet_id, floating_network_id, lb_provider, create_monitor, serial_api_calls)
    inputs = read_inputs(directory)
    actuator = None if offline else make_actuator(cloud)
    failed = False
    for svc in sorted(inputs.services, key=lambda s: (s.metadata.namespace, s.metadata.name)):
        if not wants_load_balancer(svc):
            continue
        ref = f"{svc.metadata.namespace}/{svc.metadata.name}"
        result = plan(svc, inputs.nodes, config)
        if result.spec is None:
            failed = True
            out.print(f"[bold]{ref}[/bold]: [red]left as it is[/red]")
            for problem in result.problems:
                out.print(f"  [red]✗[/red] {problem}")
            continue
        spec = result.spec
        out.print(f"[bold]{ref}[/bold] → {spec.name}")
        for warning in spec.warnings:
            out.print(f"  [yellow]![/yellow] {warning}")
        if actuator is None:
            for listener in spec.listeners:
                out.print(
                    f"  {listener.protocol}/{listener.protocol_port} → {listener.pool.protocol} pool, "
                    f"{len(listener.pool.members)} members" + (", monitor" if listener.pool.monitor else "")
                )
            continue
        try:
            lb = actuator.find(spec.name, spec.existing_id)
            todo = steps(spec, actuator.observe(lb) if lb else None)
        except (OpenStackError, LoadBalancerError) as exc:
            failed = True
            out.print(f"  [red]✗[/red] {exc}")
            continue
        if lb is not None:
            out.print(f"  exists: {lb['id']} {lb.get('provisioning_status')} vip {lb.get('vip_address')}")
        for step in todo:
            out.print(f"  [cyan]→[/cyan] {step.describe()}")
        if not todo:
            out.print("  [green]✓[/green] up to date")
    raise typer.Exit(1 if failed else 0)


STATE_STYLE = {"Active": "green", "Pending": "yellow", "Deleting": "yellow", "Invalid": "red", "Error": "red"}


def _table(statuses: dict[str, LBStatus], progress: dict[str, str], started: float) -> Table:
    table = Table(title=f"load balancers ({time.monotonic() - started:.1f} s)")
    for column in ("Service", "state", "Octavia", "address", "message"):
        table.add_column(column)
    for ref in sorted(statuses):
        st = statuses[ref]
        style = STATE_STYLE.get(st.state, "white")
        octavia = progress.get(st.lb_name, "")
        address = st.ingress_hostname or st.ingress_ip or ""
        table.add_row(ref, f"[{style}]{st.state}[/{style}]", octavia, address, st.message[:80])
    return table


@lb_app.command("apply")
def apply_command(
    directory: DirArg,
    cloud: Cloud = None,
    cluster_name: Cluster = "kubernetes",
    subnet_id: Subnet = None,
    floating_network_id: FloatNet = None,
    lb_provider: Provider = None,
    create_monitor: Monitor = False,
    serial_api_calls: Serial = False,
    gc: Annotated[bool, typer.Option("--gc", help="Also delete this cluster's LBs whose Service is gone.")] = False,
    workers: Annotated[int, typer.Option(help="Services reconciled in parallel.")] = 8,
) -> None:
    """Create or update every LoadBalancer Service's LB and wait until each is ACTIVE, showing progress."""
    config = lb_config(cluster_name, subnet_id, floating_network_id, lb_provider, create_monitor, serial_api_calls)
    inputs = read_inputs(directory)
    progress: dict[str, str] = {}
    actuator = make_actuator(cloud, progress=progress.__setitem__)
    statuses: dict[str, LBStatus] = {}
    controller = LoadBalancerController(
        actuator, config, workers=workers, on_status=lambda key, st: statuses.__setitem__("/".join(key), st)
    )
    started = time.monotonic()
    try:
        controller.update(inputs.services, inputs.nodes)
        with Live(_table(statuses, progress, started), console=out, refresh_per_second=4, transient=False) as live:
            while not controller.wait_idle(timeout=0.25):
                live.update(_table(statuses, progress, started))
            live.update(_table(statuses, progress, started))
        if gc:
            for orphan in collect(actuator, cluster_name, inputs.live, dry_run=False):
                out.print(f"deleted orphan {orphan.name} ({orphan.namespace}/{orphan.service} is gone)")
    finally:
        controller.close()
    bad = [ref for ref, st in statuses.items() if st.state != "Active"]
    raise typer.Exit(1 if bad else 0)


@lb_app.command("list")
def list_command(directory: DirArg, cloud: Cloud = None, cluster_name: Cluster = "kubernetes") -> None:
    """This cluster's Octavia LBs, the Service each belongs to, and whether that Service still exists."""
    live = read_inputs(directory).live
    actuator = make_actuator(cloud)
    table = Table()
    for column in ("Service", "load balancer", "id", "state", "operating", "VIP", "floating IP"):
        table.add_column(column)
    for lb in sorted(actuator.octavia.list_load_balancers(), key=lambda lb: str(lb.get("name"))):
        owner = names.service_of(str(lb.get("name") or ""), cluster_name)
        if owner is None:
            continue
        ref = "/".join(owner) + ("" if owner in live else " [red](gone)[/red]")
        fips = actuator.neutron.list_floating_ips(port_id=lb["vip_port_id"]) if lb.get("vip_port_id") else []
        table.add_row(
            ref,
            str(lb["name"]),
            str(lb["id"]),
            str(lb.get("provisioning_status")),
            str(lb.get("operating_status")),
            str(lb.get("vip_address")),
            ", ".join(str(f["floating_ip_address"]) for f in fips),
        )
    # Piped into grep or a file, IDs must not be cut to the terminal's width.
    (out if out.is_terminal else Console(width=250)).print(table)


@lb_app.command("gc")
def gc_command(
    directory: DirArg,
    cloud: Cloud = None,
    cluster_name: Cluster = "kubernetes",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be deleted.")] = False,
) -> None:
    """Delete this cluster's LBs (tagged and named as stackway/OCCM make them) whose Service is gone."""
    live = read_inputs(directory).live
    actuator = make_actuator(cloud)
    if dry_run:
        orphans = find_orphans(actuator.octavia, cluster_name, live)
    else:
        orphans = collect(actuator, cluster_name, live, dry_run=False)
    verb = "would delete" if dry_run else "deleted"
    for orphan in orphans:
        out.print(f"{verb} {orphan.name} ({orphan.lb['id']}): Service {orphan.namespace}/{orphan.service} is gone")
    if not orphans:
        out.print("no orphaned load balancers")


@lb_app.command("show")
def show_command(
    service: Annotated[str, typer.Argument(help="The Service as NAMESPACE/NAME (or NAME in default).")],
    cloud: Cloud = None,
    cluster_name: Cluster = "kubernetes",
    wait: Annotated[bool, typer.Option("--wait", help="Follow a pending LB until it is ACTIVE (or ERROR).")] = False,
    timeout: Annotated[float, typer.Option(help="With --wait: give up after this many seconds.")] = 600.0,
) -> None:
    """One Service's load balancer: state, VIP, floating IP, and each listener with its pool and members."""
    namespace, _, name = service.rpartition("/")
    lb_name = names.lb_name(cluster_name, namespace or "default", name)
    actuator = make_actuator(cloud)
    lb = actuator.find(lb_name)
    if lb is None:
        err.print(f"[red]no load balancer {lb_name}[/red] (is --cluster-name right?)")
        raise typer.Exit(1)
    if wait and str(lb.get("provisioning_status")).startswith("PENDING"):
        lb = _follow(actuator, lb, lb_name, timeout)
    fips = actuator.neutron.list_floating_ips(port_id=lb["vip_port_id"]) if lb.get("vip_port_id") else []
    out.print(f"[bold]{lb_name}[/bold] {lb['id']}")
    out.print(f"  provisioning {lb.get('provisioning_status')}, operating {lb.get('operating_status')}")
    out.print(f"  VIP {lb.get('vip_address')} on subnet {lb.get('vip_subnet_id')}")
    out.print(f"  floating IP {', '.join(str(f['floating_ip_address']) for f in fips) or '(none)'}")
    observed = actuator.observe(lb)
    pools = {p.pool["id"]: p for p in observed.pools}
    for listener in sorted(observed.listeners, key=lambda li: (li.get("protocol_port"), li.get("protocol"))):
        out.print(
            f"  listener {listener['name']}: {listener['protocol']}/{listener['protocol_port']} "
            f"{listener.get('provisioning_status')}"
        )
        pool = pools.get(str(listener.get("default_pool_id")))
        if pool is None:
            out.print("    (no pool)")
            continue
        monitor = f", monitor {pool.monitor['type']}" if pool.monitor else ""
        out.print(f"    pool {pool.pool['name']}: {pool.pool['protocol']} {pool.pool['lb_algorithm']}{monitor}")
        for member in sorted(pool.members, key=lambda m: str(m.get("name"))):
            out.print(f"      member {member.get('name')} {member['address']}:{member['protocol_port']}")


def _follow(actuator: Actuator, lb: dict[str, Any], lb_name: str, timeout: float) -> dict[str, Any]:
    """A spinner with Octavia's state while the LB is PENDING_*; returns the LB once settled."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    started = time.monotonic()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=out) as bar:
        task = bar.add_task(f"{lb_name}: {lb.get('provisioning_status')}")
        while str(lb.get("provisioning_status")).startswith("PENDING"):
            if time.monotonic() - started > timeout:
                err.print(f"[red]{lb_name} still {lb.get('provisioning_status')} after {timeout:.0f} s[/red]")
                raise typer.Exit(1)
            time.sleep(0.5)
            lb = actuator.octavia.get_load_balancer(str(lb["id"]))
            bar.update(task, description=f"{lb_name}: {lb.get('provisioning_status')}")
    return lb
