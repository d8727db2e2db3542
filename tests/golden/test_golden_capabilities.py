"""Replay every capability golden case under tests/golden/optimizer/.

A case is a directory holding ``case.json`` — {"capability", "request", optional "user",
optional "description"} — and ``expected.json``, the result (or {"error": {...}} for a call that
must fail). The case runs against a freshly seeded demo store.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from golden_compare import check_golden

from capabilities.base import RequestContext
from services.errors import OptimizerError

CASES = sorted(p.parent for p in (Path(__file__).parent / "optimizer").glob("*/case.json"))


@pytest.mark.parametrize("case_dir", CASES, ids=[c.name for c in CASES])
def test_golden_case(case_dir: Path, agent, golden_update: str) -> None:
    case = json.loads((case_dir / "case.json").read_text(encoding="utf-8"))
    try:
        actual = agent.execute(case["capability"], case["request"], RequestContext(user=case.get("user")))
    except OptimizerError as err:
        actual = {"error": err.to_dict()}
    diffs = check_golden(case_dir / "expected.json", json.loads(json.dumps(actual)), golden_update)
    assert not diffs, f"{case_dir.name} differs from its golden file:\n" + "\n".join(diffs[:40])
