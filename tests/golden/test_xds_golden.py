"""Builder goldens: every translator golden's IR → xDS resources as YAML (<case>.xds.yaml).

The IR is read back from the translator golden, so the builder is tested on its own input format.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stackway.ir.model import IR
from stackway.ir.serialize import from_data
from stackway.xds.build import build_snapshot, snapshot_as_data
from tests.golden.goldens import HERE, check_golden, dump

CASES = sorted((HERE / "translator").glob("*.out.yaml"))


@pytest.mark.parametrize("case", CASES, ids=[c.name.removesuffix(".out.yaml") for c in CASES])
def test_xds_golden(case: Path, update_goldens: bool) -> None:
    config = from_data(IR, yaml.safe_load(case.read_text())["ir"])
    snapshot = build_snapshot(config)
    data = snapshot_as_data(snapshot)
    out = HERE / "xds" / case.name.replace(".out.yaml", ".xds.yaml")
    check_golden(out, dump(data), update_goldens)
