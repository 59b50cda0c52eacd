"""The pure parts of the fake API server's semantics: resource types, errors, selectors and patches.

Kept apart from the store and the HTTP layer so that each stays readable, and so that the rules a real
kube-apiserver applies (how a label selector parses, what a JSON merge patch does to `null`) can be read
in one place and checked against the Kubernetes documentation.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]


@dataclass(frozen=True)
class ResourceType:
    """One served resource. `status`: has a /status subresource; `crd`: served the way custom resources
    are (list items keep kind/apiVersion, updates must carry a resourceVersion, no strategic merge patch)."""

    group: str
    versions: tuple[str, ...]
    kind: str
    plural: str
    namespaced: bool
    status: bool = False
    crd: bool = False

    @property
    def qualified(self) -> str:
        """The name the real server uses in messages: `gateways.gateway.networking.k8s.io`, `services`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def api_version(self, version: str | None = None) -> str:
        version = version or self.versions[0]
        return f"{self.group}/{version}" if self.group else version


_GW = "gateway.networking.k8s.io"

DEFAULT_RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("", ("v1",), "Namespace", "namespaces", namespaced=False, status=True),
    ResourceType("", ("v1",), "Service", "services", namespaced=True, status=True),
    ResourceType("", ("v1",), "Secret", "secrets", namespaced=True),
    ResourceType("", ("v1",), "ConfigMap", "configmaps", namespaced=True),
    ResourceType("", ("v1",), "Node", "nodes", namespaced=False, status=True),
    ResourceType("", ("v1",), "Event", "events", namespaced=True),
    ResourceType("discovery.k8s.io", ("v1",), "EndpointSlice", "endpointslices", namespaced=True),
    ResourceType("networking.k8s.io", ("v1",), "Ingress", "ingresses", namespaced=True, status=True),
    ResourceType("networking.k8s.io", ("v1",), "IngressClass", "ingressclasses", namespaced=False),
    ResourceType("coordination.k8s.io", ("v1",), "Lease", "leases", namespaced=True),
    ResourceType(_GW, ("v1", "v1beta1"), "GatewayClass", "gatewayclasses", namespaced=False, status=True, crd=True),
    ResourceType(_GW, ("v1", "v1beta1"), "Gateway", "gateways", namespaced=True, status=True, crd=True),
    ResourceType(_GW, ("v1", "v1beta1"), "HTTPRoute", "httproutes", namespaced=True, status=True, crd=True),
    ResourceType(_GW, ("v1",), "GRPCRoute", "grpcroutes", namespaced=True, status=True, crd=True),
    ResourceType(_GW, ("v1", "v1alpha2"), "TLSRoute", "tlsroutes", namespaced=True, status=True, crd=True),
    ResourceType(
        _GW, ("v1", "v1alpha3"), "BackendTLSPolicy", "backendtlspolicies", namespaced=True, status=True, crd=True
    ),
    # v1 since Gateway API v1.5 (upstream's conformance manifests use it); v1beta1 is still served
    ResourceType(_GW, ("v1", "v1beta1"), "ReferenceGrant", "referencegrants", namespaced=True, crd=True),
)


class ApiError(Exception):
    """An error the API server answers with: HTTP `code` and a `Status` object, as the real one does."""

    def __init__(self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = dict(details or {})

    def status(self) -> JSON:
        body: JSON = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.qualified} "{name}" not found', {"name": name, "kind": rt.plural})


