"""An HTTP reverse proxy for tests that injects faults in front of one real OpenStack endpoint.

Real services rarely fail on cue; the failures that matter to a controller (a 409 while Octavia is
busy, a 503 from an overloaded API, a timeout, a connection reset, and above all a request that
reached the service but whose answer was lost, which is what leaks resources) are programmed here
per request, by HTTP method and path regex, while everything else passes through unchanged.

It runs an aiohttp server on its own event loop in a background thread, so synchronous test code
(and openstacksdk, which is synchronous) can use it::

    with FaultProxy("http://127.0.0.1:9876") as proxy:            # in front of Octavia
        proxy.inject("POST", r"/v2/lbaas/loadbalancers$", Fault.status(409), times=2)
        proxy.inject("DELETE", r"/loadbalancers/", Fault.drop_response())
        write_clouds_yaml(src, dst, {"load-balancer": proxy.url})
        ...
        assert proxy.count("POST", r"/loadbalancers$") == 3

Requests are matched against the rules in the order they were injected; the first matching rule
with uses left applies and uses one up. Every request is recorded (method, path, status, fault).
The Host header is passed through unchanged, so services that build links from it (version
discovery, pagination) point clients back at the proxy, not around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import yaml
from aiohttp import web

# headers that describe one hop, not the message (RFC 9110 7.6.1), plus the ones aiohttp recomputes
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)

# the error body each service family returns, so that the client's error parsing sees what it
# would see from the real service (openstacksdk reads "message" or "faultstring")
_ERROR_STYLE_BY_PORT = {9876: "octavia", 9696: "neutron", 8774: "nova", 8776: "nova", 9292: "nova", 8778: "nova"}
_NOVA_ERROR_KEYS = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    409: "conflictingRequest",
    413: "overLimit",
    429: "overLimit",
    500: "computeFault",
    503: "serviceUnavailable",
}
_NEUTRON_ERROR_TYPES = {409: "Conflict", 500: "InternalServerError", 503: "ServiceUnavailable"}


@dataclass(frozen=True)
class Fault:
    """What happens to a matching request. Build one with the class methods."""

    kind: str  # "status" | "reset" | "hang" | "drop_response" | "delay"
    status_code: int | None = None
    message: str | None = None
    body: Any = None
    headers: Mapping[str, str] | None = None
    seconds: float | None = None

    @classmethod
    def status(
        cls,
        code: int,
        message: str | None = None,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """Answer CODE without contacting the service, with an OpenStack-style JSON error body (or BODY:
        a dict/list is sent as JSON, str/bytes as they are)."""
        return cls("status", status_code=code, message=message, body=body, headers=headers)

    @classmethod
    def reset(cls) -> Fault:
        """Reset the connection (TCP RST) without contacting the service: the client gets a connection error."""
        return cls("reset")

    @classmethod
    def hang(cls, seconds: float | None = None) -> Fault:
        """Never answer: hold the request for SECONDS (None: until the proxy stops), then reset it.
        The service is not contacted. Set the client's timeout below SECONDS."""
        return cls("hang", seconds=seconds)

    @classmethod
    def drop_response(cls) -> Fault:
        """Forward the request to the service, then reset the client's connection instead of answering:
        the change happened, the client cannot know (the classic source of leaked resources)."""
        return cls("drop_response")

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Wait SECONDS, then pass the request through."""
        return cls("delay", seconds=seconds)


@dataclass
class Rule:
    method: str  # upper case, or "*"
    path: re.Pattern[str]
    fault: Fault
    times: int | None  # None: every matching request
    hits: int = 0

    @property
    def remaining(self) -> int | None:
        return None if self.times is None else self.times - self.hits

    def matches(self, method: str, path: str) -> bool:
        return (
            (self.times is None or self.hits < self.times)
            and self.method in ("*", method)
            and self.path.search(path) is not None
        )


@dataclass
class RequestRecord:
    """One request, recorded when it arrives (status None, done False) and completed when it ends."""

    method: str
    path: str
    query: str
    fault: str | None  # the injected fault's kind, None for a plain pass-through
    status: int | None = None  # what the service answered, or the injected status; None: nobody answered
    done: bool = False
    duration: float = field(default=0.0, compare=False)


class FaultProxy:
    """A reverse proxy to UPSTREAM (scheme://host:port; the request path is forwarded unchanged)."""

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0, error_style: str = "auto") -> None:
        parts = urlsplit(upstream)
        self.upstream = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
        self._host = host
        self._port = port
        if error_style == "auto":
            error_style = _ERROR_STYLE_BY_PORT.get(parts.port or 80, "octavia")
        self.error_style = error_style
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._records: list[RequestRecord] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.ServerRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopping: asyncio.Event | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FaultProxy:
        if self._thread is not None:
            return self
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"faultproxy-{self.upstream}", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._thread = self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("FaultProxy is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def rebase(self, url: str) -> str:
        """URL (e.g. a catalog endpoint such as http://127.0.0.1:8776/v3/%(project_id)s) with its scheme,
        host and port replaced by the proxy's: the endpoint override that sends that service through here."""
        parts = urlsplit(url)
        return urlunsplit(("http", f"{self._host}:{self.port}", parts.path, parts.query, parts.fragment))

    # ------------------------------------------------------------------ faults
    def inject(self, method: str, path: str, fault: Fault, *, times: int | None = 1) -> Rule:
        """The next TIMES requests (None: all) whose METHOD ("*" for any) matches and whose path (without
        the query string) matches the regex PATH (re.search) get FAULT."""
        rule = Rule(method.upper(), re.compile(path), fault, times)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()

    # ------------------------------------------------------------------ records
    @property
    def requests(self) -> list[RequestRecord]:
        """Every request so far, in arrival order (copies; held ones have done=False)."""
        with self._lock:
            return [replace(r) for r in self._records]

    def calls(self, method: str | None = None, path: str | None = None) -> list[RequestRecord]:
        """Recorded requests, optionally only those with METHOD and a path matching the regex PATH."""
        pattern = re.compile(path) if path is not None else None
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper()) and (pattern is None or pattern.search(r.path))
        ]

    def count(self, method: str | None = None, path: str | None = None) -> int:
        return len(self.calls(method, path))

    def clear_requests(self) -> None:
        with self._lock:
            self._records.clear()

    # ------------------------------------------------------------------ the server (event loop thread)
    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        # no decompression: bodies pass through byte for byte, with their Content-Encoding
        self._session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=300))
        self._runner = web.ServerRunner(web.Server(self._handle), shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self._port = self._runner.addresses[0][1]  # the port the OS picked when port was 0

    async def _shutdown(self) -> None:
        assert self._stopping is not None
        self._stopping.set()  # held requests end now
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _arrive(self, request: web.BaseRequest) -> tuple[Fault | None, RequestRecord]:
        """Take the first matching rule with uses left, and record the request."""
        with self._lock:
            rule = next((r for r in self._rules if r.matches(request.method, request.path)), None)
            if rule is not None:
                rule.hits += 1
            fault = rule.fault if rule else None
            record = RequestRecord(request.method, request.path, request.query_string, fault.kind if fault else None)
            self._records.append(record)
            return fault, record

    def _finish(self, record: RequestRecord, status: int | None, started: float) -> None:
        with self._lock:
            record.status, record.done, record.duration = status, True, time.monotonic() - started

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.monotonic()
        fault, record = self._arrive(request)
        body = await request.content.read()

        if fault is not None and fault.kind == "status":
            self._finish(record, fault.status_code, started)
            return self._error_response(fault)
        if fault is not None and fault.kind == "reset":
            self._finish(record, None, started)
            return _reset(request)
        if fault is not None and fault.kind == "hang":
            assert self._stopping is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), fault.seconds)
            self._finish(record, None, started)
            return _reset(request)
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.seconds or 0)

        try:
            status, headers, payload = await self._forward(request, body)
        except (aiohttp.ClientError, TimeoutError) as e:
            # the service itself is unreachable: say so the way a load balancer in front of it would
            self._finish(record, 502, started)
            return web.json_response({"faultstring": f"fault proxy: upstream {self.upstream}: {e!r}"}, status=502)
        self._finish(record, status, started)
        if fault is not None and fault.kind == "drop_response":
            return _reset(request)
        return web.Response(status=status, headers=headers, body=payload)

    async def _forward(self, request: web.BaseRequest, body: bytes) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(
            request.method,
            self.upstream + request.raw_path,
            headers=headers,
            data=body if body else None,
            allow_redirects=False,
            # send exactly the client's headers, none of aiohttp's defaults
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        ) as resp:
            payload = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_BY_HOP}
            return resp.status, out, payload

    def _error_response(self, fault: Fault) -> web.Response:
        code = fault.status_code or 500
        headers = dict(fault.headers or {})
        if fault.body is not None:
            if isinstance(fault.body, (bytes, str)):
                return web.Response(status=code, body=fault.body, headers=headers)
            return web.json_response(fault.body, status=code, headers=headers)
        message = fault.message or f"Injected {code} by the test fault proxy"
        if self.error_style == "neutron":
            kind = _NEUTRON_ERROR_TYPES.get(code, "NeutronError")
            payload: dict[str, Any] = {"NeutronError": {"type": kind, "message": message, "detail": ""}}
        elif self.error_style == "nova":
            payload = {_NOVA_ERROR_KEYS.get(code, "computeFault"): {"code": code, "message": message}}
        else:  # Octavia (WSME)
            payload = {"faultcode": "Client" if code < 500 else "Server", "faultstring": message, "debuginfo": None}
        return web.Response(
            status=code, text=json.dumps(payload), content_type="application/json", headers=headers or None
        )


