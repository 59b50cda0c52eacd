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

# Cases are the translator's inputs; their .out.yaml (written by the translator goldens, which run first)
# holds the IR this test starts from.
CASES = sorted((HERE / "translator").glob("*.in.yaml"))


@pytest.mark.parametrize("case", CASES, ids=[c.name.removesuffix(".in.yaml") for c in CASES])
def test_xds_golden(case: Path, update_goldens: bool) -> None:
    case = case.with_name(case.name.replace(".in.yaml", ".out.yaml"))
    config = from_data(IR, yaml.safe_load(case.read_text())["ir"])
    snapshot = build_snapshot(config)
    data = snapshot_as_data(snapshot)
    out = HERE / "xds" / case.name.replace(".out.yaml", ".xds.yaml")
    check_golden(out, dump(data), update_goldens)
