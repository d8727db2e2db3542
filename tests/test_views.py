"""Summary and full views, the inputs hash that ignores the view, and proposal ids.

Sizes are behaviour (what fits a model's context), measured as canonical JSON on the demo data.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from sqlalchemy import create_engine, text

from agents.agent import OptimizerAgent
from capabilities.base import RequestContext
from capabilities.runner import canonical_json
from capabilities.views import proposal_id
from services.data.store import Store
from services.errors import InputError, NotFoundError

PACK = "PP_2022-12-28"
BASE = {"portfolio_id": "demo_diversified", "pricing_pack_id": PACK}
PROPOSE = {**BASE, "policy_id": "quality_focused"}
GOLDEN = Path(__file__).parent / "golden" / "optimizer"


@pytest.fixture
def agent(module_store: Store, tmp_path: Path) -> OptimizerAgent:
    return OptimizerAgent(module_store, home=tmp_path / "home")


def summary(agent: OptimizerAgent, name: str, request: dict[str, Any], user: str | None = None) -> dict[str, Any]:
    return agent.execute(name, {**request, "detail": "summary"}, RequestContext(user=user))


@pytest.mark.parametrize(
    ("name", "request_", "limit"),
    [
        # 4000 since each binding limit carries a sentence with its cost (six under quality_focused).
        ("optimizer.propose_trades", PROPOSE, 4000),
        ("optimizer.propose_trades", {**BASE, "policy_id": "aggressive_growth"}, 4000),
        *[("optimizer.suggest_hedges", {**BASE, "scenario_id": s}, 4000)
          for s in ("equity_selloff", "rates_up", "usd_up", "credit_spread_widening", "volatility_spike",
                    "inflation_shock")],
        *[("optimizer.suggest_deleveraging_hedges", {**BASE, "regime": r}, 3000)
          for r in ("DELEVERAGING", "LATE_EXPANSION", "REFLATION")],
    ],
)
def test_summaries_fit_their_budget(agent: OptimizerAgent, name: str, request_: dict[str, Any], limit: int) -> None:
    full = agent.execute(name, request_)
    brief = summary(agent, name, request_)
    assert brief["detail"] == "summary"
    assert len(canonical_json(brief)) <= limit < len(canonical_json(full))
    # A projection of the full result: every figure it keeps is the full result's.
    for key, value in brief.items():
        if key in full and not isinstance(value, (dict, list)):
            assert value == full[key], key
    jsonschema.validate(brief, agent.registry.get(name).view_output_schema())
    jsonschema.validate(full, agent.registry.get(name).view_output_schema())


def test_impact_summary_fits_and_takes_a_proposal_id(agent: OptimizerAgent) -> None:
    proposal = summary(agent, "optimizer.propose_trades", PROPOSE)
    assert proposal["proposal_id"] == proposal_id(proposal["_metadata"]["inputs_hash"])
    by_id = agent.execute("optimizer.analyze_impact", {**BASE, "proposal_id": proposal["proposal_id"]})
    full_trades = agent.execute("optimizer.propose_trades", PROPOSE)["trades"]
    by_list = agent.execute("optimizer.analyze_impact", {**BASE, "proposed_trades": full_trades})
    strip = {"inputs_hash", "cached"}
    assert {k: v for k, v in by_id.items() if k != "_metadata"} == {k: v for k, v in by_list.items() if k != "_metadata"}
    assert {k: v for k, v in by_id["_metadata"].items() if k not in strip} == {
        k: v for k, v in by_list["_metadata"].items() if k not in strip
    }
    brief = summary(agent, "optimizer.analyze_impact", {**BASE, "proposal_id": proposal["proposal_id"]})
    assert len(canonical_json(brief)) <= 3000 < len(canonical_json(by_id))
    # 25 characters of arguments instead of the trade list.
    assert len(json.dumps(proposal["proposal_id"])) < 30 < len(json.dumps(full_trades))


def test_the_view_is_not_hashed(agent: OptimizerAgent) -> None:
    full = agent.execute("optimizer.propose_trades", PROPOSE)
    explicit = agent.execute("optimizer.propose_trades", {**PROPOSE, "detail": "full"})
    brief = summary(agent, "optimizer.propose_trades", PROPOSE)
    assert {**explicit, "_metadata": {**explicit["_metadata"], "cached": False}} == {
        **full, "_metadata": {**full["_metadata"], "cached": False}
    }
    assert brief["_metadata"]["inputs_hash"] == full["_metadata"]["inputs_hash"]
    # The hash is what it was before `detail` existed: capability, request without it, pack hash.
    pack = agent.store.get_pack(PACK)
    request = agent.registry.get("optimizer.propose_trades").input_model.model_validate(PROPOSE)
    old_request = request.model_dump(mode="json", exclude={"detail"})
    expected = hashlib.sha256(
        canonical_json({"capability": "optimizer.propose_trades", "request": old_request,
                        "pack": pack.content_hash}).encode()
    ).hexdigest()
    assert full["_metadata"]["inputs_hash"] == expected
    golden = json.loads((GOLDEN / "turnover_unconstrained" / "expected.json").read_text())
    case = json.loads((GOLDEN / "turnover_unconstrained" / "case.json").read_text())
    assert agent.execute(case["capability"], case["request"])["_metadata"]["inputs_hash"] == golden["_metadata"]["inputs_hash"]


def test_proposal_ids_are_deterministic_and_private(agent: OptimizerAgent) -> None:
    inline = {"portfolio": {"positions": [{"symbol": "AAPL", "shares": 100}, {"symbol": "XOM", "shares": 300}],
                            "cash": "5000"},
              "pricing_pack_id": PACK, "policy": {"max_single_position_pct": 60, "max_sector_pct": 60,
                                                  "max_tracking_error_pct": None}}
    first = summary(agent, "optimizer.propose_trades", inline, user="alice")
    again = summary(agent, "optimizer.propose_trades", inline, user="alice")
    assert first["proposal_id"] == again["proposal_id"]
    impact = {"portfolio": inline["portfolio"], "pricing_pack_id": PACK, "proposal_id": first["proposal_id"]}
    assert agent.execute("optimizer.analyze_impact", impact, RequestContext(user="alice"))["trades_applied"]
    with pytest.raises(NotFoundError) as other:
        agent.execute("optimizer.analyze_impact", impact, RequestContext(user="bob"))
    with pytest.raises(NotFoundError) as missing:
        agent.execute("optimizer.analyze_impact", {**impact, "proposal_id": "prop_0123456789abcdef"},
                      RequestContext(user="bob"))
    assert other.value.message.replace(first["proposal_id"], "X") == missing.value.message.replace(
        "prop_0123456789abcdef", "X")
    # The same request made by bob (a cache hit) is then bob's too.
    summary(agent, "optimizer.propose_trades", inline, user="bob")
    assert agent.execute("optimizer.analyze_impact", impact, RequestContext(user="bob"))["trades_applied"]


def test_a_proposal_for_another_portfolio_is_an_input_error(agent: OptimizerAgent) -> None:
    proposal = summary(agent, "optimizer.propose_trades", PROPOSE)
    with pytest.raises(InputError, match="made for portfolio_id 'demo_diversified'"):
        agent.execute("optimizer.analyze_impact",
                      {"portfolio_id": "demo_quality", "pricing_pack_id": PACK, "proposal_id": proposal["proposal_id"]})
    with pytest.raises(InputError, match="exactly one of 'proposed_trades'"):
        agent.execute("optimizer.analyze_impact", {**BASE})


def test_an_older_store_gains_the_proposal_user_column(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(
            "CREATE TABLE proposals (id INTEGER PRIMARY KEY, created_at DATETIME NOT NULL, capability VARCHAR(128) "
            "NOT NULL, portfolio_id VARCHAR(64), pricing_pack_id VARCHAR(64) NOT NULL, policy_id VARCHAR(64), "
            "inputs_hash VARCHAR(128) NOT NULL, result_json TEXT NOT NULL)"))
        conn.execute(text("INSERT INTO proposals VALUES (1, '2026-01-01 00:00:00', 'c', NULL, 'P', NULL, 'abc', '{}')"))
    engine.dispose()
    store = Store(url)
    store.create_schema()
    store.create_schema()  # idempotent
    assert store.find_proposal("c", "ab", None) == {
        "id": 1, "capability": "c", "portfolio_id": None, "pricing_pack_id": "P", "policy_id": None,
        "inputs_hash": "abc", "user": None, "result": {},
    }
    assert store.find_proposal("c", "ab", "alice") is None
    store.close()
