"""An in-process Kubernetes API server for tests, speaking the real wire protocol on 127.0.0.1.

No kube-apiserver can run on the test machines, and mocks that answer canned responses cannot test what
matters for a controller: resuming a watch from a resourceVersion, 410 Gone after compaction, bookmarks,
409 on a stale write, finalizers. This fake keeps those semantics (see `kube_store.Store`) behind the same
URLs, so an unmodified client library talks to it. Test hooks simulate the failures a controller must
survive: `restart()`, `compact()`, `inject_fault()`, plus per-verb request counters.

Not implemented: discovery beyond `/version`, server-side apply, strategic merge of lists, admission,
field selectors other than metadata.name/namespace, `sendInitialEvents`, watches from a future
resourceVersion, snapshot-consistent pagination, legacy `/watch/` paths, deletecollection, RBAC.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.fakes.kube_semantics import (
    DEFAULT_RESOURCES,
    JSON,
    ApiError,
    ResourceType,
    object_matcher,
)
from tests.fakes.kube_store import BUILTIN_NAMESPACES, Event, Store


@dataclass
class Fault:
    """Answer the next `count` matching requests with `status` instead of serving them."""

    status: int
    count: int
    verb: str | None = None
    plural: str | None = None
    path_prefix: str | None = None
    message: str = "injected fault"


@dataclass(frozen=True)
class _Target:
    rt: ResourceType
    version: str
    namespace: str | None  # None: all namespaces (or a cluster-scoped resource's collection)
    name: str | None
    subresource: str | None


_VERB_BY_METHOD = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


class FakeKubeApiServer:
    """Serve `resources` on http://127.0.0.1:<port>. Use as `async with FakeKubeApiServer() as api:`."""

    def __init__(
        self,
        resources: tuple[ResourceType, ...] = DEFAULT_RESOURCES,
        *,
        history: int = 10_000,
        bookmark_interval: float = 60.0,
        namespaces: tuple[str, ...] = BUILTIN_NAMESPACES,
        token: str | None = None,
    ) -> None:
        self.store = Store(resources, history=history, namespaces=namespaces)
        self.bookmark_interval = bookmark_interval
        self.token = token
        self.port = 0
        #: Requests by verb: list, watch, get, create, update, patch, delete (faults included).
        self.requests: Counter[str] = Counter()
        #: Requests by (verb, plural).
        self.requests_by_resource: Counter[tuple[str, str]] = Counter()
        self._faults: list[Fault] = []
        self._watches: set[asyncio.Queue[Event | None]] = set()
        self._watch_transports: set[asyncio.Transport] = set()
        self._runner: web.AppRunner | None = None

    # --------------------------------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def open_watches(self) -> int:
        """Watch connections being served now."""
        return len(self._watches)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeKubeApiServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def restart(self, *, keep_state: bool = True, downtime: float = 0.0) -> None:
        """Go down as a restarting API server does: every connection dropped mid-stream, the port closed
        for `downtime` seconds, then serving again on the same port. `keep_state=False` also loses every
        object and all history (resourceVersions keep rising, so old ones get 410)."""
        await self.stop()
        if not keep_state:
            self.store.reset()
        await asyncio.sleep(downtime)
        await self.start()

    def drop_watches(self) -> None:
        """Cut every open watch connection without a clean end of stream."""
        for transport in list(self._watch_transports):
            transport.abort()
        for queue in list(self._watches):
            queue.put_nowait(None)

    def compact(self) -> None:
        """Forget the event history: watches from any resourceVersion before now get 410 Gone."""
        self.store.compact()

    def inject_fault(
        self,
        status: int = 500,
        *,
        count: int = 1,
        verb: str | None = None,
        plural: str | None = None,
        path_prefix: str | None = None,
        message: str = "injected fault",
    ) -> Fault:
        """Make the next `count` requests matching verb/plural/path prefix fail with `status`."""
        fault = Fault(status, count, verb, plural, path_prefix, message)
        self._faults.append(fault)
        return fault

    def send_bookmarks(self) -> None:
        """Send a BOOKMARK now on every watch that asked for bookmarks."""
        for queue in list(self._watches):
            queue.put_nowait(_BOOKMARK)

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig that points a client library at this server."""
        user: JSON = {"token": self.token} if self.token else {}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config))
        return path

    # ------------------------------------------------------------------- direct access for test set-up

    def _rt(self, body: Mapping[str, Any]) -> ResourceType:
        return self.store.resource_for(str(body.get("apiVersion", "")), str(body.get("kind", "")))

    def create(self, body: Mapping[str, Any]) -> JSON:
        """Create as a client would (events, resourceVersion, generation), without HTTP."""
        rt = self._rt(body)
        return self.store.create(rt, body["metadata"].get("namespace", "default") if rt.namespaced else "", body)

    def update(self, body: Mapping[str, Any], *, status: bool = False) -> JSON:
        rt, meta = self._rt(body), body["metadata"]
        namespace = meta.get("namespace", "default") if rt.namespaced else ""
        return self.store.update(rt, namespace, meta["name"], body, subresource="status" if status else None)

    def apply(self, body: Mapping[str, Any]) -> JSON:
        """Create, or update whatever is there (unconditionally, like `kubectl replace --force` minus the
        delete); keeps tests short."""
        rt, meta = self._rt(body), body["metadata"]
        namespace = meta.get("namespace", "default") if rt.namespaced else ""
        try:
            current = self.store.get(rt, namespace, meta["name"])
        except ApiError:
            return self.create(body)
        fresh = copy.deepcopy(dict(body))
        fresh["metadata"] = {**meta, "resourceVersion": current["metadata"]["resourceVersion"]}
        return self.store.update(rt, namespace, meta["name"], fresh)

    def delete(self, api_version: str, kind: str, name: str, namespace: str = "default") -> JSON:
        rt = self.store.resource_for(api_version, kind)
        return self.store.delete(rt, namespace if rt.namespaced else "", name)

    def get(self, api_version: str, kind: str, name: str, namespace: str = "default") -> JSON:
        rt = self.store.resource_for(api_version, kind)
        return self.store.get(rt, namespace if rt.namespaced else "", name)

    def touch(self, api_version: str, kind: str, name: str, namespace: str = "default") -> JSON:
        """A write that changes only resourceVersion and managedFields (a MODIFIED event all the same)."""
        rt = self.store.resource_for(api_version, kind)
        return self.store.touch(rt, namespace if rt.namespaced else "", name)

    # -------------------------------------------------------------------------------------------- HTTP

    def _target(self, path: str) -> _Target:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces" and (group, rest[2]) in self.store.resources:
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rt = self.store.resource(group, version, rest[0])
        if rt.namespaced is False and namespace is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if subresource is not None and (subresource != "status" or not rt.status):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rt.namespaced:
            namespace = ""
        return _Target(rt, version, namespace, name, subresource)

    def _out(self, obj: JSON, target: _Target) -> JSON:
        obj["apiVersion"] = target.rt.api_version(target.version)
        return obj

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            if request.path == "/version":
                return web.json_response({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake"})
            target = self._target(request.path)
            watching = _flag(request.query.get("watch"))
            verb = _VERB_BY_METHOD.get(request.method) or ("get" if target.name else "watch" if watching else "list")
            self.requests[verb] += 1
            self.requests_by_resource[(verb, target.rt.plural)] += 1
            self._check_faults(request, verb, target)
            if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if verb == "watch":
                return await self._watch(request, target)
            return web.json_response(await self._serve(request, target, verb), status=201 if verb == "create" else 200)
        except ApiError as err:
            return web.json_response(err.status(), status=err.code)

    def _check_faults(self, request: web.Request, verb: str, target: _Target) -> None:
        for fault in self._faults:
            if (
                (fault.verb is None or fault.verb == verb)
                and (fault.plural is None or fault.plural == target.rt.plural)
                and (fault.path_prefix is None or request.path.startswith(fault.path_prefix))
            ):
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                reason = {409: "Conflict", 429: "TooManyRequests", 503: "ServiceUnavailable"}.get(
                    fault.status, "InternalError"
                )
                raise ApiError(fault.status, reason, fault.message)

    async def _serve(self, request: web.Request, target: _Target, verb: str) -> JSON:
        store, rt = self.store, target.rt
        manager = request.query.get("fieldManager") or request.headers.get("User-Agent", "unknown").split("/")[0]
        ns = target.namespace or ""
        if verb == "list":
            return self._list(request, target)
        if verb == "create":
            if target.name is not None or (target.namespace is None and rt.namespaced):
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            return self._out(store.create(rt, ns, await _body(request), manager), target)
        if target.name is None:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if verb == "get":
            return self._out(store.get(rt, ns, target.name), target)
        if verb == "update":
            body = await _body(request)
            return self._out(store.update(rt, ns, target.name, body, manager, subresource=target.subresource), target)
        if verb == "patch":
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
            patch = json.loads(await request.text() or "null")
            obj = store.patch(rt, ns, target.name, content_type, patch, manager, subresource=target.subresource)
            return self._out(obj, target)
        options = json.loads(await request.text() or "{}") if request.can_read_body else {}
        return self._out(store.delete(rt, ns, target.name, (options or {}).get("preconditions")), target)

    def _list(self, request: web.Request, target: _Target) -> JSON:
        match = object_matcher(request.query.get("labelSelector"), request.query.get("fieldSelector"))
        limit = int(request.query.get("limit") or 0)
        items, rv, token = self.store.select(
            target.rt, target.namespace or None, match=match, limit=limit, continue_=request.query.get("continue")
        )
        if not target.rt.crd:  # built-in lists carry kind/apiVersion once, not per item
            for item in items:
                item.pop("kind", None)
                item.pop("apiVersion", None)
        else:
            items = [self._out(item, target) for item in items]
        metadata: JSON = {"resourceVersion": str(rv)}
        if token:
            metadata["continue"] = token
        return {
            "kind": f"{target.rt.kind}List",
            "apiVersion": target.rt.api_version(target.version),
            "metadata": metadata,
            "items": items,
        }

    async def _watch(self, request: web.Request, target: _Target) -> web.StreamResponse:
        """Replay from `resourceVersion` (or the current state as ADDED when none or "0" is given), then
        stream. A too-old resourceVersion is an ERROR event carrying a 410 Status, on a 200 response."""
        match = object_matcher(request.query.get("labelSelector"), request.query.get("fieldSelector"))
        bookmarks = _flag(request.query.get("allowWatchBookmarks"))
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        since = request.query.get("resourceVersion") or "0"
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        try:
            if since == "0":
                backlog = [
                    Event(self.store.rv, "ADDED", target.rt, obj, None)
                    for obj in self.store.current(target.rt, target.namespace or None)
                ]
            else:
                backlog = self.store.events_since(int(since))
        except (ApiError, ValueError) as err:
            status = err if isinstance(err, ApiError) else ApiError(400, "BadRequest", str(err))
            await response.write(_line({"type": "ERROR", "object": status.status()}))
            return response
        for event in backlog:  # no await between reading the backlog and subscribing: nothing is lost
            queue.put_nowait(event)
        self.store.watchers.add(queue.put_nowait)
        self._watches.add(queue)
        if request.transport is not None:
            self._watch_transports.add(request.transport)
        try:
            await self._stream(response, queue, target, match, bookmarks, timeout)
        except (ConnectionError, RuntimeError):
            pass  # the client went away, or drop_watches() cut the connection
        finally:
            self.store.watchers.discard(queue.put_nowait)
            self._watches.discard(queue)
            if request.transport is not None:
                self._watch_transports.discard(request.transport)
        return response

    async def _stream(
        self,
        response: web.StreamResponse,
        queue: asyncio.Queue[Event | None],
        target: _Target,
        match: Callable[[JSON], bool],
        bookmarks: bool,
        seconds: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        next_bookmark = loop.time() + self.bookmark_interval
        while (left := deadline - loop.time()) > 0:
            try:
                event = await asyncio.wait_for(queue.get(), min(left, max(0.0, next_bookmark - loop.time())))
            except TimeoutError:
                event = _BOOKMARK if loop.time() >= next_bookmark else None
                if event is None:
                    continue
            if event is None:  # drop_watches(): end without the closing chunk, as a dead server would
                return
            if event is _BOOKMARK:
                next_bookmark = loop.time() + self.bookmark_interval
                if bookmarks and queue.empty():
                    meta = {"resourceVersion": str(self.store.rv)}
                    obj = {
                        "kind": target.rt.kind,
                        "apiVersion": target.rt.api_version(target.version),
                        "metadata": meta,
                    }
                    await response.write(_line({"type": "BOOKMARK", "object": obj}))
                continue
            out = event.seen_by(target.rt, target.namespace, match)
            if out is not None:
                await response.write(_line({"type": out[0], "object": self._out(out[1], target)}))
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()


_BOOKMARK = Event(0, "BOOKMARK", DEFAULT_RESOURCES[0], {}, None)


async def _body(request: web.Request) -> JSON:
    try:
        body = json.loads(await request.text())
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"invalid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the body must be an object")
    return body


def _flag(value: str | None) -> bool:
    """A boolean query parameter as Go's strconv.ParseBool reads it (clients send `true`, `True`, `1`)."""
    return value in ("1", "t", "T", "true", "True", "TRUE")


def _line(event: JSON) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"
