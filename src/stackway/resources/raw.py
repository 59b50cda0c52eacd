"""Untyped Kubernetes objects as providers deliver them, keyed the way the API server keys them.

Providers (a watched directory, the Kubernetes API) hand the core plain dicts; typing and validation happen
later, in `stackway.resources.parse`, so that one bad object never stops a provider from delivering the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Kinds that have no namespace. Anything else without `metadata.namespace` lives in `default`.
CLUSTER_SCOPED_KINDS = frozenset(
    {
        ("", "Namespace"),
        ("", "Node"),
        ("gateway.networking.k8s.io", "GatewayClass"),
        ("networking.k8s.io", "IngressClass"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    }
)


@dataclass(frozen=True, order=True)
class ObjectKey:
    """(API group, kind, namespace, name): the identity of an object. Versions of one group share it."""

    group: str
    kind: str
    namespace: str
    name: str

    def __post_init__(self) -> None:
        # Keys are looked up in every index on every update: hash once, not on each lookup.
        object.__setattr__(self, "_hash", hash((self.group, self.kind, self.namespace, self.name)))

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined,no-any-return]

    def __reduce__(self) -> tuple[type[ObjectKey], tuple[str, str, str, str]]:
        # String hashes differ between processes: rebuild (and rehash) rather than copy the cached hash.
        return (ObjectKey, (self.group, self.kind, self.namespace, self.name))

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind}{'.' + self.group if self.group else ''} {where}"


@dataclass(frozen=True)
class Source:
    """Where an object came from, so that every error message can point at it."""

    file: str
    line: int  # 1-based line where the object's document starts

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class RawObject:
    key: ObjectKey
    body: Mapping[str, Any]
    source: Source | None = None


class ObjectShapeError(ValueError):
    """A document that cannot even be keyed: no kind, no name, wrong apiVersion type, ..."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def key_of(body: Mapping[str, Any]) -> ObjectKey:
    """Derive an object's key, or raise ObjectShapeError naming the offending field."""
    api_version = body.get("apiVersion")
    if not isinstance(api_version, str) or not api_version:
        raise ObjectShapeError("apiVersion", "required string is missing")
    kind = body.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ObjectShapeError("kind", "required string is missing")
    metadata = body.get("metadata")
    if not isinstance(metadata, Mapping):
        raise ObjectShapeError("metadata", "required object is missing")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise ObjectShapeError("metadata.name", "required string is missing")
    group = api_version.rpartition("/")[0]
    namespace = metadata.get("namespace")
    if (group, kind) in CLUSTER_SCOPED_KINDS:
        namespace = ""
    elif namespace is None:
        namespace = "default"
    elif not isinstance(namespace, str):
        raise ObjectShapeError("metadata.namespace", "must be a string")
    return ObjectKey(group=group, kind=kind, namespace=namespace, name=name)