def conflict(rt: ResourceType, name: str) -> ApiError:
    message = (
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    return ApiError(409, "Conflict", message, {"name": name, "kind": rt.plural})


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


# ---------------------------------------------------------------------------------------------- selectors

_REQUIREMENT = re.compile(
    r"^\s*(?:(?P<not>!)\s*(?P<absent>[\w./-]+)"
    r"|(?P<key>[\w./-]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[\w.-]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?)\s*$"
)

Selector = Callable[[Mapping[str, str]], bool]


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside `in (...)` parentheses."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p for p in parts if p.strip()]


#: key, operator (=, !=, in, notin, exists, !exists) and the values an operator compares with
_Requirement = tuple[str, str, frozenset[str]]


def _holds(requirement: _Requirement, values_by_key: Mapping[str, str]) -> bool:
    key, op, values = requirement
    if op == "exists":
        return key in values_by_key
    if op == "!exists":
        return key not in values_by_key
    if op in ("=", "in"):
        return values_by_key.get(key) in values
    return values_by_key.get(key) not in values  # != and notin also hold where the key is absent


def _selector(requirements: list[_Requirement]) -> Selector:
    def match(values_by_key: Mapping[str, str]) -> bool:
        return all(_holds(r, values_by_key) for r in requirements)

    return match


def parse_label_selector(text: str | None) -> Selector:
    """Equality (`a=b`, `a==b`, `a!=b`), set (`a in (x,y)`, `a notin (x)`) and existence (`a`, `!a`)
    requirements, ANDed, as `kubectl get -l` accepts them. A bad selector is a 400, as on the real server."""
    requirements: list[_Requirement] = []
    for part in _split_top_level(text or ""):
        m = _REQUIREMENT.match(part)
        if m is None:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
        if m["absent"]:
            requirements.append((m["absent"], "!exists", frozenset()))
        elif m["op"]:
            requirements.append((m["key"], "!=" if m["op"] == "!=" else "=", frozenset({m["value"]})))
        elif m["setop"]:
            values = frozenset(v.strip() for v in m["values"].split(",") if v.strip())
            requirements.append((m["key"], m["setop"], values))
        else:
            requirements.append((m["key"], "exists", frozenset()))
    return _selector(requirements)


_FIELDS = ("metadata.name", "metadata.namespace")


def parse_field_selector(text: str | None) -> Selector:
    """`metadata.name` and `metadata.namespace` with `=`, `==`, `!=`; anything else is refused with the
    real server's message. The returned check takes {"metadata.name": ..., "metadata.namespace": ...}."""
    requirements: list[_Requirement] = []
    for part in _split_top_level(text or ""):
        m = re.match(r"^\s*([\w.]+)\s*(==|=|!=)\s*([\w.-]*)\s*$", part)
        if m is None:
            raise ApiError(400, "BadRequest", f"invalid selector: {part!r}")
        field, op, value = m.groups()
        if field not in _FIELDS:
            raise ApiError(400, "BadRequest", f'field label not supported: "{field}"')
        requirements.append((field, "!=" if op == "!=" else "=", frozenset({value})))
    return _selector(requirements)


def object_matcher(label_selector: str | None, field_selector: str | None) -> Callable[[JSON], bool]:
    """Whether an object is selected by a list's or watch's labelSelector and fieldSelector."""
    labels = parse_label_selector(label_selector)
    fields = parse_field_selector(field_selector)

    def match(obj: JSON) -> bool:
        meta = obj.get("metadata", {})
        field_values = {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", "")}
        return labels(meta.get("labels") or {}) and fields(field_values)

    return match


# ------------------------------------------------------------------------------------------------ patches


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, `null` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, tokens: list[str]) -> Any:
    for token in tokens:
        if isinstance(doc, list):
            doc = doc[int(token)]
        elif isinstance(doc, dict):
            doc = doc[token]
        else:
            raise KeyError(token)
    return doc


def json_patch(document: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test) on a copy of `document`."""
    if not isinstance(operations, list):
        raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
    doc = copy.deepcopy(document)
    for op in operations:
        try:
            doc = _apply_one(doc, op)
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, "Invalid", f"the JSON patch {op!r} could not be applied: {exc}") from exc
    return doc


def _apply_one(doc: Any, op: Mapping[str, Any]) -> Any:
    kind = op["op"]
    tokens = _pointer(op["path"])
    if kind == "test":
        if _walk(doc, tokens) != op["value"]:
            raise ApiError(422, "Invalid", f"testing value {op['path']} failed")
        return doc
    if kind in ("move", "copy"):
        value = copy.deepcopy(_walk(doc, _pointer(op["from"])))
        if kind == "move":
            doc = _apply_one(doc, {"op": "remove", "path": op["from"]})
        return _apply_one(doc, {"op": "add", "path": op["path"], "value": value})
    if not tokens:
        if kind == "remove":
            return None
        return copy.deepcopy(op["value"])
    parent = _walk(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if kind == "add":
            parent.insert(index, copy.deepcopy(op["value"]))
        elif kind == "remove":
            del parent[index]
        elif kind == "replace":
            parent[index] = copy.deepcopy(op["value"])
        else:
            raise ValueError(f"unknown op {kind}")
    elif isinstance(parent, dict):
        if kind in ("remove", "replace") and last not in parent:
            raise KeyError(last)
        if kind == "remove":
            del parent[last]
        elif kind in ("add", "replace"):
            parent[last] = copy.deepcopy(op["value"])
        else:
            raise ValueError(f"unknown op {kind}")
    else:
        raise TypeError(f"cannot index into {type(parent).__name__}")
    return doc
