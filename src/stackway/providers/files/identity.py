"""API-server bookkeeping for objects that come from files: generation, creationTimestamp, uid.

Files carry none of these, yet status (`observedGeneration`) and Gateway API route precedence (oldest
creationTimestamp wins) depend on them. So the provider plays the API server's part: generation starts at 1
and goes up only when the object's content outside `metadata` and `status` changes (a relabel or a
re-save does not bump it), creation time is when the object was first seen, and the uid is derived from the
key so it is the same across restarts. Values a manifest sets itself are kept.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stackway.resources.raw import ObjectKey, RawObject

_UID_NAMESPACE = uuid.UUID("5b0f3d1e-8f43-4c55-9a4e-1d6a2f1c7e90")
#: Not part of an object's "spec" for generation purposes; apiVersion is excluded because serving the same
#: object under another version is not a change to it.
_NOT_SPEC = frozenset({"metadata", "status", "apiVersion", "kind"})


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def uid_for(key: ObjectKey) -> str:
    return str(uuid.uuid5(_UID_NAMESPACE, f"{key.group}/{key.kind}/{key.namespace}/{key.name}"))


def spec_digest(body: Mapping[str, Any]) -> str:
    content = {k: v for k, v in body.items() if k not in _NOT_SPEC}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class _Seen:
    raw: RawObject  # the object as read, to skip all work when a file's other objects change
    stamped: RawObject
    digest: str
    generation: int
    created: str


class GenerationTracker:
    """Stamps generation, creationTimestamp and uid onto objects, remembering them per key."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self._seen: dict[ObjectKey, _Seen] = {}

    def stamp_all(self, objects: Iterable[RawObject]) -> dict[ObjectKey, RawObject]:
        """Stamp the current objects; keys that are gone are forgotten, so an object deleted and created
        again starts over at generation 1 with a new creation time, as it would in Kubernetes."""
        out = {obj.key: self.stamp(obj) for obj in objects}
        for key in [k for k in self._seen if k not in out]:
            del self._seen[key]
        return out

    def forget(self, key: ObjectKey) -> None:
        """The object is gone: should it come back, it starts over (generation 1, a new creation time)."""
        self._seen.pop(key, None)

    def stamp(self, raw: RawObject) -> RawObject:
        seen = self._seen.get(raw.key)
        if seen is not None and seen.raw is raw:
            return seen.stamped
        digest = spec_digest(raw.body)
        if seen is None:
            seen = _Seen(raw, raw, digest, 1, rfc3339(self._clock()))
            self._seen[raw.key] = seen
        elif seen.digest != digest:
            seen.generation += 1
            seen.digest = digest
        seen.raw = raw
        seen.stamped = self._stamped(raw, seen)
        return seen.stamped

    def _stamped(self, raw: RawObject, seen: _Seen) -> RawObject:
        meta = raw.body.get("metadata")
        metadata: dict[str, Any] = dict(meta) if isinstance(meta, Mapping) else {}
        if not isinstance(metadata.get("generation"), int) or isinstance(metadata.get("generation"), bool):
            metadata["generation"] = seen.generation
        if not metadata.get("creationTimestamp"):
            metadata["creationTimestamp"] = seen.created
        if not metadata.get("uid"):
            metadata["uid"] = uid_for(raw.key)
        return RawObject(raw.key, {**raw.body, "metadata": metadata}, raw.source)
