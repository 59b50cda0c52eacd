"""What every CSI servicer shares: error translation to gRPC codes, per-object locks, bounded waits, metrics,
and the Identity service.

An RPC handler raises; :func:`rpc` turns the exception into the status the spec expects, logs it and counts
it, so no handler ever calls ``context.abort`` itself and an unexpected failure still reaches the CO as
INTERNAL with a message instead of a dropped stream.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf import wrappers_pb2
from prometheus_client import Counter, Histogram

from stackway import __version__
from stackway.openstack.clients import errors as os_errors
from stackway.openstack.csi.host import HostError
from stackway.openstack.csi.proto import csi_pb2 as csi
from stackway.openstack.csi.proto import csi_pb2_grpc as csi_grpc
from stackway.openstack.csi.rules import Code, CsiError
from stackway.openstack.retry import Backoff

log = structlog.get_logger("stackway.csi")
T = TypeVar("T")
Handler = Callable[[Any, Any, grpc.ServicerContext], Any]

RPC_SECONDS = Histogram(
    "csi_rpc_duration_seconds",
    "Duration of CSI RPCs served, by method and gRPC code.",
    ["method", "code"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
RPC_ERRORS = Counter("csi_rpc_errors_total", "CSI RPCs that failed, by method and gRPC code.", ["method", "code"])


def openstack_code(err: os_errors.OpenStackError) -> Code:
    """The default code for an OpenStack failure; RPCs that know better (a missing source is NOT_FOUND, a
    bad marker ABORTED) catch the error first."""
    if isinstance(err, os_errors.NotFound):
        return Code.NOT_FOUND
    if isinstance(err, os_errors.Conflict):
        return Code.ABORTED
    if isinstance(err, os_errors.QuotaExceeded):
        return Code.RESOURCE_EXHAUSTED
    if isinstance(err, os_errors.Forbidden):
        return Code.PERMISSION_DENIED
    if isinstance(err, os_errors.BadRequest):
        return Code.INVALID_ARGUMENT
    if err.retryable:
        return Code.UNAVAILABLE
    return Code.INTERNAL


def rpc(handler: Handler) -> Handler:
    """Wrap a servicer method: exceptions become gRPC statuses, and every call is timed and logged."""
    method = handler.__name__

    @functools.wraps(handler)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        code, message = Code.INTERNAL, ""
        try:
            response = handler(self, request, context)
        except CsiError as exc:
            code, message = exc.code, exc.message
        except os_errors.OpenStackError as exc:
            code, message = openstack_code(exc), str(exc)
        except HostError as exc:
            code, message = Code.INTERNAL, str(exc)
        except Exception as exc:
            log.exception("csi rpc crashed", method=method)
            code, message = Code.INTERNAL, f"{type(exc).__name__}: {exc}"
        else:
            elapsed = time.perf_counter() - started
            RPC_SECONDS.labels(method, "OK").observe(elapsed)
            log.debug("csi rpc", method=method, seconds=round(elapsed, 3))
            return response
        elapsed = time.perf_counter() - started
        RPC_SECONDS.labels(method, code.name).observe(elapsed)
        RPC_ERRORS.labels(method, code.name).inc()
        log.info("csi rpc failed", method=method, code=code.name, message=message, seconds=round(elapsed, 3))
        context.abort(grpc.StatusCode[code.name], message)
        raise AssertionError("unreachable: context.abort raises")

    return wrapper


class KeyedLocks:
    """One operation at a time per volume, snapshot or name. A second concurrent call for the same key gets
    ABORTED at once (the spec's answer for "operation pending"); the CO retries it with backoff."""

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._mutex = threading.Lock()

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._mutex:
            if key in self._held:
                raise CsiError(Code.ABORTED, f"an operation on {key} is already in progress")
            self._held.add(key)
        try:
            yield
        finally:
            with self._mutex:
                self._held.discard(key)


@dataclass(frozen=True)
class Waits:
    """How long the controller waits for Cinder and Nova, in seconds; cloud-provider-openstack waits about
    70 s for an attach and 45 s for a detach. Past a deadline the RPC ends DEADLINE_EXCEEDED and the CO
    retries it, which finds the operation where it left it (every RPC is idempotent)."""

    volume_ready: float = 300.0
    attach: float = 120.0
    detach: float = 90.0
    snapshot_ready: float = 300.0
    extend: float = 120.0
    delete: float = 60.0
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=0.25, factor=1.5, cap=3.0, jitter=0.3))


@dataclass(frozen=True)
class ControllerConfig:
    """How the controller runs; the defaults are a drop-in replacement for cloud-provider-openstack."""

    driver_name: str = "cinder.csi.openstack.org"
    #: Advertise and honour topology (the Cinder AZ as ``topology.cinder.csi.openstack.org/zone``).
    topology: bool = True
    #: Refuse a publish once the server has this many volumes attached (0: leave it to the CO, which
    #: enforces the node's max_volumes_per_node).
    max_volumes_per_node: int = 0
    waits: Waits = field(default_factory=Waits)


def wait_for(
    what: str,
    fetch: Callable[[], T],
    done: Callable[[T], bool],
    *,
    deadline: float,
    backoff: Backoff,
    failed: Callable[[T], str | None] = lambda _: None,
) -> T:
    """Poll ``fetch`` with bounded backoff until ``done``; a ``failed`` reason raises INTERNAL, the deadline
    DEADLINE_EXCEEDED. Transient OpenStack errors (5xx, timeouts) while polling are waited out too."""
    start = time.monotonic()
    delays = backoff.delays()
    while True:
        try:
            value = fetch()
        except os_errors.OpenStackError as err:
            if not err.retryable:
                raise
        else:
            if done(value):
                return value
            reason = failed(value)
            if reason:
                raise CsiError(Code.INTERNAL, f"{what}: {reason}")
        delay = next(delays)
        if time.monotonic() - start + delay > deadline:
            raise CsiError(Code.DEADLINE_EXCEEDED, f"{what}: not done after {deadline:.0f} s; retry continues it")
        time.sleep(delay)


class IdentityServicer(csi_grpc.IdentityServicer):
    """Who the plugin is and what it offers; the same answers in every mode of ``stackway csi``."""

    def __init__(
        self, driver_name: str, *, controller: bool, topology: bool, ready: Callable[[], bool] = lambda: True
    ) -> None:
        self.driver_name = driver_name
        self.controller = controller
        self.topology = topology
        self.ready = ready

    @rpc
    def GetPluginInfo(self, request: csi.GetPluginInfoRequest, context: grpc.ServicerContext) -> Any:
        return csi.GetPluginInfoResponse(name=self.driver_name, vendor_version=__version__)

    @rpc
    def GetPluginCapabilities(self, request: csi.GetPluginCapabilitiesRequest, context: grpc.ServicerContext) -> Any:
        service = csi.PluginCapability.Service
        caps = []
        if self.controller:
            caps.append(csi.PluginCapability(service=service(type=service.CONTROLLER_SERVICE)))
        if self.topology:
            caps.append(csi.PluginCapability(service=service(type=service.VOLUME_ACCESSIBILITY_CONSTRAINTS)))
        expansion = csi.PluginCapability.VolumeExpansion
        caps.append(csi.PluginCapability(volume_expansion=expansion(type=expansion.ONLINE)))
        return csi.GetPluginCapabilitiesResponse(capabilities=caps)

    @rpc
    def Probe(self, request: csi.ProbeRequest, context: grpc.ServicerContext) -> Any:
        return csi.ProbeResponse(ready=wrappers_pb2.BoolValue(value=self.ready()))
