"""The fake API server's storage: what etcd plus the generic registry do in a real kube-apiserver.

Every write goes through `_commit`, which takes the next value of one global resourceVersion counter,
records the event in a bounded history (the compaction window: watches from a resourceVersion older than
the window get 410 Gone) and hands it to the live watchers synchronously, so a watch that replays history
and then subscribes can neither miss nor duplicate an event.
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.fakes.kube_semantics import (
    DEFAULT_RESOURCES,
    JSON,
    ApiError,
    ResourceType,
    conflict,
    gone,
    json_patch,
    merge_patch,
    not_found,
)

#: Namespaces a fresh cluster has.
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_VOLATILE = ("resourceVersion", "managedFields")


@dataclass(frozen=True)
class Event:
    """One committed change. `old` is the object before a MODIFIED, so selector watches can turn a change
    that leaves their selection into DELETED and one that enters it into ADDED, as the real server does."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    resource: ResourceType
    obj: JSON
    old: JSON | None

    def seen_by(
        self, rt: ResourceType, namespace: str | None, match: Callable[[JSON], bool]
    ) -> tuple[str, JSON] | None:
        """What a watch of `rt` in `namespace` (all when empty or None) selecting `match` sees of this."""
        if self.resource != rt:
            return None
        if namespace and _meta(self.obj).get("namespace") != namespace:
            return None
        now_in = match(self.obj)
        was_in = self.old is not None and match(self.old)
        if self.type == "MODIFIED" and now_in != was_in:
            return ("ADDED" if now_in else "DELETED", copy.deepcopy(self.obj))
        return (self.type, copy.deepcopy(self.obj)) if now_in else None


Watcher = Callable[[Event], None]


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: Mapping[str, Any]) -> JSON:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _spec_part(obj: Mapping[str, Any], rt: ResourceType) -> JSON:
    """What `metadata.generation` tracks: everything but metadata (and status, where it is a subresource)."""
    skip = {"metadata", "apiVersion", "kind"} | ({"status"} if rt.status else set())
    return {k: v for k, v in obj.items() if k not in skip}


def _content(obj: Mapping[str, Any]) -> JSON:
    """The object without the fields every write changes, to recognise a write that changes nothing."""
    meta = {k: v for k, v in _meta(obj).items() if k not in _VOLATILE}
    return {**{k: v for k, v in obj.items() if k not in ("apiVersion", "metadata")}, "metadata": meta}