def _reset(request: web.BaseRequest) -> web.Response:
    """Close the client's connection with a TCP RST (SO_LINGER 0) instead of answering."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    # aiohttp's attempt to send this finds the transport closed and drops it quietly
    return web.Response(status=599)


def endpoint_override_key(service_type: str) -> str:
    """openstacksdk's per-service clouds.yaml key, e.g. load-balancer -> load_balancer_endpoint_override."""
    return service_type.replace("-", "_") + "_endpoint_override"


def write_clouds_yaml(
    source: str | Path,
    destination: str | Path,
    endpoint_overrides: Mapping[str, str],
    *,
    api_timeout: float | None = None,
    clouds: Iterable[str] | None = None,
) -> Path:
    """Copy clouds.yaml SOURCE to DESTINATION with, in every cloud (or only CLOUDS), a
    `<service>_endpoint_override` per entry of ENDPOINT_OVERRIDES (service type -> URL, e.g.
    {"load-balancer": proxy.url}) and, if given, the per-request timeout `api_timeout` in seconds.

    The proxy's bare URL works for every service: openstacksdk discovers the API version through it.
    (A URL with %(project_id)s, as Cinder's catalog entry has, does not: discovery does not fill it in.)"""
    data = yaml.safe_load(Path(source).read_text())
    wanted = set(clouds) if clouds is not None else None
    for name, cloud in data["clouds"].items():
        if wanted is not None and name not in wanted:
            continue
        for service_type, url in endpoint_overrides.items():
            cloud[endpoint_override_key(service_type)] = url
        if api_timeout is not None:
            cloud["api_timeout"] = api_timeout
    destination = Path(destination)
    destination.write_text(yaml.safe_dump(data, default_flow_style=False))
    return destination
