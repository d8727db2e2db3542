"""Runs in the store's database, decided once per gate, recoverable after a crash, cancellable —
with real processes, on SQLite and on PostgreSQL (``db_url``)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from serving import cli, cli_process
from sqlalchemy.exc import DBAPIError

from agents.run_log import RunLog
from agents.wiring import open_store
from services.data.store import Store

PACK = "PP_2022-12-28"
INLINE = {"positions": [{"symbol": "AAPL", "shares": 10}, {"symbol": "JNJ", "shares": 5}],
          "cash": "5000"}


def gated_pattern(directory: Path) -> Path:
    """impact of buying JNJ → a gate when the trade is worth more than 100 → impact again."""
    impact = {"portfolio": INLINE, "pricing_pack_id": PACK,
              "proposed_trades": [{"symbol": "JNJ", "action": "BUY", "quantity": {"$ref": "inputs.quantity"}}]}
    document = {
        "id": "gated", "version": "1.0", "description": "Buy JNJ, ask when large, measure again.",
        "inputs": {"type": "object", "properties": {"quantity": {"type": "integer"}},
                   "required": ["quantity"], "additionalProperties": False},
        "steps": [
            {"id": "first", "capability": "optimizer.analyze_impact", "args": impact},
            {"id": "second", "capability": "optimizer.analyze_impact", "args": impact},
        ],
        "approvals": [{
            "id": "size_check", "after": "first", "message": "Large trade; go on?",
            "when": {"ref": "steps.first.trades_applied.0.trade_value", "op": "gt", "value": 100},
        }],
        "outputs": {"costs": {"$ref": "steps.first.estimated_costs"}},
    }
    path = directory / "gated.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def start_waiting_run(tmp_path: Path, run_id: str, user: str = "ann") -> None:
    inputs = tmp_path / "inputs.json"
    inputs.write_text('{"quantity": 3}', encoding="utf-8")
    done = cli("run", str(gated_pattern(tmp_path)), "--input", str(inputs), "--run-id", run_id,
               "--user", user, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "waiting_for_approval"


def checkpointed(store: Store) -> bool:
    """Whether LangGraph has written a checkpoint of run 'doomed' (the tables exist once it has run)."""
    try:
        with store.engine.connect() as conn:
            return bool(conn.exec_driver_sql(
                "SELECT count(*) FROM checkpoints WHERE thread_id = '/doomed'").scalar())
    except DBAPIError:
        return False


def show(run_id: str, user: str = "ann") -> dict[str, Any]:
    done = cli("runs", "show", run_id, "--user", user, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_eight_processes_on_a_fresh_home_all_succeed(db_url: str | None, home: Path) -> None:
    procs = [cli_process("portfolios", "list", "--json") for _ in range(8)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [err for _, err in outputs]
    listings = {out for out, _ in outputs}
    assert len(listings) == 1  # every process saw the same, completely seeded store
    assert [p["id"] for p in json.loads(listings.pop())] == [
        "demo_concentrated", "demo_diversified", "demo_quality"]


def test_two_concurrent_decisions_one_wins_the_other_is_told(
    db_url: str | None, home: Path, tmp_path: Path
) -> None:
    start_waiting_run(tmp_path, "race")
    approve = cli_process("resume", "race", "--approve", "--user", "ann", "--json")
    reject = cli_process("resume", "race", "--reject", "--note", "no", "--user", "ann", "--json")
    (_, a_err), (_, r_err) = approve.communicate(timeout=300), reject.communicate(timeout=300)
    codes = sorted([approve.returncode, reject.returncode])
    assert codes == [0, 3], (a_err, r_err)
    winner_approved = approve.returncode == 0
    loser_err = json.loads(r_err if winner_approved else a_err)
    verdict = "approved" if winner_approved else "rejected"
    assert loser_err["code"] == "conflict"
    assert f"gate 'size_check' was already {verdict} by ann" in loser_err["message"]
    record = show("race")
    assert record["status"] == ("completed" if winner_approved else "rejected")
    assert record["report"]["approvals"]["size_check"]["status"] == verdict
    assert record["decision"]["approved"] is winner_approved
    # A third decision later is refused the same way.
    late = cli("resume", "race", "--approve", "--user", "ann")
    assert late.returncode == 3 and f"already {verdict} by ann" in late.stderr


def test_a_run_killed_while_running_is_recovered_from_its_checkpoint(
    db_url: str | None, home: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "OPTIMIZER_RUN_LEASE_SECONDS": "2"}
    # policy_rebalance runs an optimization first: seconds in which to kill it mid-run.
    assert cli("seed", env=env).returncode == 0
    proc = cli_process("run", "policy_rebalance", "--input", "patterns/examples/policy_rebalance.json",
                       "--run-id", "doomed", "--json", env=env)
    store = open_store()  # polled directly: a CLI call takes longer than the window
    try:
        log, deadline = RunLog(store.engine), time.monotonic() + 120
        while not (checkpointed(store) and (row := log.get(None, "doomed")) and row["status"] == "running"):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        store.close()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    after_kill = cli("runs", "show", "doomed", "--json", env=env)
    assert json.loads(after_kill.stdout)["status"] == "running", after_kill.stderr
    time.sleep(2.5)  # the lease lapses: nobody renews it
    recovered = cli("runs", "recover", "--json", env=env)
    assert recovered.returncode == 0, recovered.stderr
    assert json.loads(recovered.stdout) == [{"run_id": "doomed", "status": "waiting_for_approval"}]
    final = cli("resume", "doomed", "--approve", "--json", env=env)
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["status"] == "completed"


def test_cancel_stops_a_waiting_run_for_good(db_url: str | None, home: Path, tmp_path: Path) -> None:
    start_waiting_run(tmp_path, "to-cancel")
    assert cli("runs", "cancel", "to-cancel", "--user", "bob").returncode == 3  # not bob's: not found
    done = cli("runs", "cancel", "to-cancel", "--user", "ann", "--json")
    assert done.returncode == 0 and json.loads(done.stdout) == {"run_id": "to-cancel", "status": "cancelled"}
    resumed = cli("resume", "to-cancel", "--approve", "--user", "ann")
    assert resumed.returncode == 3 and "is cancelled" in resumed.stderr
    again = cli("runs", "cancel", "to-cancel", "--user", "ann")
    assert again.returncode == 3 and "only a running or waiting run can be cancelled" in again.stderr
    assert show("to-cancel")["status"] == "cancelled"


def test_runs_live_in_the_store_database(db_url: str | None, home: Path, tmp_path: Path) -> None:
    start_waiting_run(tmp_path, "where")
    assert sorted(p.name for p in home.iterdir() if p.suffix == ".db") == (
        ["optimizer.db"] if db_url is None else [])
