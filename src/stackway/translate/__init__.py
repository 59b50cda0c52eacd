"""Pure translation of Kubernetes resources into the IR and Gateway API statuses."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from stackway.ir.model import IR
from stackway.resources.raw import ObjectKey
from stackway.resources.store import Resources
from stackway.translate.conditions import Problem
from stackway.translate.context import Context, Options
from stackway.translate.gatewayapi.backends import refresh_endpoints as _refresh
from stackway.translate.gatewayapi.translator import GatewayApiMemo, translate_gateway_api

__all__ = ["Options", "Problem", "TranslateResult", "refresh_endpoints", "translate"]


@dataclass(frozen=True)
class TranslateResult:
    ir: IR
    statuses: dict[ObjectKey, dict[str, Any]]
    problems: tuple[Problem, ...]
    #: Work a later translation may reuse (see `translate`); not part of the result's value.
    memo: GatewayApiMemo | None = field(default=None, repr=False, compare=False)


def translate(
    resources: Resources, options: Options | None = None, previous: TranslateResult | None = None
) -> TranslateResult:
    """Resources → IR + statuses. Never raises on user input: mistakes become conditions and problems.

    With `previous` (an earlier result), routes unchanged since are not translated again when nothing but
    routes changed; the result is the same either way. Statuses of routes reused that way are the very
    dicts of the earlier result: treat results as read-only.
    """
    ctx = Context(resources, options or Options())
    result_ir, memo = translate_gateway_api(ctx, previous.memo if previous is not None else None)
    return TranslateResult(result_ir, ctx.statuses, tuple(ctx.problems), memo)


def refresh_endpoints(
    resources: Resources, config: IR, services: set[tuple[str, str]], options: Options | None = None
) -> IR:
    """`config` with the endpoints of the given Services' clusters re-read, and nothing else recomputed.

    EndpointSlices change far more often than routes; this keeps such a change O(that Service) instead of
    a full translation (Contour and Envoy Gateway special-case it the same way).
    """
    ctx = Context(resources, options or Options())
    clusters = tuple(
        _refresh(ctx, c) if c.service is not None and c.service[:2] in services else c for c in config.clusters
    )
    return replace(config, clusters=clusters)
