"""Batches on a real Dask cluster: results byte-identical to one call at a time, errors per
request, input order, shared estimation, and resuming an interrupted batch.

One two-worker ``LocalCluster`` (processes, started by the engine's own ``start_local_cluster``)
serves the whole module; the tests reach it through ``scheduler=`` / ``--scheduler``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.agent import OptimizerAgent
from agents.batch import BatchItem, BatchRequest, open_results, read_requests
from agents.cli import main
from capabilities.base import RequestContext
from capabilities.propose_trades import resolve
from capabilities.runner import canonical_json, validate_input
from services.batch.engine import BatchEngine, ProposalJob, start_local_cluster
from services.data.store import Store
from services.errors import InputError, OptimizerError

ROOT = Path(__file__).resolve().parents[1]
PACK = "PP_2022-12-28"
CAPABILITY = "optimizer.propose_trades"


def inline(shares: dict[str, int], cash: int = 5000) -> dict[str, Any]:
    return {"positions": [{"symbol": s, "shares": n} for s, n in shares.items()], "cash": cash}


# Same symbols, different shares and the same policy: one estimation shared by both.
SAME_NAMES_A = {"AAPL": 100, "JNJ": 80, "MSFT": 50, "XOM": 120}
SAME_NAMES_B = {"AAPL": 10, "JNJ": 300, "MSFT": 90, "XOM": 40}
MIN_VAR = {"method": "min_variance", "max_single_position_pct": 40}

REQUESTS: list[Any] = [
    {"portfolio_id": "demo_diversified", "pricing_pack_id": PACK, "policy_id": "quality_focused"},
    {"portfolio_id": "demo_quality", "pricing_pack_id": PACK, "policy_id": "quality_focused"},  # infeasible
    {"portfolio": inline(SAME_NAMES_A), "pricing_pack_id": PACK, "policy": MIN_VAR},
    {"portfolio_id": "demo_diversified", "pricing_pack_id": PACK, "policy_id": "quality_focused",
     "limit": 3},  # invalid: unknown field
    {"portfolio": inline(SAME_NAMES_B), "pricing_pack_id": PACK, "policy": MIN_VAR},
    {"portfolio_id": "no_such_portfolio", "pricing_pack_id": PACK},  # not found
    {"portfolio_id": "demo_concentrated", "pricing_pack_id": PACK, "policy_id": "aggressive_growth",
     "policy": {"universe": "pack", "max_tracking_error_pct": None, "max_turnover_pct": None}},
    {"portfolio_id": "demo_diversified", "pricing_pack_id": PACK, "policy_id": "aggressive_growth"},
]


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """The address of a two-worker LocalCluster shared by this module."""
    cluster = start_local_cluster(workers=2)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def one_by_one(store: Store, request: Any, ctx: RequestContext | None = None) -> str:
    """The canonical JSON a single call gives (the result, or the error object), on a fresh agent."""
    try:
        return canonical_json(OptimizerAgent(store).execute(CAPABILITY, request, ctx))
    except OptimizerError as err:
        return canonical_json(err.to_dict())


def as_single(item: BatchItem) -> str:
    return canonical_json(item.result if item.ok else item.error)


def test_a_batch_equals_one_call_at_a_time_byte_for_byte(agent: OptimizerAgent, scheduler: str) -> None:
    finished: list[tuple[int, bool]] = []
    items = list(agent.run_batch(REQUESTS, scheduler=scheduler, on_complete=lambda *a: finished.append(a)))

    assert [i.line for i in items] == list(range(1, len(REQUESTS) + 1))
    assert sorted(finished) == [(i.line, i.ok) for i in items]
    assert [i.ok for i in items] == [True, False, True, False, True, False, True, True]
    assert [i.error["code"] for i in items if i.error] == ["infeasible", "invalid_input", "not_found"]
    # Every result went to the history once, as a single call's does.
    history = agent.store.list_proposals(limit=100)
    assert sorted(h["inputs_hash"] for h in history) == sorted(
        i.result["_metadata"]["inputs_hash"] for i in items if i.ok)
    for item, request in zip(items, REQUESTS, strict=True):
        assert as_single(item) == one_by_one(agent.store, request), f"line {item.line}"


def test_a_batch_result_equals_the_optimizer_call_command(
    agent: OptimizerAgent, scheduler: str, seeded_home: Path, tmp_path: Path
) -> None:
    request = REQUESTS[0]
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    done = subprocess.run([sys.executable, "-m", "agents.cli", "call", CAPABILITY, "--input", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    [item] = agent.run_batch([request], scheduler=scheduler)
    assert canonical_json(item.result) == canonical_json(json.loads(done.stdout))


def test_access_is_checked_for_every_request(agent: OptimizerAgent, scheduler: str) -> None:
    ctx = RequestContext(user="bob")  # the demo portfolios belong to "demo"
    requests = [{"portfolio_id": "demo_quality", "pricing_pack_id": PACK},
                {"portfolio": inline(SAME_NAMES_A), "pricing_pack_id": PACK, "policy": MIN_VAR}]
    items = list(agent.run_batch(requests, ctx, scheduler=scheduler))
    assert items[0].error == json.loads(one_by_one(agent.store, requests[0], ctx))
    assert items[0].error["code"] == "not_found"
    assert items[1].ok


def test_estimation_is_shared_and_packs_are_sent_once(agent: OptimizerAgent, scheduler: str) -> None:
    requests = [REQUESTS[2], REQUESTS[4], REQUESTS[2], REQUESTS[0]]
    jobs = []
    for line, payload in enumerate(requests, 1):
        inputs = resolve(validate_input(agent.registry.get(CAPABILITY), payload), agent.runner.services)
        jobs.append((line, inputs.pack, ProposalJob(inputs.holdings, inputs.policy, inputs.ratings,
                                                    inputs.benchmarks)))
    with BatchEngine(scheduler=scheduler) as engine:
        outcomes = dict(engine.run(jobs))
    assert engine.stats.packs == 1
    assert engine.stats.shared_estimates == 1  # the three inline portfolios on the same four names
    assert engine.stats.jobs_on_shared_estimates == 3
    assert all(o.error is None for o in outcomes.values())
    assert outcomes[1].proposal == outcomes[3].proposal


def _worker_state() -> tuple[bool, bool, bool, bool]:
    import gc

    return "cvxpy" in sys.modules, "clarabel" in sys.modules, gc.get_freeze_count() > 0, gc.isenabled()


def test_workers_are_warm_and_their_start_up_heap_frozen_before_the_first_job(scheduler: str) -> None:
    # The engine's set-up runs on every worker when it is registered, before any job is submitted.
    with BatchEngine(scheduler=scheduler) as engine:
        states = engine.client.run(_worker_state)
    # Collection, paused while the set-up imported, runs again for the jobs.
    assert len(states) == 2 and all(state == (True, True, True, True) for state in states.values())


def test_a_request_that_cannot_be_read_is_its_own_error(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text('{"portfolio_id": "demo_quality", "pricing_pack_id": "PP_2022-12-28"}\n'
                    "\n"
                    "{not json\n"
                    '{"cash": NaN}\n'
                    "[1, 2]\n")
    requests = read_requests(path)
    assert [r.line for r in requests] == [1, 3, 4, 5]
    assert requests[0].payload["portfolio_id"] == "demo_quality" and requests[0].error is None
    assert isinstance(requests[1].error, InputError) and "line 3 is not valid JSON" in requests[1].error.message
    assert isinstance(requests[2].error, InputError) and "NaN" in requests[2].error.message
    assert requests[3].payload == [1, 2]  # valid JSON: the capability's validation says what is wrong


def full_run(agent: OptimizerAgent, scheduler: str, requests: list[BatchRequest], path: Path) -> bytes:
    output, done = open_results(path, requests, resume=False)
    with output:
        for item in agent.run_batch(requests[done:], scheduler=scheduler):
            output.write(item.to_json() + "\n")
    return path.read_bytes()


@pytest.fixture
def requests_file(tmp_path: Path) -> Path:
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in REQUESTS[:2]) + "\n{oops\n"
                    + "\n".join(json.dumps(r) for r in REQUESTS[2:]) + "\n")
    return path


def test_an_interrupted_batch_resumes_without_repeating_or_losing_a_line(
    agent: OptimizerAgent, scheduler: str, requests_file: Path, tmp_path: Path
) -> None:
    requests = read_requests(requests_file)
    expected = full_run(OptimizerAgent(agent.store), scheduler, requests, tmp_path / "full.jsonl")
    history_before = len(agent.store.list_proposals(limit=1000))

    path = tmp_path / "results.jsonl"
    output, done = open_results(path, requests, resume=False)
    with output:
        items = agent.run_batch(requests, scheduler=scheduler)
        for _ in range(4):  # then the consumer stops, as on Ctrl-C: the iterator is closed
            output.write(next(items).to_json() + "\n")
        items.close()
    assert len(path.read_bytes().splitlines()) == 4

    output, done = open_results(path, requests, resume=True)
    assert done == 4
    with output:
        for item in agent.run_batch(requests[done:], scheduler=scheduler):
            output.write(item.to_json() + "\n")
    assert path.read_bytes() == expected
    # Each successful result was recorded once: by the full run and by the interrupted + resumed one.
    successes = sum('"result"' in line for line in expected.decode().splitlines())
    assert len(agent.store.list_proposals(limit=1000)) - history_before == successes


def test_a_line_cut_short_is_dropped_and_redone(
    agent: OptimizerAgent, scheduler: str, requests_file: Path, tmp_path: Path
) -> None:
    requests = read_requests(requests_file)
    expected = full_run(agent, scheduler, requests, tmp_path / "full.jsonl")
    lines = expected.splitlines(keepends=True)
    path = tmp_path / "results.jsonl"
    path.write_bytes(b"".join(lines[:3]) + lines[3][:40])  # killed in the middle of a write

    output, done = open_results(path, requests, resume=True)
    assert done == 3
    with output:
        for item in agent.run_batch(requests[done:], scheduler=scheduler):
            output.write(item.to_json() + "\n")
    assert path.read_bytes() == expected


def test_results_are_never_overwritten_or_resumed_from_another_input(
    requests_file: Path, tmp_path: Path
) -> None:
    requests = read_requests(requests_file)
    path = tmp_path / "results.jsonl"
    path.write_text('{"line": 1, "result": {}}\n{"line": 4, "result": {}}\n')
    with pytest.raises(InputError, match="already exists: pass --resume"):
        open_results(path, requests, resume=False)
    with pytest.raises(InputError, match="answers input line 4, but input line 2 comes next"):
        open_results(path, requests, resume=True)
    path.write_text("not a result\n")
    with pytest.raises(InputError, match="line 1 is not a batch result"):
        open_results(path, requests, resume=True)
    assert path.read_text() == "not a result\n"


def test_the_batch_command(
    capsys: pytest.CaptureFixture[str], seeded_home: Path, scheduler: str, requests_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    argv = ["batch", "--input", str(requests_file), "--output", str(out), "--scheduler", scheduler]
    assert main(argv) == 0
    stdout, stderr = capsys.readouterr()
    assert stdout == f"9 requests run: 5 succeeded, 4 failed; 9 of 9 results in {out}\n"
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["line"] for line in lines] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert lines[2]["error"]["code"] == "invalid_input" and "line 3 is not valid JSON" in lines[2]["error"]["message"]
    assert [("result" in line) for line in lines] == [True, False, False, True, False, True, False, True, True]
    # Not a terminal: progress is logged as JSON lines on stderr.
    events = [json.loads(line)["event"] for line in stderr.splitlines()]
    assert events[0] == "batch_started" and events[-1] == "batch_finished"
    assert events.count("capability_call") == 9

    before = out.read_bytes()
    assert main(argv) == 2  # an existing output is never overwritten
    assert "already exists" in json.loads(capsys.readouterr().err.splitlines()[-1])["message"]
    assert main([*argv, "--resume"]) == 0
    assert capsys.readouterr().out.startswith("0 requests run")
    assert out.read_bytes() == before


def test_the_batch_command_on_its_own_local_cluster(
    capsys: pytest.CaptureFixture[str], seeded_home: Path, tmp_path: Path
) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text(json.dumps(REQUESTS[0]) + "\n")
    out = tmp_path / "results.jsonl"
    assert main(["batch", "--input", str(path), "--output", str(out), "--workers", "1"]) == 0
    [line] = out.read_text().splitlines()
    assert json.loads(line)["result"]["trade_count"] > 0


def test_batch_help_teaches_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["batch", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--resume" in text and "--scheduler tcp://" in text and "examples:" in text
    assert main(["batch", "--input", "x", "--output", "y", "--workers", "0"]) == 2
    assert "not a number of workers" in capsys.readouterr().err
