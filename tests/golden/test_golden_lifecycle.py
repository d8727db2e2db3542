"""Replay the recorded rebalancing-lifecycle cases under tests/golden/lifecycle/.

Each case is a pattern case (see test_golden_patterns) run on its own fresh copy of the demo
store, since booking changes the portfolio, after setting the portfolio's target from
``case.json``'s ``target``. Besides the calls and the final state, a case records what booking
left in the store: ``store_after.json`` with the rebalance history (without its wall-clock
timestamps), the portfolio's current version, positions and cash. Record new cases with
``pytest tests/golden/test_golden_lifecycle.py --golden-update=missing``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from golden_compare import check_golden

from agents.agent import OptimizerAgent
from agents.wiring import DB_FILENAME, open_store

CASES = sorted(p.parent for p in (Path(__file__).parent / "lifecycle").glob("*/case.json"))


@pytest.mark.parametrize("case_dir", CASES, ids=[c.name for c in CASES])
def test_golden_lifecycle_case(case_dir: Path, seeded_db: Path, tmp_path: Path, golden_update: str) -> None:
    case = json.loads((case_dir / "case.json").read_text(encoding="utf-8"))
    shutil.copyfile(seeded_db, tmp_path / DB_FILENAME)
    store = open_store(tmp_path)
    try:
        target = case["target"]
        store.put_target(target["portfolio_id"], target["weights_pct"], policy_id=target.get("policy_id"),
                         source="golden case")
        played = OptimizerAgent(store, home=tmp_path / "home").play_case(
            {k: v for k, v in case.items() if k != "target"}
        )
        files = json.loads(json.dumps(played))
        portfolio_id = target["portfolio_id"]
        portfolio = store.get_portfolio(portfolio_id)
        files["store_after.json"] = {
            "history": [{k: v for k, v in h.items() if k != "created_at"} for h in store.list_rebalances(portfolio_id)],
            "version": store.portfolio_version(portfolio_id),
            "positions": portfolio.positions(),
            "cash": str(portfolio.cash),
        }
    finally:
        store.close()
    diffs = []
    for name, content in sorted(files.items()):
        if name == "case.json":
            continue
        (case_dir / name).parent.mkdir(parents=True, exist_ok=True)
        diffs += [f"{name}: {line}" for line in check_golden(case_dir / name, content, golden_update)]
    assert not diffs, f"{case_dir.name} differs from its golden files:\n" + "\n".join(diffs[:40])


def test_the_lifecycle_cases_cover_deposit_withdrawal_approval_rejection_and_no_drift() -> None:
    cases = {c.name: json.loads((c / "case.json").read_text(encoding="utf-8")) for c in CASES}
    assert any(c["inputs"].get("cash_flow", 0) > 0 for c in cases.values())
    assert any(c["inputs"].get("cash_flow", 0) < 0 for c in cases.values())
    assert any(c.get("resume", {}).get("approve") is True for c in cases.values())
    assert any(c.get("resume", {}).get("approve") is False for c in cases.values())
    assert any("resume" not in c for c in cases.values())
