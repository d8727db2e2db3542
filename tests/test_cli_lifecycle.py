"""The lifecycle commands: targets set|show, history, orders, and the README's drift_rebalance path."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run

from patterns.loader import PATTERN_DIR

EXAMPLES = PATTERN_DIR / "examples"
TARGETS = EXAMPLES / "targets_demo_diversified.csv"


@pytest.mark.parametrize("path", [["targets", "set"], ["targets", "show"], ["history"], ["orders"]])
def test_help_teaches(capsys: pytest.CaptureFixture[str], home: Path, path: list[str]) -> None:
    code, out, _ = run(capsys, *path, "--help")
    assert code == 0 and "example" in out and "optimizer " + " ".join(path) in out


def test_targets_are_versioned_and_bad_files_list_every_problem(
    capsys: pytest.CaptureFixture[str], seeded_home: Path, tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "targets", "set", "demo_diversified", "--weights", str(TARGETS))
    assert code == 0 and out.startswith("target version 1 of demo_diversified: 20 symbols, 98% invested, 2% cash")
    second = tmp_path / "w.csv"
    second.write_text("symbol,weight_pct\nAAPL,50\nMSFT,40\n")
    assert run(capsys, "targets", "set", "demo_diversified", "--weights", str(second), "--policy", "x")[0] == 0
    code, out, _ = run(capsys, "targets", "show", "demo_diversified", "--all", "--json")
    versions = json.loads(out)
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[1]["weights_pct"] == {"AAPL": 50.0, "MSFT": 40.0} and versions[1]["policy_id"] == "x"
    assert versions[0]["weights_pct"]["XOM"] == 6.9286

    bad = tmp_path / "bad.csv"
    bad.write_text("symbol,weight_pct\nAAPL,abc\nMSFT,70\nMSFT,10\nKO,60\n")
    code, _, err = run(capsys, "targets", "set", "demo_diversified", "--weights", str(bad))
    error = json.loads(err)
    assert code == 2 and error["code"] == "invalid_input"
    assert error["details"]["problems"] == ["line 2: weight_pct 'abc' is not a number", "line 4: MSFT appears twice"]
    assert run(capsys, "targets", "show", "demo_diversified", "--json")[1].count('"version": 2') == 1


def test_drift_rebalance_books_then_history_orders_and_versions(
    capsys: pytest.CaptureFixture[str], seeded_home: Path, tmp_path: Path
) -> None:
    assert run(capsys, "targets", "set", "demo_diversified", "--weights", str(TARGETS))[0] == 0
    code, out, _ = run(capsys, "run", "drift_rebalance", "--input", str(EXAMPLES / "drift_rebalance.json"))
    assert code == 0
    run_id = out.split()[1].rstrip(":")
    assert "status waiting_for_approval" in out and "largest XOM at 0.00% vs target 6.93%" in out

    # Approved in another process, as a person would.
    done = subprocess.run(
        [sys.executable, "-m", "agents.cli", "--home", str(seeded_home), "resume", run_id, "--approve",
         "--note", "monthly review", "--json"],
        capture_output=True, text=True, check=False, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "completed" and report["outputs"]["booking"]["status"] == "booked"
    assert report["outputs"]["booking"]["version_after"] == 2

    code, out, _ = run(capsys, "history", "demo_diversified", "--json")
    history = json.loads(out)
    assert len(history) == 1 and history[0]["note"] == "monthly review" and history[0]["run_id"] == run_id
    weights = {w["symbol"]: w for w in history[0]["weights"]}
    assert weights["XOM"]["before_pct"] == 0.0 and weights["XOM"]["after_pct"] > 6.0
    assert "rebalance 1: booked on 2022-12-28" in run(capsys, "history", "demo_diversified")[1]

    orders = tmp_path / "orders.csv"
    assert run(capsys, "orders", run_id, "--csv", str(orders))[0] == 0
    rows = list(csv.DictReader(io.StringIO(orders.read_text())))
    trades = {t["symbol"]: t for t in report["outputs"]["trades"]}
    assert {r["symbol"] for r in rows} == set(trades)
    xom = next(r for r in rows if r["symbol"] == "XOM")
    assert (xom["side"], int(xom["quantity"]), float(xom["limit_price"])) == ("BUY", trades["XOM"]["quantity"], 106.627)

    code, out, _ = run(capsys, "history", "demo_diversified", "--version", "1", "--json")
    assert json.loads(out)["positions"].get("XOM") is None
    code, out, _ = run(capsys, "history", "demo_diversified", "--version", "2", "--json")
    assert json.loads(out)["positions"]["XOM"] == trades["XOM"]["quantity"]

    # Back at target: the next run ends with no rebalance due, and says why.
    code, out, _ = run(capsys, "run", "drift_rebalance", "--input", str(EXAMPLES / "drift_rebalance.json"))
    assert code == 0 and "status completed" in out
    assert "no rebalance due: every line is within 5 points of its target" in out
    code, _, err = run(capsys, "orders", "no-such-run", "--csv", str(orders))
    assert code == 3 and json.loads(err)["code"] == "not_found"


def test_stored_restrictions_apply_to_every_proposal_for_the_account(
    capsys: pytest.CaptureFixture[str], seeded_home: Path, tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "restrictions", "set", "demo_diversified", "--restricted", "LLY, XOM", "--frozen", "AMD")
    assert code == 0
    assert out.strip() == "demo_diversified: restricted (never bought): LLY, XOM; frozen (never traded): AMD"
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"portfolio_id": "demo_diversified", "pricing_pack_id": "PP_2022-12-28",
                                   "policy": {"method": "max_sharpe", "universe": "pack",
                                              "max_single_position_pct": 12.0, "max_turnover_pct": 30.0}}))
    code, out, _ = run(capsys, "call", "optimizer.propose_trades", "--input", str(request))
    trades = {t["symbol"]: t for t in json.loads(out)["trades"]}
    assert code == 0 and trades["AMD"]["quantity"] == 0 and "XOM" not in trades
    assert trades["LLY"]["action"] != "BUY"
    code, _, err = run(capsys, "restrictions", "set", "demo_diversified", "--restricted", "AMD", "--frozen", "AMD")
    assert code == 2 and "cannot be both restricted and frozen" in json.loads(err)["message"]
    assert run(capsys, "restrictions", "set", "demo_diversified")[0] == 0
    assert json.loads(run(capsys, "restrictions", "show", "demo_diversified", "--json")[1]) == {
        "restricted": [], "frozen": []}


def test_lifecycle_commands_act_as_a_user(capsys: pytest.CaptureFixture[str], seeded_home: Path) -> None:
    # demo_diversified belongs to 'demo': 'mallory' gets the same error as for a missing portfolio.
    assert run(capsys, "targets", "set", "demo_diversified", "--weights", str(TARGETS), "--user", "demo")[0] == 0
    for argv in (["targets", "show", "demo_diversified"], ["history", "demo_diversified"],
                 ["restrictions", "show", "demo_diversified"],
                 ["targets", "set", "demo_diversified", "--weights", str(TARGETS)],
                 ["restrictions", "set", "demo_diversified", "--frozen", "AMD"]):
        code, out, err = run(capsys, *argv, "--user", "mallory")
        missing_code, _, missing_err = run(capsys, *[a if a != "demo_diversified" else "nope" for a in argv],
                                           "--user", "mallory")
        assert (code, out) == (3, "") and json.loads(err)["code"] == "not_found", argv
        assert json.loads(err)["message"] == json.loads(missing_err)["message"].replace("nope", "demo_diversified")
    code, out, _ = run(capsys, "targets", "show", "demo_diversified", "--json", "--user", "demo")
    assert code == 0 and json.loads(out)["version"] == 1
    assert run(capsys, "targets", "set", "demo_diversified", "--weights", str(TARGETS), "--user", " ")[0] == 2
