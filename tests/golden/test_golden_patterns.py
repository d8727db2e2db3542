"""Replay every recorded pattern case under tests/golden/patterns/.

A case directory holds ``case.json`` (pattern, inputs, run id, user, optional ``resume``
decision) and what a run of it produced: ``calls/NN_<capability>.json`` (each capability call's
request and response, in order) and ``final_state.json`` (the run's last report). Each case
runs against the demo data with a fresh agent and compares every file: floats with a small
tolerance, everything else exactly. Record a new case with
``optimizer run PATTERN --input FILE --record tests/golden/patterns/NAME`` or by writing its
``case.json`` and running ``pytest --golden-update=missing``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from golden_compare import check_golden

from agents.agent import OptimizerAgent
from services.data.store import Store

CASES = sorted(p.parent for p in (Path(__file__).parent / "patterns").glob("*/case.json"))


@pytest.mark.parametrize("case_dir", CASES, ids=[c.name for c in CASES])
def test_golden_pattern_case(
    case_dir: Path, module_store: Store, tmp_path: Path, golden_update: str
) -> None:
    case = json.loads((case_dir / "case.json").read_text(encoding="utf-8"))
    files = json.loads(
        json.dumps(OptimizerAgent(module_store, home=tmp_path / "home").play_case(case))
    )
    produced = {name for name in files if name.startswith("calls/")}
    recorded = {p.relative_to(case_dir).as_posix() for p in case_dir.glob("calls/*.json")}
    if golden_update == "always":
        for stale in recorded - produced:
            (case_dir / stale).unlink()
        recorded &= produced
    diffs = [
        f"{name}: not produced by this run (a call that no longer happens)"
        for name in sorted(recorded - produced)
    ]
    for name, content in sorted(files.items()):
        if name == "case.json":
            continue
        (case_dir / name).parent.mkdir(parents=True, exist_ok=True)
        diffs += [
            f"{name}: {line}" for line in check_golden(case_dir / name, content, golden_update)
        ]
    assert not diffs, f"{case_dir.name} differs from its golden files:\n" + "\n".join(diffs[:40])


def test_every_shipped_pattern_has_a_case() -> None:
    cases = [json.loads((c / "case.json").read_text(encoding="utf-8")) for c in CASES]
    assert {c["pattern"] for c in cases} >= {"policy_rebalance", "hedge_review", "regime_response"}
    assert any("resume" in c for c in cases)
