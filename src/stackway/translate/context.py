"""What every translation step shares: the inputs, the options, and where problems are recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stackway.resources.raw import ObjectKey
from stackway.resources.store import Resources
from stackway.translate.conditions import CONTROLLER_NAME, Problem


@dataclass(frozen=True)
class Options:
    """Translation settings. `now` is passed in (never read from a clock) so output stays reproducible."""

    controller_name: str = CONTROLLER_NAME
    default_address: str = "0.0.0.0"
    accept_any_class: bool = False
    now: str = "1970-01-01T00:00:00Z"
    ingress_controller: str = "stackway.dev/ingress-controller"
    ingress_http_port: int = 80
    ingress_https_port: int = 443


@dataclass
class Context:
    resources: Resources
    options: Options
    problems: list[Problem] = field(default_factory=list)
    statuses: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    #: Per-translation indexes built on first use (e.g. BackendTLSPolicies by target).
    memo: dict[str, Any] = field(default_factory=dict)

    def problem(self, key: ObjectKey, fld: str, message: str, severity: str = "error") -> None:
        self.problems.append(Problem(key, fld, message, severity))
