"""The pattern commands of the CLI: capabilities, patterns, graph, run, resume, runs, and the
README's main job (policy_rebalance on the demo portfolio, stopping at its approval gate).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import run

from patterns.loader import PATTERN_DIR

EXAMPLE = PATTERN_DIR / "examples" / "policy_rebalance.json"


def small_pattern(tmp_path: Path) -> Path:
    """One analyze_impact call on an inline portfolio, then a gate that always asks."""
    document = {
        "id": "small",
        "version": "1",
        "description": "One quick call and a gate.",
        "inputs": {
            "type": "object",
            "properties": {"quantity": {"type": "integer"}},
            "required": ["quantity"],
        },
        "steps": [
            {
                "id": "impact",
                "capability": "optimizer.analyze_impact",
                "args": {
                    "portfolio": {"positions": [{"symbol": "JNJ", "shares": 5}], "cash": 1000},
                    "pricing_pack_id": "PP_2022-12-28",
                    "proposed_trades": [
                        {"symbol": "JNJ", "action": "BUY", "quantity": {"$ref": "inputs.quantity"}}
                    ],
                },
            }
        ],
        "approvals": [{"id": "ok", "after": "impact", "message": "Go on?"}],
        "outputs": {"trades": {"$ref": "steps.impact.trades_applied"}},
    }
    path = tmp_path / "small.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "path",
    [
        ["capabilities"],
        ["patterns"],
        ["graph"],
        ["run"],
        ["resume"],
        ["runs"],
        ["runs", "list"],
        ["runs", "show"],
    ],
    ids=" ".join,
)
def test_help(capsys: pytest.CaptureFixture[str], home: Path, path: list[str]) -> None:
    code, out, _ = run(capsys, *path, "--help")
    assert code == 0 and out.startswith(f"usage: optimizer {' '.join(path)}") and "example" in out


def test_capabilities_and_patterns_listings(
    capsys: pytest.CaptureFixture[str], seeded_home: Path
) -> None:
    code, out, _ = run(capsys, "capabilities")
    assert (
        code == 0
        and "optimizer.suggest_deleveraging_hedges" in out
        and "optimizer:{pricing_pack_id}" in out
    )
    code, out, _ = run(capsys, "capabilities", "--json")
    assert {c["name"] for c in json.loads(out)} >= {
        "optimizer.propose_trades",
        "optimizer.suggest_hedges",
    }
    code, out, _ = run(capsys, "patterns")
    assert code == 0 and "propose > impact > hedges > [approve_trades]" in out
    code, out, _ = run(capsys, "graph", "policy_rebalance")
    assert code == 0 and "graph TD;" in out and "hedges --> approve_trades;" in out


def test_bad_pattern_file_exits_2_listing_every_problem(
    capsys: pytest.CaptureFixture[str], seeded_home: Path, tmp_path: Path
) -> None:
    bad = json.loads(small_pattern(tmp_path).read_text(encoding="utf-8"))
    bad["steps"][0]["capability"] = "optimizer.nothing"
    bad["outputs"]["x"] = {"$ref": "steps.later.value"}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad), encoding="utf-8")
    inputs = tmp_path / "in.json"
    inputs.write_text('{"quantity": 1}', encoding="utf-8")
    code, out, err = run(capsys, "run", str(path), "--input", str(inputs))
    error = json.loads(err.strip().splitlines()[-1])
    assert code == 2 and out == "" and error["code"] == "invalid_pattern"
    assert [e["pointer"] for e in error["details"]["errors"]] == [
        "/steps/0/capability",
        "/outputs/x/$ref",
    ]
    code, _, err = run(capsys, "run", "no_such_pattern", "--input", str(inputs))
    assert code == 2 and json.loads(err.strip().splitlines()[-1])["code"] == "unknown_pattern"


def test_run_resume_and_runs(
    capsys: pytest.CaptureFixture[str], seeded_home: Path, tmp_path: Path
) -> None:
    pattern, inputs = small_pattern(tmp_path), tmp_path / "in.json"
    inputs.write_text('{"quantity": 2}', encoding="utf-8")
    record = tmp_path / "case-1"
    code, out, _ = run(
        capsys, "run", str(pattern), "--input", str(inputs), "--record", str(record), "--json"
    )
    report = json.loads(out)
    assert code == 0 and report["run_id"] == "case-1" and report["status"] == "waiting_for_approval"
    assert report["outputs"]["trades"][0]["symbol"] == "JNJ"  # what the run has produced so far
    case = json.loads((record / "case.json").read_text(encoding="utf-8"))
    assert case == {
        "pattern": str(pattern),
        "inputs": {"quantity": 2},
        "run_id": "case-1",
        "user": None,
    }
    call = json.loads(
        (record / "calls" / "01_optimizer.analyze_impact.json").read_text(encoding="utf-8")
    )
    assert call["phase"] == "run" and "versions" not in call["response"]["_metadata"]
    final_state: dict[str, Any] = json.loads(
        (record / "final_state.json").read_text(encoding="utf-8")
    )
    assert final_state["steps"]["impact"]["output"] == {
        "$call": "calls/01_optimizer.analyze_impact.json"
    }

    code, out, _ = run(capsys, "runs", "list")
    assert code == 0 and "case-1" in out and "waiting_for_approval" in out
    code, out, _ = run(capsys, "resume", "case-1", "--reject", "--note", "not now")
    assert code == 0 and "status rejected" in out and "note: not now" in out
    code, out, _ = run(capsys, "runs", "show", "case-1", "--json")
    assert json.loads(out)["status"] == "rejected"
    code, _, err = run(capsys, "resume", "case-1", "--approve")
    assert code == 3 and json.loads(err.strip().splitlines()[-1])["code"] == "conflict"
    code, _, err = run(capsys, "runs", "show", "case-1", "--user", "mallory")
    assert code == 3 and json.loads(err.strip().splitlines()[-1])["code"] == "not_found"


def test_readme_main_job_stops_at_the_gate_and_resumes_in_another_process(
    capsys: pytest.CaptureFixture[str], seeded_home: Path
) -> None:
    code, out, _ = run(capsys, "run", "policy_rebalance", "--input", str(EXAMPLE))
    assert code == 0
    run_id = out.split()[1].rstrip(":")
    assert f"run {run_id}: pattern policy_rebalance v1.0, status waiting_for_approval" in out
    for section in ("trades:", "metrics:", "hedges:", "hedge_summary:"):
        assert f"\n{section}\n" in out
    assert "symbol  action  quantity" in out and "top10_concentration_pct" in out
    assert "waiting for approval at gate 'approve_trades'" in out
    assert f"resume with `optimizer resume {run_id} --approve`" in out

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents.cli",
            "--home",
            str(seeded_home),
            "resume",
            run_id,
            "--approve",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (
        report["status"] == "completed"
        and report["approvals"]["approve_trades"]["status"] == "approved"
    )
    assert report["outputs"]["summary"]["total_trade_value"] > 10_000
