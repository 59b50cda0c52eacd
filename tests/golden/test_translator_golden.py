"""Translator goldens: <case>.in.yaml (manifests) → <case>.out.yaml (IR, statuses, problems)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackway.ir.serialize import to_data
from stackway.resources.store import ResourceStore
from stackway.translate import Options, translate
from tests.golden.goldens import HERE, check_golden, dump, load_manifests

CASES = sorted((HERE / "translator").glob("*.in.yaml"))
NOW = "2026-01-01T00:00:00Z"


def run_case(path: Path) -> str:
    resources, store_problems = ResourceStore().update(load_manifests(path))
    result = translate(resources, Options(now=NOW))
    return dump(
        {
            "ir": to_data(result.ir),
            "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
            "problems": sorted([str(p) for p in store_problems] + [str(p) for p in result.problems]),
        }
    )


@pytest.mark.parametrize("case", CASES, ids=[c.name.removesuffix(".in.yaml") for c in CASES])
def test_translator_golden(case: Path, update_goldens: bool) -> None:
    out = case.with_name(case.name.replace(".in.yaml", ".out.yaml"))
    check_golden(out, run_case(case), update_goldens)


def test_translation_is_deterministic() -> None:
    for case in CASES:
        assert run_case(case) == run_case(case)
