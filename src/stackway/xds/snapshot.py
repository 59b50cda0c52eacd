"""The unit the control plane publishes: every xDS resource one Envoy should hold.

A snapshot is immutable. Its version and every resource's version are hashes of the deterministic
serialisation, so that publishing identical content is a no-op on the wire and a restarted control plane
agrees with the versions Envoy already holds (delta xDS `initial_resource_versions`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from google.protobuf.message import Message

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

#: Order in which types are pushed so that nothing refers to a resource Envoy does not have yet:
#: clusters and their endpoints before the listeners and routes that use them.
PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE)

#: Types whose SotW responses carry every resource (wildcard); the others carry only requested names.
WILDCARD_TYPES = frozenset({LISTENER, CLUSTER})

SHORT_NAMES = {LISTENER: "LDS", ROUTE: "RDS", CLUSTER: "CDS", ENDPOINT: "EDS", SECRET: "SDS"}


def resource_version(msg: Message) -> str:
    """Content hash of one resource (deterministic serialisation, so equal content gives equal hashes)."""
    return hashlib.sha256(msg.SerializeToString(deterministic=True)).hexdigest()[:16]


@dataclass(frozen=True)
class Snapshot:
    """All resources by type URL and name, with content-hash versions."""

    resources: Mapping[str, Mapping[str, Message]]
    #: A previous snapshot whose versions may be reused for resources that are the very same objects.
    base: Snapshot | None = field(default=None, repr=False, compare=False)
    #: Versions the caller already knows (a builder that hashed the bytes it assembled, or kept them).
    known_versions: Mapping[str, Mapping[str, str]] | None = field(default=None, repr=False, compare=False)
    #: Serialised resources the builder already holds, by type and name, so that sending them to Envoy
    #: does not serialise them again (a RouteConfiguration of 10,000 routes is most of a megabyte).
    encoded: Mapping[str, Mapping[str, bytes]] = field(default_factory=dict, repr=False, compare=False)
    versions: Mapping[str, Mapping[str, str]] = field(init=False, repr=False, compare=False)
    version: str = field(init=False)

    def __post_init__(self) -> None:
        known = self.known_versions or {}

        def version_of(type_url: str, name: str, msg: Message) -> str:
            given = known.get(type_url, {}).get(name)
            if given is not None:
                return given
            if self.base is not None and self.base.resources.get(type_url, {}).get(name) is msg:
                return self.base.versions[type_url][name]
            return resource_version(msg)

        versions = {
            type_url: {name: version_of(type_url, name, msg) for name, msg in sorted(by_name.items())}
            for type_url, by_name in sorted(self.resources.items())
        }
        # Only needed while hashing; do not keep a chain of snapshots alive.
        object.__setattr__(self, "base", None)
        object.__setattr__(self, "known_versions", None)
        digest = hashlib.sha256()
        for type_url, by_name in versions.items():
            digest.update(type_url.encode())
            for name, ver in by_name.items():
                digest.update(f"\0{name}\0{ver}".encode())
        object.__setattr__(self, "versions", versions)
        object.__setattr__(self, "version", digest.hexdigest()[:16])

    def of_type(self, type_url: str) -> Mapping[str, Message]:
        return self.resources.get(type_url, {})

    def type_version(self, type_url: str) -> str:
        """Version of one type's whole set (what SotW sends as version_info)."""
        digest = hashlib.sha256()
        for name, ver in self.versions.get(type_url, {}).items():
            digest.update(f"{name}\0{ver}\0".encode())
        return digest.hexdigest()[:16]

    @classmethod
    def empty(cls) -> Snapshot:
        return cls(resources={})

    def with_changes(self, changes: Mapping[str, Mapping[str, Message]]) -> Snapshot:
        """A new snapshot with some resources replaced; unchanged ones keep their versions without rehashing."""
        resources = {t: dict(by_name) for t, by_name in self.resources.items()}
        for type_url, by_name in changes.items():
            resources.setdefault(type_url, {}).update(by_name)
        encoded = {
            t: {name: data for name, data in by_name.items() if name not in changes.get(t, {})}
            for t, by_name in self.encoded.items()
        }
        return Snapshot(resources=resources, base=self, encoded=encoded)
