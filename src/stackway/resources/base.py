"""Shared pieces of the typed resource views.

Models are pydantic so that a malformed manifest yields an error that names the exact field
(`spec.listeners[0].port`), which the translator turns into a status condition and `validate` prints.
Unknown fields are ignored, as the API server's structural-schema pruning would drop them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel


class Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True, strict=False
    )


class ObjectMeta(Model):
    name: str
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int = 1
    creation_timestamp: str = ""
    uid: str = ""
    deletion_timestamp: str | None = None
    finalizers: tuple[str, ...] = ()


class LabelSelectorRequirement(Model):
    key: str
    operator: str
    values: tuple[str, ...] = ()


class LabelSelector(Model):
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        """Kubernetes label-selector semantics (an empty selector matches everything)."""
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "In" and not (present and labels[req.key] in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True


def field_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location → the field path a Kubernetes user recognises: spec.rules[0].matches."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def describe_validation_error(exc: ValidationError) -> list[tuple[str, str]]:
    """[(field, message)] for every problem pydantic found, in manifest terms."""
    problems: list[tuple[str, str]] = []
    errors = exc.errors(include_url=False)
    deeper = {e["loc"][:i] for e in errors for i in range(len(e["loc"]))}
    for err in errors:
        if err["type"] == "too_short" and err["loc"] in deeper:
            continue  # a list whose items failed is reported through those items, not as "too short"
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        value: Any = err.get("input")
        message = err["msg"]
        if err["type"] != "missing" and not isinstance(value, dict | list):
            message = f"{message} (got {value!r})"
        problems.append((field_path(loc), message))
    return problems
