"""``optimizer serve`` end to end: a real uvicorn process on 127.0.0.1, called with httpx, on
SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from serving import Server, add_user, as_json, cli, client, seeded_environment

from agents.output import pretty_json

PACK = "PP_2022-12-28"
REBALANCE = {"portfolio_id": "demo_diversified", "pricing_pack_id": PACK, "policy_id": "quality_focused"}


@dataclass
class Served:
    env: dict[str, str]
    server: Server
    demo: httpx.Client  # owns the demo portfolios
    mallory: httpx.Client  # owns nothing
    anonymous: httpx.Client


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with ExitStack() as stack:
        env, _ = stack.enter_context(seeded_environment(tmp_path_factory.mktemp("served"), request.param))
        demo_key, mallory_key = add_user("demo", env), add_user("mallory", env)
        server = Server(env)
        stack.callback(server.stop)
        clients = [stack.enter_context(client(server, k)) for k in (demo_key, mallory_key, None)]
        served = Served(env, server, *clients)
        # The restart test replaces the server; stop whichever one is current at the end.
        stack.callback(lambda: served.server.stop())
        yield served


def test_health_needs_no_key_and_everything_else_does(served: Served) -> None:
    health = served.anonymous.get("/healthz")
    assert health.status_code == 200 and as_json(health)["status"] == "ok"
    for method, path in [("GET", "/v1/capabilities"), ("GET", "/v1/packs"), ("GET", "/v1/runs"),
                         ("POST", "/v1/execute"), ("POST", "/api/v1/optimize"),
                         ("GET", "/api/v1/optimization/demo_quality/latest")]:
        for headers in ({}, {"Authorization": "Bearer opt_not-a-key"}, {"Authorization": "Basic x"}):
            response = served.anonymous.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (path, headers)
            assert as_json(response)["code"] == "unauthenticated"
            assert response.headers["www-authenticate"] == "Bearer"


def test_a_revoked_key_stops_working(served: Served) -> None:
    key = add_user("temp", served.env)
    with client(served.server, key) as temp:
        assert temp.get("/v1/packs").status_code == 200
        assert cli("users", "revoke", "temp", env=served.env).returncode == 0
        assert temp.get("/v1/packs").status_code == 401


def test_execute_returns_exactly_the_bytes_optimizer_call_prints(served: Served, tmp_path: Path) -> None:
    request = {"portfolio_id": "demo_quality", "pricing_pack_id": PACK,
               "proposed_trades": [{"symbol": "XOM", "action": "SELL", "quantity": 7}]}
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request), encoding="utf-8")
    printed = cli("call", "optimizer.analyze_impact", "--input", str(path), "--user", "demo", env=served.env)
    assert printed.returncode == 0, printed.stderr
    response = served.demo.post("/v1/execute", json={"capability": "optimizer.analyze_impact", "request": request})
    assert response.status_code == 200
    assert response.content == printed.stdout.encode("utf-8")
    assert response.content == pretty_json(as_json(response)).encode("utf-8")


def test_another_users_portfolio_is_indistinguishable_from_a_missing_one(served: Served) -> None:
    def error(pid: str) -> dict[str, object]:
        response = served.mallory.post("/v1/execute", json={"capability": "optimizer.analyze_impact", "request": {
            "portfolio_id": pid, "pricing_pack_id": PACK, "proposed_trades": []}})
        assert response.status_code == 404
        return as_json(response)

    theirs, missing = error("demo_quality"), error("no_such_pf")
    assert theirs == json.loads(json.dumps(missing).replace("no_such_pf", "demo_quality"))
    latest = served.mallory.get("/api/v1/optimization/demo_quality/latest")
    assert latest.status_code == 404 and "demo_" not in json.dumps(as_json(latest)).replace("demo_quality", "")
    assert as_json(served.mallory.get("/v1/portfolios")) == []
    assert {p["id"] for p in as_json(served.demo.get("/v1/portfolios"))} == {
        "demo_concentrated", "demo_diversified", "demo_quality"}


def test_optimize_maps_onto_the_engine_and_latest_returns_it(served: Served) -> None:
    body = {"portfolio_id": "demo_quality", "objective": "MIN_VOLATILITY",
            "constraints": {"max_weight": 0.6, "turnover_limit": 1.0}}
    response = served.demo.post("/api/v1/optimize", json=body)
    assert response.status_code == 200, response.text
    result = as_json(response)
    assert result["pricing_pack_id"] == PACK  # the latest pack by default
    meta = result["optimization_metadata"]
    assert meta["engine_method"] == "min_variance" and meta["constraints_satisfied"] is True
    assert meta["objective_value"] == result["expected_volatility"]
    assert max(result["optimal_weights"].values()) <= 0.6 + 1e-6
    # The same computation through the capability: the figures are the proposal's.
    proposal = as_json(served.demo.post("/v1/execute", json={"capability": "optimizer.propose_trades", "request": {
        "portfolio_id": "demo_quality", "pricing_pack_id": PACK,
        "policy": {"method": "min_variance", "max_single_position_pct": 60.0, "max_turnover_pct": 100.0}}}))
    assert result["expected_volatility"] == round(proposal["after"]["volatility_pct"] / 100, 6)
    assert result["optimal_weights"] == {
        t["symbol"]: round(t["target_weight_pct"] / 100, 6) for t in proposal["trades"] if t["target_shares"]}
    latest = served.demo.get("/api/v1/optimization/demo_quality/latest")
    assert latest.status_code == 200 and as_json(latest) == result
    never = served.demo.get("/api/v1/optimization/demo_concentrated/latest")
    assert never.status_code == 404 and as_json(never)["code"] == "not_found"


@pytest.mark.parametrize(("field", "value"), [
    ("method", "BLACK_LITTERMAN"), ("method", "ROBUST_OPTIMIZATION"), ("objective", "MULTI_OBJECTIVE")])
def test_unsupported_objectives_and_methods_are_refused_by_name(served: Served, field: str, value: str) -> None:
    response = served.demo.post("/api/v1/optimize", json={"portfolio_id": "demo_quality", field: value})
    assert response.status_code == 422
    error = as_json(response)
    assert error["code"] == "invalid_input" and value in error["message"]
    assert error["details"]["supported"] and value not in error["details"]["supported"]


def test_batch_keeps_order_and_a_failing_item_carries_its_error(served: Served) -> None:
    items = [{"portfolio_id": "demo_quality", "method": "HIERARCHICAL_RISK_PARITY"},
             {"portfolio_id": "demo_quality", "method": "BLACK_LITTERMAN"},
             {"portfolio_id": "nope"},
             {"portfolio_id": "demo_quality", "method": "RISK_PARITY"}]
    response = served.demo.post("/api/v1/optimize/batch", json=items)
    assert response.status_code == 200
    out = as_json(response)
    assert [o["index"] for o in out] == [0, 1, 2, 3]
    assert [o["error"]["code"] if o["error"] else None for o in out] == [
        None, "invalid_input", "not_found", None]
    assert out[0]["result"]["optimization_metadata"]["engine_method"] == "hrp"
    assert out[3]["result"]["optimization_metadata"]["engine_method"] == "risk_parity"


def test_errors_are_json_with_fitting_statuses(served: Served) -> None:
    malformed = served.demo.post("/api/v1/optimize", content=b"{not json",
                                 headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400 and as_json(malformed)["code"] == "malformed_json"
    unknown_field = served.demo.post("/api/v1/optimize", json={"portfolio_id": "demo_quality", "x": 1})
    assert unknown_field.status_code == 422 and as_json(unknown_field)["details"]["errors"]
    huge = served.demo.post("/api/v1/optimize", content=b"[" + b"0," * (3 * 1024 * 1024) + b"0]",
                            headers={"Content-Type": "application/json"})
    assert huge.status_code == 413 and as_json(huge)["code"] == "payload_too_large"
    route = served.demo.get("/v1/nowhere")
    assert route.status_code == 404 and set(as_json(route)) == {"code", "message", "details"}
    policy = served.demo.get("/v1/policies/no_such_policy")
    assert policy.status_code == 404 and "quality_focused" in as_json(policy)["message"]
    assert as_json(served.demo.get("/v1/policies/quality_focused"))["id"] == "quality_focused"


def test_runs_belong_to_their_owner_and_are_decided_once(served: Served) -> None:
    started = served.demo.post("/v1/runs", json={"pattern": "policy_rebalance", "inputs": REBALANCE})
    assert started.status_code == 201, started.text
    run_id = as_json(started)["run_id"]
    assert as_json(started)["status"] == "waiting_for_approval"
    assert served.mallory.get(f"/v1/runs/{run_id}").status_code == 404
    assert served.mallory.post(f"/v1/runs/{run_id}/approve").status_code == 404
    assert run_id not in {r["run_id"] for r in as_json(served.mallory.get("/v1/runs"))}
    assert run_id in {r["run_id"] for r in as_json(served.demo.get("/v1/runs"))}

    def approve(_: int) -> httpx.Response:
        return served.demo.post(f"/v1/runs/{run_id}/approve", json={"note": "ok"})

    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(approve, range(2)))
    assert sorted(r.status_code for r in responses) == [200, 409]
    loser = next(r for r in responses if r.status_code == 409)
    assert "already approved by demo" in as_json(loser)["message"]
    record = as_json(served.demo.get(f"/v1/runs/{run_id}"))
    assert record["status"] == "completed" and record["report"]["approvals"]["approve_trades"]["by"] == "demo"
    file_pattern = served.demo.post("/v1/runs", json={"pattern": "/etc/passwd", "inputs": {}})
    assert file_pattern.status_code == 422


def test_a_waiting_run_survives_a_restart_and_is_approved_by_the_new_process(served: Served) -> None:
    started = as_json(served.demo.post("/v1/runs", json={"pattern": "policy_rebalance", "inputs": REBALANCE}))
    assert started["status"] == "waiting_for_approval"
    with ExitStack() as stack:
        second = Server(served.env)  # another process on the same store
        stack.callback(second.stop)
        demo = stack.enter_context(client(second, served.demo.headers["Authorization"].split()[1]))
        served.server.stop()
        try:
            approved = demo.post(f"/v1/runs/{started['run_id']}/reject", json={"note": "not now"})
            assert approved.status_code == 200, approved.text
            assert as_json(approved)["status"] == "rejected"
            assert as_json(approved)["approvals"]["approve_trades"]["note"] == "not now"
        finally:
            assert served.server.stdout() == ""  # logs go to stderr, never stdout
            served.server = Server(served.env)
            for c in (served.demo, served.mallory, served.anonymous):
                c.base_url = httpx.URL(served.server.url)


def test_two_worker_processes_share_the_store(served: Served) -> None:
    workers = Server(served.env, "--workers", "2")
    try:
        with client(workers, served.demo.headers["Authorization"].split()[1]) as demo:
            def start(i: int) -> httpx.Response:
                inputs = {"portfolio_id": "demo_quality", "pricing_pack_id": PACK,
                          "regime": ("DELEVERAGING", "LATE_EXPANSION", "REFLATION")[i % 3]}
                return demo.post("/v1/runs", json={"pattern": "regime_response", "inputs": inputs})

            with ThreadPoolExecutor(8) as pool:
                runs = list(pool.map(start, range(8)))
                reads = list(pool.map(lambda _: demo.get("/v1/portfolios"), range(32)))
        assert [r.status_code for r in runs] == [201] * 8, [r.text for r in runs if r.status_code != 201]
        assert {r.status_code for r in reads} == {200}
        listed = {r["run_id"] for r in as_json(served.demo.get("/v1/runs", params={"limit": 1000}))}
        assert {as_json(r)["run_id"] for r in runs} <= listed
    finally:
        workers.stop()
