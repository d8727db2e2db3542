"""Quality ratings: `optimizer ratings import` (shared or a user's own), and where a stored rating
came from when it decides eligibility on a pack the demo did not ship."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import error_of, run

from agents.agent import OptimizerAgent
from agents.wiring import open_store
from capabilities.base import RequestContext
from services.data.store import Store

PACK = "PP_2022-12-28"
REQUEST = {"pricing_pack_id": PACK, "portfolio": {"positions": [
    {"symbol": "AAPL", "shares": 100}, {"symbol": "MSFT", "shares": 50}, {"symbol": "XOM", "shares": 120}],
    "cash": 5000}, "policy": {"method": "min_variance", "min_quality_score": 6.0, "unrated": "eligible"}}


def _trades(result: dict) -> dict[str, dict]:
    return {t["symbol"]: t for t in result["trades"]}


def test_ratings_import_reports_every_problem_and_writes_nothing(capsys, seeded_home: Path, write) -> None:
    bad = write(seeded_home / "bad.csv", "symbol,score\nAAPL,3\nMSFT,x\nKO,11\n,5\nAAPL,4\n")
    code, _, err = run(capsys, "ratings", "import", str(bad), "--user", "ann")
    assert code == 2
    problems = error_of(err)["details"]["problems"]
    assert [(p["row"], p["rule"]) for p in problems] == [
        (3, "bad_score"), (4, "bad_score"), (5, "bad_symbol"), (6, "duplicate_symbol")]
    code, out, _ = run(capsys, "ratings", "list", "--user", "ann", "--json")
    assert {r["symbol"]: r["source"] for r in json.loads(out)}["AAPL"] == "demo"


def test_a_users_ratings_are_theirs_alone(capsys, seeded_home: Path, write) -> None:
    own = write(seeded_home / "mine.csv", "symbol,score\nXOM,8.5\nAAPL,2\n")
    code, out, _ = run(capsys, "ratings", "import", str(own), "--user", "ann")
    assert code == 0 and out.startswith("2 ann's own rating(s) stored from mine.csv")
    code, out, _ = run(capsys, "ratings", "list", "--user", "ann", "--json")
    listed = {r["symbol"]: r for r in json.loads(out)}
    assert listed["XOM"] == {"symbol": "XOM", "score": 8.5, "source": "file:mine.csv (imported by ann)"}
    assert listed["JNJ"]["source"] == "demo"
    code, out, _ = run(capsys, "ratings", "list", "--json")
    assert {r["symbol"]: r["score"] for r in json.loads(out)}["XOM"] == 4.5  # the operator's view: unchanged

    store = open_store(seeded_home)
    try:
        agent = OptimizerAgent(store)
        ann = agent.execute("optimizer.propose_trades", REQUEST, RequestContext(user="ann"))
        bob = agent.execute("optimizer.propose_trades", REQUEST, RequestContext(user="bob"))
    finally:
        store.close()
    # ann rates XOM 8.5 and AAPL 2: she keeps XOM and sells AAPL; bob sees the demo's XOM 4.5.
    assert _trades(ann)["AAPL"]["target_shares"] == 0 and _trades(ann)["XOM"]["target_shares"] > 0
    assert _trades(bob)["XOM"]["target_shares"] == 0 and _trades(bob)["AAPL"]["target_shares"] > 0


def test_demo_ratings_on_another_pack_are_named(seeded_store: Store) -> None:
    other = dataclasses.replace(seeded_store.get_pack(PACK), id="PP_CLIENT", content_hash="")
    seeded_store.put_pack(other)
    seeded_store.put_ratings({"MSFT": 7.0}, source="file:house.csv")
    agent = OptimizerAgent(seeded_store)
    result = agent.execute("optimizer.propose_trades", dict(REQUEST, pricing_pack_id="PP_CLIENT"))
    notes = [w for w in result["warnings"] if w.startswith("quality ratings from the store")]
    assert len(notes) == 1
    assert "on pack PP_CLIENT: " in notes[0]
    assert "AAPL, AMD, BAC, BBY, CVX, GE, HD, JNJ, JPM, KO, LLY, MRK, PEP, PFE, PG, RRC, UNH, WMT, XOM from demo" in notes[0]
    assert "MSFT from file:house.csv" in notes[0]
    # On the demo's own pack, and when the request gives its ratings, nothing to say.
    demo = agent.execute("optimizer.propose_trades", REQUEST)
    assert not [w for w in demo["warnings"] if w.startswith("quality ratings from the store")]
    given = agent.execute("optimizer.propose_trades", dict(REQUEST, pricing_pack_id="PP_CLIENT",
                                                           ratings={"AAPL": 9, "MSFT": 9, "XOM": 9}))
    assert not [w for w in given["warnings"] if w.startswith("quality ratings from the store")]


@pytest.mark.parametrize("argv", [("ratings", "--help"), ("ratings", "import", "--help")])
def test_help_teaches_with_examples(capsys, argv) -> None:
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "examples:" in out and "optimizer ratings import my_ratings.csv --user ann" in out
