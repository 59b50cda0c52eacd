"""Pure translation of Kubernetes resources into the IR and Gateway API statuses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stackway.ir.model import IR
from stackway.resources.raw import ObjectKey
from stackway.resources.store import Resources
from stackway.translate.conditions import Problem
from stackway.translate.context import Context, Options
from stackway.translate.gatewayapi.translator import translate_gateway_api

__all__ = ["Options", "Problem", "TranslateResult", "translate"]


@dataclass(frozen=True)
class TranslateResult:
    ir: IR
    statuses: dict[ObjectKey, dict[str, Any]]
    problems: tuple[Problem, ...]


def translate(resources: Resources, options: Options | None = None) -> TranslateResult:
    """Resources → IR + statuses. Never raises on user input: mistakes become conditions and problems."""
    ctx = Context(resources, options or Options())
    result_ir = translate_gateway_api(ctx)
    return TranslateResult(result_ir, ctx.statuses, tuple(ctx.problems))