class Store:
    """Objects by resource, namespace and name, with Kubernetes write semantics. Not thread-safe: it lives
    on the event loop of the server that owns it."""

    def __init__(
        self,
        resources: Iterable[ResourceType] = DEFAULT_RESOURCES,
        *,
        history: int = 10_000,
        namespaces: Iterable[str] = BUILTIN_NAMESPACES,
        enforce_namespaces: bool = True,
    ) -> None:
        self.resources: dict[tuple[str, str], ResourceType] = {}
        for rt in resources:
            self.add_resource(rt)
        self.rv = 0
        #: Watches may start from this resourceVersion or later; older is 410 Gone.
        self.floor = 0
        self.history_limit = history
        self.enforce_namespaces = enforce_namespaces
        self._objects: dict[tuple[str, str], dict[tuple[str, str], JSON]] = {}
        self._history: deque[Event] = deque()
        self.watchers: set[Watcher] = set()
        ns_type = self.resources.get(("", "namespaces"))
        for name in namespaces if ns_type is not None else ():
            assert ns_type is not None
            self.create(ns_type, "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # ---------------------------------------------------------------------------------------- catalogue

    def add_resource(self, rt: ResourceType) -> None:
        """Start serving a resource (as installing a CRD does)."""
        self.resources[(rt.group, rt.plural)] = rt

    def remove_resource(self, group: str, plural: str) -> None:
        """Stop serving a resource (as deleting a CRD does); its objects are dropped."""
        self.resources.pop((group, plural), None)
        self._objects.pop((group, plural), None)

    def resource(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self.resources.get((group, plural))
        if rt is None or version not in rt.versions:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return rt

    def resource_for(self, api_version: str, kind: str) -> ResourceType:
        group, _, version = api_version.rpartition("/")
        for rt in self.resources.values():
            if rt.group == group and rt.kind == kind and version in rt.versions:
                return rt
        raise ApiError(404, "NotFound", f"no resource for {api_version} {kind}")

    # ----------------------------------------------------------------------------------------- reading

    def _bucket(self, rt: ResourceType) -> dict[tuple[str, str], JSON]:
        return self._objects.setdefault((rt.group, rt.plural), {})

    def get(self, rt: ResourceType, namespace: str, name: str) -> JSON:
        obj = self._bucket(rt).get((namespace, name))
        if obj is None:
            raise not_found(rt, name)
        return copy.deepcopy(obj)

    def select(
        self,
        rt: ResourceType,
        namespace: str | None,
        *,
        match: Callable[[JSON], bool] = lambda _o: True,
        limit: int = 0,
        continue_: str | None = None,
    ) -> tuple[list[JSON], int, str | None]:
        """Items in (namespace, name) order, the resourceVersion of the list, and a continue token when
        `limit` cut it short. Later pages read the current state, not a snapshot (a simplification)."""
        list_rv, after = self.rv, None
        if continue_:
            try:
                token = json.loads(base64.urlsafe_b64decode(continue_.encode()))
                list_rv, after = int(token["rv"]), tuple(token["after"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ApiError(400, "BadRequest", "invalid continue token") from exc
            if list_rv < self.floor:
                raise gone("The provided continue parameter is too old to display a consistent list result.")
        items: list[JSON] = []
        for key in sorted(self._bucket(rt)):
            if (namespace is not None and key[0] != namespace) or (after is not None and key <= after):
                continue
            obj = self._bucket(rt)[key]
            if not match(obj):
                continue
            if limit and len(items) == limit:
                last = _meta(items[-1])
                token = {"rv": list_rv, "after": [last.get("namespace", ""), last["name"]]}
                return items, list_rv, base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
            items.append(copy.deepcopy(obj))
        return items, list_rv, None

    def events_since(self, rv: int) -> list[Event]:
        """Committed events after `rv`, or 410 Gone when they are no longer all kept."""
        if rv < self.floor:
            raise gone(f"too old resource version: {rv} ({self.floor + 1})")
        return [e for e in self._history if e.rv > rv]

    def current(self, rt: ResourceType, namespace: str | None) -> list[JSON]:
        return self.select(rt, namespace)[0]

    # ----------------------------------------------------------------------------------------- writing

    def _commit(self, type_: str, rt: ResourceType, obj: JSON, old: JSON | None) -> JSON:
        self.rv += 1
        _meta(obj)["resourceVersion"] = str(self.rv)
        key = (_meta(obj).get("namespace", ""), _meta(obj)["name"])
        if type_ == "DELETED":
            self._bucket(rt).pop(key, None)
        else:
            self._bucket(rt)[key] = obj
        event = Event(self.rv, type_, rt, copy.deepcopy(obj), old)
        self._history.append(event)
        while len(self._history) > self.history_limit:
            self.floor = self._history.popleft().rv
        for watcher in list(self.watchers):
            watcher(event)
        return copy.deepcopy(obj)

    def compact(self) -> None:
        """Forget all history, as etcd compaction does: every watch from an older resourceVersion gets 410."""
        self._history.clear()
        self.floor = self.rv

    def reset(self) -> None:
        """Lose every object (a restored-from-nothing etcd); resourceVersions keep rising, history is gone."""
        self._objects.clear()
        self.rv += 1  # every resourceVersion handed out so far belongs to the lost history
        self.compact()

    @staticmethod
    def _managed(meta: JSON, manager: str, api_version: str) -> None:
        entries = [e for e in meta.get("managedFields") or [] if e.get("manager") != manager]
        entries.append(
            {
                "manager": manager,
                "operation": "Update",
                "apiVersion": api_version,
                "time": now(),
                "fieldsType": "FieldsV1",
                "fieldsV1": {},
            }
        )
        meta["managedFields"] = entries

    def create(self, rt: ResourceType, namespace: str, body: Mapping[str, Any], manager: str = "fake") -> JSON:
        obj = copy.deepcopy(dict(body))
        meta = obj.setdefault("metadata", {})
        if obj.get("kind", rt.kind) != rt.kind:
            raise ApiError(400, "BadRequest", f"the kind in the data ({obj.get('kind')}) does not match {rt.kind}")
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(422, "Invalid", "metadata.name: Required value: name or generateName is required")
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        body_ns = meta.get("namespace")
        if rt.namespaced:
            if body_ns and body_ns != namespace:
                message = "the namespace of the provided object does not match the namespace sent on the request"
                raise ApiError(400, "BadRequest", message)
            meta["namespace"] = namespace
            if self.enforce_namespaces and ("", namespace) not in self._bucket(self.resources[("", "namespaces")]):
                raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
        else:
            meta.pop("namespace", None)
        if (meta.get("namespace", ""), meta["name"]) in self._bucket(rt):
            raise ApiError(409, "AlreadyExists", f'{rt.qualified} "{meta["name"]}" already exists')
        obj["apiVersion"] = obj.get("apiVersion") or rt.api_version()
        obj["kind"] = rt.kind
        for transient in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(transient, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        self._managed(meta, manager, obj["apiVersion"])
        if rt.status:
            obj.pop("status", None)
        if rt.kind == "Namespace":
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
        return self._commit("ADDED", rt, obj, None)

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        manager: str = "fake",
        *,
        subresource: str | None = None,
    ) -> JSON:
        """PUT semantics: optimistic concurrency on metadata.resourceVersion, status only through /status,
        generation bumped on spec changes, and a write that changes nothing is no write at all."""
        old = self._bucket(rt).get((namespace, name))
        if old is None:
            raise not_found(rt, name)
        given = copy.deepcopy(dict(body))
        gmeta = given.get("metadata") or {}
        if gmeta.get("name", name) != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        rv = gmeta.get("resourceVersion")
        if rv in (None, ""):
            if rt.crd:
                message = "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
                raise ApiError(422, "Invalid", message)
        elif str(rv) != _meta(old)["resourceVersion"]:
            raise conflict(rt, name)
        if subresource == "status":
            new = copy.deepcopy(old)
            if "status" in given:
                new["status"] = given["status"]
            else:
                new.pop("status", None)
        else:
            new = given
            new["kind"] = rt.kind
            new["apiVersion"] = given.get("apiVersion") or old["apiVersion"]
            meta = new.setdefault("metadata", {})
            for fixed in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "generation"):
                if fixed in _meta(old):
                    meta[fixed] = _meta(old)[fixed]
                else:
                    meta.pop(fixed, None)
            meta["managedFields"] = copy.deepcopy(_meta(old).get("managedFields", []))
            if rt.status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            if _meta(old).get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(_meta(old).get("finalizers") or [])
                if added:
                    message = f"metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {sorted(added)!r}"  # noqa: E501
                    raise ApiError(422, "Invalid", message)
            if _spec_part(new, rt) != _spec_part(old, rt):
                meta["generation"] = int(_meta(old).get("generation", 1)) + 1
        known_manager = any(e.get("manager") == manager for e in _meta(old).get("managedFields") or [])
        if _content(new) == _content(old) and known_manager:
            return copy.deepcopy(old)
        self._managed(_meta(new), manager, new["apiVersion"])
        if _meta(new).get("deletionTimestamp") and not _meta(new).get("finalizers"):
            return self._commit("DELETED", rt, new, copy.deepcopy(old))
        return self._commit("MODIFIED", rt, new, copy.deepcopy(old))

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        patch_type: str,
        patch: Any,
        manager: str = "fake",
        *,
        subresource: str | None = None,
    ) -> JSON:
        """Merge patch and JSON patch (strategic merge patch is read as a merge patch for built-in kinds,
        which is what it does for maps; custom resources refuse it, as they do for real)."""
        current = self.get(rt, namespace, name)
        if patch_type == "application/json-patch+json":
            patched = json_patch(current, patch)
        elif patch_type == "application/merge-patch+json" or (
            patch_type == "application/strategic-merge-patch+json" and not rt.crd
        ):
            patched = merge_patch(current, patch)
        else:
            raise ApiError(
                415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {patch_type}"
            )
        if not isinstance(patched, dict):
            raise ApiError(422, "Invalid", "a patch must leave an object")
        return self.update(rt, namespace, name, patched, manager, subresource=subresource)

    def delete(
        self, rt: ResourceType, namespace: str, name: str, preconditions: Mapping[str, Any] | None = None
    ) -> JSON:
        """Finalizers make a delete a mark (deletionTimestamp) that a later update removing the last
        finalizer completes. Deleting a Namespace deletes what is in it."""
        old = self._bucket(rt).get((namespace, name))
        if old is None:
            raise not_found(rt, name)
        pre = preconditions or {}
        if pre.get("resourceVersion") and pre["resourceVersion"] != _meta(old)["resourceVersion"]:
            raise conflict(rt, name)
        if pre.get("uid") and pre["uid"] != _meta(old)["uid"]:
            raise conflict(rt, name)
        if rt.kind == "Namespace" and not rt.group:
            for other in list(self.resources.values()):
                if other.namespaced:
                    for obj in self.current(other, name):
                        self.delete(other, name, _meta(obj)["name"])
        new = copy.deepcopy(old)
        if _meta(old).get("finalizers"):
            if _meta(old).get("deletionTimestamp"):
                return copy.deepcopy(old)
            _meta(new).update(deletionTimestamp=now(), deletionGracePeriodSeconds=0)
            return self._commit("MODIFIED", rt, new, copy.deepcopy(old))
        return self._commit("DELETED", rt, new, copy.deepcopy(old))

    def touch(self, rt: ResourceType, namespace: str, name: str, manager: str = "toucher") -> JSON:
        """Write the object back unchanged under another field manager: only resourceVersion and
        managedFields change, as happens when a second controller applies the same content."""
        obj = self.get(rt, namespace, name)
        self._managed(_meta(obj), manager + secrets.token_hex(2), obj["apiVersion"])
        return self._commit("MODIFIED", rt, obj, self.get(rt, namespace, name))
