"""OptimizerAgent: registration, description, owner-only access, one log line a call, the result
cache (with a fake clock), and pattern runs that stop at a gate and resume after a restart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agents.agent import OptimizerAgent
from agents.run_log import RunLog
from capabilities.base import RequestContext
from capabilities.cache import ResultCache
from capabilities.registry import CapabilityRegistry
from services.data.store import Store
from services.errors import ConflictError, InfeasibleError, InputError, NotFoundError

PACK = "PP_2022-12-28"
CAPABILITIES = {
    "optimizer.propose_trades",
    "optimizer.analyze_impact",
    "optimizer.suggest_hedges",
    "optimizer.suggest_deleveraging_hedges",
    "optimizer.check_drift",
    "optimizer.book_trades",
}
# Answers that change with the store (drift after a booking; a booking itself) are never cached.
UNCACHED = {"optimizer.check_drift", "optimizer.book_trades"}
# A small inline portfolio keeps these calls fast; the numbers are not what is tested here.
INLINE = {
    "positions": [{"symbol": "AAPL", "shares": 10}, {"symbol": "JNJ", "shares": 5}],
    "cash": 1000,
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def quick_agent(module_store: Store, tmp_path: Path, clock: FakeClock) -> OptimizerAgent:
    return OptimizerAgent(module_store, home=tmp_path / "home", cache=ResultCache(clock=clock))


def impact_request(quantity: int = 2, **changes: Any) -> dict[str, Any]:
    return {
        "portfolio": INLINE,
        "pricing_pack_id": PACK,
        "proposed_trades": [{"symbol": "JNJ", "action": "BUY", "quantity": quantity}],
        **changes,
    }


# --- the agent -----------------------------------------------------------------------------------


def test_no_argument_agent_uses_the_embedded_defaults(home: Path) -> None:
    from agents import OptimizerAgent as Exported

    assert Exported is OptimizerAgent
    agent = Exported()
    assert agent.home == home.resolve()
    assert [p["id"] for p in agent.store.list_portfolios()]  # an empty home was seeded
    agent.store.close()


def test_registers_the_capabilities_explicitly(quick_agent: OptimizerAgent) -> None:
    assert set(quick_agent.registry.names()) == CAPABILITIES
    assert not list(CapabilityRegistry())  # importing the capability modules registered nothing


def test_describes_each_capability(quick_agent: OptimizerAgent) -> None:
    described = {d["name"]: d for d in quick_agent.describe()}
    assert set(described) == CAPABILITIES
    for item in described.values():
        assert (
            item["description"]
            and (item["ttl"] == 0 if item["name"] in UNCACHED else item["ttl"] > 0)
            and item["source"] == "optimizer:{pricing_pack_id}"
        )
        assert (
            item["input_schema"]["type"] == "object"
            and "pricing_pack_id" in item["input_schema"]["properties"]
        )
        assert "_metadata" in item["output_schema"]["properties"]
        json.dumps(item)  # JSON-ready as it is


def test_result_metadata(quick_agent: OptimizerAgent) -> None:
    result = quick_agent.execute("optimizer.analyze_impact", impact_request())
    meta = result["_metadata"]
    assert meta["source"] == f"optimizer:{PACK}" and meta["asof"] == "2022-12-28"
    assert meta["ttl"] == 300 and len(meta["inputs_hash"]) == 64 and meta["cached"] is False


# --- access --------------------------------------------------------------------------------------


def test_someone_elses_portfolio_is_reported_like_an_unknown_one(
    quick_agent: OptimizerAgent,
) -> None:
    request = {"portfolio_id": "demo_quality", "pricing_pack_id": PACK, "proposed_trades": []}
    ctx = RequestContext(user="mallory")
    with pytest.raises(NotFoundError) as theirs:
        quick_agent.execute("optimizer.analyze_impact", request, ctx)
    with pytest.raises(NotFoundError) as missing:
        quick_agent.execute("optimizer.analyze_impact", {**request, "portfolio_id": "nope"}, ctx)
    assert theirs.value.to_dict() == json.loads(
        json.dumps(missing.value.to_dict()).replace("nope", "demo_quality")
    )
    assert "demo_diversified" not in json.dumps(missing.value.to_dict())  # no other ids leak
    owner = quick_agent.execute("optimizer.analyze_impact", request, RequestContext(user="demo"))
    assert owner["portfolio_id"] == "demo_quality"


# --- logging -------------------------------------------------------------------------------------


def test_every_call_is_logged_once(quick_agent: OptimizerAgent) -> None:
    ctx = RequestContext(user=None, trace_id="trace-1")
    with capture_logs() as logs:
        quick_agent.execute("optimizer.analyze_impact", impact_request(), ctx)
        quick_agent.execute("optimizer.analyze_impact", impact_request(), ctx)
        with pytest.raises(InputError):
            quick_agent.execute("optimizer.analyze_impact", impact_request(bogus=1), ctx)
    calls = [e for e in logs if e["event"] == "capability_call"]
    assert [(c["outcome"], c["cached"]) for c in calls] == [
        ("ok", False),
        ("ok", True),
        ("invalid_input", False),
    ]
    for call in calls:
        assert call["capability"] == "optimizer.analyze_impact" and call["trace_id"] == "trace-1"
        assert call["duration_ms"] >= 0
    assert [c["pack"] for c in calls] == [PACK, PACK, None]  # an invalid request names no pack


# --- cache ---------------------------------------------------------------------------------------


def test_identical_calls_within_the_ttl_are_served_from_the_cache(
    quick_agent: OptimizerAgent, clock: FakeClock
) -> None:
    first = quick_agent.execute("optimizer.analyze_impact", impact_request())
    clock.now += 299
    second = quick_agent.execute("optimizer.analyze_impact", impact_request())
    assert second["_metadata"]["cached"] is True
    assert {**second, "_metadata": {**second["_metadata"], "cached": False}} == first
    second["trades_applied"].clear()  # a caller changing its copy changes nothing cached
    assert quick_agent.execute("optimizer.analyze_impact", impact_request())["trades_applied"]

    other = quick_agent.execute("optimizer.analyze_impact", impact_request(quantity=3))
    assert other["_metadata"]["cached"] is False

    clock.now += 1  # the TTL (300 s) has passed since the first call
    assert (
        quick_agent.execute("optimizer.analyze_impact", impact_request())["_metadata"]["cached"]
        is False
    )


def test_the_cache_never_bypasses_the_owner_check(quick_agent: OptimizerAgent) -> None:
    request = {"portfolio_id": "demo_quality", "pricing_pack_id": PACK, "proposed_trades": []}
    quick_agent.execute("optimizer.analyze_impact", request, RequestContext(user="demo"))
    with pytest.raises(NotFoundError):
        quick_agent.execute("optimizer.analyze_impact", request, RequestContext(user="mallory"))


def test_cache_evicts_the_least_recently_used(clock: FakeClock) -> None:
    cache = ResultCache(clock=clock, max_entries=2)
    for key in ("a", "b", "c"):
        cache.put("cap", key, {"_metadata": {"cached": False}, "key": key}, ttl_seconds=10)
    assert cache.get("cap", "a") is None and cache.get("cap", "c")["key"] == "c"
    cache.put("cap", "zero", {"_metadata": {}}, ttl_seconds=0)
    assert cache.get("cap", "zero") is None


# --- pattern runs --------------------------------------------------------------------------------


def gated_pattern(tmp_path: Path) -> Path:
    """analyze (inline portfolio) → gate when the trade is worth more than the threshold → again."""
    document = {
        "id": "gated_impact",
        "version": "1.0",
        "description": "Analyze a trade, ask when it is large, analyze a bigger one.",
        "inputs": {
            "type": "object",
            "properties": {
                "quantity": {"type": "integer"},
                "threshold": {"type": "number", "default": 100},
            },
            "required": ["quantity"],
            "additionalProperties": False,
        },
        "steps": [
            {
                "id": "first",
                "capability": "optimizer.analyze_impact",
                "args": {
                    "portfolio": INLINE,
                    "pricing_pack_id": PACK,
                    "proposed_trades": [
                        {"symbol": "JNJ", "action": "BUY", "quantity": {"$ref": "inputs.quantity"}}
                    ],
                },
            },
            {
                "id": "second",
                "capability": "optimizer.analyze_impact",
                "args": {
                    "portfolio": INLINE,
                    "pricing_pack_id": PACK,
                    "proposed_trades": {
                        "$ref": "steps.first.trades_applied",
                        "fields": ["symbol", "action", "quantity"],
                    },
                },
            },
        ],
        "approvals": [
            {
                "id": "size_check",
                "after": "first",
                "message": "Large trade; go on?",
                "when": {
                    "ref": "steps.first.trades_applied.0.trade_value",
                    "op": "gt",
                    "value": {"$ref": "inputs.threshold"},
                },
                "show": {"value": {"$ref": "steps.first.trades_applied.0.trade_value"}},
            }
        ],
        "outputs": {
            "costs": {"$ref": "steps.first.estimated_costs"},
            "second": {"$ref": "steps.second.warnings"},
        },
    }
    path = tmp_path / "gated.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_a_run_waits_at_its_gate_and_resumes_after_a_restart(
    module_store: Store, tmp_path: Path
) -> None:
    pattern = gated_pattern(tmp_path)
    home = tmp_path / "home"
    times = iter(
        [datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), datetime(2026, 1, 2, 3, 9, 0, tzinfo=UTC)]
    )
    run_log = RunLog(module_store.engine, clock=lambda: next(times))
    agent = OptimizerAgent(module_store, home=home, run_log=run_log)
    report = agent.run_pattern(pattern, {"quantity": 2}, RequestContext(user="ann"), run_id="run-1")
    assert report["status"] == "waiting_for_approval" and report["run_id"] == "run-1"
    assert report["pending_approval"]["gate"] == "size_check"
    assert report["pending_approval"]["show"]["value"] > 100
    assert "second" not in report["steps"] and report["outputs"]["second"] is None
    record = agent.run_record("run-1", RequestContext(user="ann"))
    assert (
        record["created_at"] == "2026-01-02T03:04:05+00:00"
        and record["updated_at"] == "2026-01-02T03:09:00+00:00"
    )
    assert record["pattern_id"] == "gated_impact" and record["inputs"] == {
        "quantity": 2,
        "threshold": 100,
    }

    pattern.unlink()  # the run resumes with the pattern it started with
    restarted = OptimizerAgent(module_store, home=home)
    with pytest.raises(NotFoundError) as other_user:
        restarted.resume_run("run-1", approve=True, ctx=RequestContext(user="bob"))
    assert (
        other_user.value.message == "run 'run-1' not found; `optimizer runs list` shows your runs"
    )
    assert restarted.list_runs(RequestContext(user="bob")) == []
    final = restarted.resume_run("run-1", approve=True, note="fine", ctx=RequestContext(user="ann"))
    assert final["status"] == "completed"
    assert final["approvals"]["size_check"]["status"] == "approved"
    assert (
        final["approvals"]["size_check"]["by"] == "ann"
        and final["approvals"]["size_check"]["note"] == "fine"
    )
    assert final["steps"]["second"]["request"]["proposed_trades"] == [
        {"symbol": "JNJ", "action": "BUY", "quantity": 2}
    ]
    assert final["outputs"]["costs"] == final["steps"]["first"]["output"]["estimated_costs"]
    assert [r["status"] for r in restarted.list_runs()] == ["completed"]
    with pytest.raises(ConflictError, match="not waiting for approval"):
        restarted.resume_run("run-1", approve=True)


def test_run_ids_are_unique_and_well_formed(quick_agent: OptimizerAgent, tmp_path: Path) -> None:
    pattern = gated_pattern(tmp_path)
    quick_agent.run_pattern(pattern, {"quantity": 1, "threshold": 1e9}, run_id="r1")
    with pytest.raises(ConflictError):
        quick_agent.run_pattern(pattern, {"quantity": 1}, run_id="r1")
    with pytest.raises(InputError, match="run id"):
        quick_agent.run_pattern(pattern, {"quantity": 1}, run_id="../etc")
    generated = quick_agent.run_pattern(pattern, {"quantity": 1, "threshold": 1e9})["run_id"]
    assert len(generated) == 32


def test_rejection_and_failure_are_recorded(quick_agent: OptimizerAgent, tmp_path: Path) -> None:
    pattern = gated_pattern(tmp_path)
    quick_agent.run_pattern(pattern, {"quantity": 2}, run_id="to-reject")
    rejected = quick_agent.resume_run("to-reject", approve=False, note="no")
    assert rejected["status"] == "rejected" and rejected["steps"]["second"]["status"] == "skipped"
    assert rejected["halted"]["reason"] == "rejected at approval gate 'size_check'"

    failed = quick_agent.run_pattern(pattern, {"quantity": -1}, run_id="bad-quantity")
    assert (
        failed["status"] == "failed"
        and failed["steps"]["first"]["error"]["code"] == "invalid_input"
    )
    assert quick_agent.run_record("bad-quantity")["status"] == "failed"


def test_bad_inputs_never_start_a_run(quick_agent: OptimizerAgent, tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        quick_agent.run_pattern(
            gated_pattern(tmp_path), {"quantity": "two", "extra": 1}, run_id="x"
        )
    assert {e["pointer"] for e in caught.value.details["errors"]} == {"", "/quantity"}
    # Runs live in the module's shared store: other tests' runs are there, this one is not.
    assert "x" not in {r["run_id"] for r in quick_agent.list_runs(limit=1000)}


def test_pattern_runs_are_logged(quick_agent: OptimizerAgent, tmp_path: Path) -> None:
    with capture_logs() as logs:
        quick_agent.run_pattern(
            gated_pattern(tmp_path), {"quantity": 1, "threshold": 1e9}, run_id="logged"
        )
    run_lines = [e for e in logs if e["event"] == "pattern_run"]
    assert (
        len(run_lines) == 1
        and run_lines[0]["outcome"] == "completed"
        and run_lines[0]["run_id"] == "logged"
    )
    assert {e["trace_id"] for e in logs if e["event"] == "capability_call"} == {"logged"}


def test_a_limit_removed_with_null_is_not_the_same_request_as_one_kept(agent) -> None:
    # Null removes the template's limits, an omitted field keeps them. The two used to hash alike,
    # so the request keeping the limits was served the cached result computed without them.
    base = {"portfolio_id": "demo_concentrated", "pricing_pack_id": "PP_2022-12-28",
            "policy_id": "aggressive_growth"}
    removed = agent.execute("optimizer.propose_trades", {**base, "policy": {
        "universe": "pack", "max_tracking_error_pct": None, "max_turnover_pct": None}})
    assert removed["trade_count"] > 0 and removed["_metadata"]["cached"] is False
    with pytest.raises(InfeasibleError):
        agent.execute("optimizer.propose_trades", {**base, "policy": {"universe": "pack"}})
    again = agent.execute("optimizer.propose_trades", {**base, "policy": {
        "universe": "pack", "max_turnover_pct": None, "max_tracking_error_pct": None}})
    assert again["_metadata"]["cached"] is True
    assert again["_metadata"]["inputs_hash"] == removed["_metadata"]["inputs_hash"]


def test_an_embedded_agent_logs_to_stderr_never_stdout(seeded_home: Path) -> None:
    # A host that never configured structlog: the agent's log lines must not reach stdout.
    script = (
        "from agents import OptimizerAgent\n"
        "OptimizerAgent().execute('optimizer.propose_trades', {'portfolio_id': 'demo_diversified', "
        "'pricing_pack_id': 'PP_2022-12-28', 'policy_id': 'quality_focused'})\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1],
                          env={**os.environ, "OPTIMIZER_HOME": str(seeded_home)})
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert '"event": "capability_call"' in done.stderr
