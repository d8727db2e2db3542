"""Preferences and the allocation mix over HTTP: a real ``optimizer serve`` on 127.0.0.1, called
with httpx, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from serving import Server, add_user, as_json, cli, client, seeded_environment

PACK = "PP_2022-12-28"
PID = "demo_diversified"
TARGETS = Path(__file__).resolve().parents[1] / "patterns/examples/targets_demo_diversified.csv"
PREFS = f"/v1/portfolios/{PID}/preferences"


@dataclass
class Served:
    env: dict[str, str]
    demo: httpx.Client  # owns the demo portfolios
    mallory: httpx.Client  # owns nothing
    anonymous: httpx.Client


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with ExitStack() as stack:
        env, _ = stack.enter_context(seeded_environment(tmp_path_factory.mktemp("prefs"), request.param))
        demo_key, mallory_key = add_user("demo", env), add_user("mallory", env)
        done = cli("targets", "set", PID, "--weights", str(TARGETS), env=env)
        assert done.returncode == 0, done.stderr
        server = Server(env)
        stack.callback(server.stop)
        yield Served(env, *[stack.enter_context(client(server, k)) for k in (demo_key, mallory_key, None)])


def test_get_put_and_history_for_the_owner_only(served: Served) -> None:
    first = as_json(served.demo.get(PREFS))
    assert first["version"] == 0 and first["preferences"] == first["defaults"]
    body = {"band_pct": 7, "schedule": "quarterly", "approval_threshold": 25000,
            "restricted_symbols": ["CVX"], "frozen_symbols": []}
    put = served.demo.put(PREFS, json=body)
    assert put.status_code == 200, put.text
    stored = as_json(put)
    assert stored["version"] == 1 and stored["changed_by"] == "demo"
    assert stored["preferences"] == {**body, "band_pct": 7.0, "approval_threshold": 25000.0, "relative_band_pct": None}
    assert as_json(served.demo.get(PREFS)) == stored
    assert as_json(served.demo.get(f"/v1/portfolios/{PID}"))["restrictions"] == {"restricted": ["CVX"], "frozen": []}
    # PUT replaces the whole set: what the body omits goes back to its default.
    again = as_json(served.demo.put(PREFS, json={"band_pct": 7}))
    assert again["version"] == 2 and again["preferences"] == {**again["defaults"], "band_pct": 7.0}
    history = as_json(served.demo.get(f"{PREFS}/history"))
    assert [(h["version"], h["preferences"]["schedule"]) for h in history] == [(1, "quarterly"), (2, "none")]

    missing = "/v1/portfolios/nope/preferences"
    for method, suffix in (("GET", ""), ("PUT", ""), ("GET", "/history")):
        theirs = served.mallory.request(method, PREFS + suffix, json=body)
        absent = served.mallory.request(method, missing + suffix, json=body)
        assert theirs.status_code == absent.status_code == 404, (method, suffix)
        assert as_json(theirs)["message"] == as_json(absent)["message"].replace("nope", PID)
        assert served.anonymous.request(method, PREFS + suffix, json=body).status_code == 401
    assert as_json(served.demo.get(PREFS))["version"] == 2


def test_a_bad_body_is_a_422_naming_field_value_and_allowed_and_writes_nothing(served: Served) -> None:
    before = as_json(served.demo.get(PREFS))
    response = served.demo.put(PREFS, json={"band_pct": 0, "schedule": "yearly", "colour": "red"})
    assert response.status_code == 422
    error = as_json(response)
    assert error["code"] == "invalid_input"
    fields = {e["field"]: e for e in error["details"]["errors"]}
    assert set(fields) == {"band_pct", "schedule", "colour"}
    assert fields["band_pct"]["value"] == 0 and "greater than 0 and at most 100" in fields["band_pct"]["allowed"]
    assert fields["schedule"]["value"] == "yearly" and "monthly, quarterly" in fields["schedule"]["allowed"]
    assert fields["colour"]["message"] == "unknown field"
    assert "band_pct 0: Input should be greater than 0" in error["message"]
    not_object = served.demo.put(PREFS, json=[1, 2])
    assert not_object.status_code == 422 and "must be a JSON object" in as_json(not_object)["message"]
    assert as_json(served.demo.get(PREFS)) == before


def test_drift_and_proposals_follow_the_stored_preferences_at_once(served: Served) -> None:
    def execute(capability: str, request: dict[str, object]) -> dict[str, object]:
        response = served.demo.post("/v1/execute", json={"capability": capability, "request": request})
        assert response.status_code == 200, response.text
        return as_json(response)

    drift_request = {"portfolio_id": PID, "pricing_pack_id": PACK}
    served.demo.put(PREFS, json={"band_pct": 5})
    # The example target leaves XOM 6.93 points under it: due at 5 points, not at 7.
    assert execute("optimizer.check_drift", drift_request)["rebalance_due"] is True
    served.demo.put(PREFS, json={"band_pct": 7, "approval_threshold": 123456})
    calm = execute("optimizer.check_drift", drift_request)
    assert (calm["rebalance_due"], calm["band_pct"], calm["approval_threshold"]) == (False, 7.0, 123456.0)
    assert execute("optimizer.check_drift", {**drift_request, "band_pct": 5})["rebalance_due"] is True

    proposal_request = {"portfolio_id": PID, "pricing_pack_id": PACK, "policy": {
        "method": "max_sharpe", "universe": "pack", "max_single_position_pct": 12.0, "max_turnover_pct": 30.0}}
    bought = [t["symbol"] for t in execute("optimizer.propose_trades", proposal_request)["trades"]
              if t["action"] == "BUY"]
    assert bought, "the demo proposal buys something"
    served.demo.put(PREFS, json={"restricted_symbols": [bought[0]]})
    # Not the cached proposal: the new restriction applies to the very next request.
    again = execute("optimizer.propose_trades", proposal_request)
    assert bought[0] not in {t["symbol"] for t in again["trades"] if t["action"] == "BUY"}
    assert again["_metadata"]["cached"] is False
    served.demo.put(PREFS, json={})


def test_the_mix_by_asset_class_and_sector_adds_up_and_matches_analyze_impact(served: Served) -> None:
    mix = as_json(served.demo.get(f"/v1/portfolios/{PID}/mix", params={"pricing_pack_id": PACK}))
    detail = as_json(served.demo.get(f"/v1/portfolios/{PID}"))
    assert mix["pricing_pack_id"] == PACK and mix["asof"] == "2022-12-28"
    for lines in (mix["asset_classes"], mix["sectors"]):
        assert [line["name"] for line in lines] == sorted(line["name"] for line in lines)
        assert round(sum(line["value"] for line in lines), 2) == mix["portfolio_value"]
        assert abs(sum(line["weight_pct"] for line in lines) - 100) < 0.001
        held = sorted(s for line in lines for s in line["symbols"])
        assert held == sorted(p["symbol"] for p in detail["positions"])
    cash = {line["name"]: line for line in mix["asset_classes"]}["cash"]
    assert cash["value"] == detail["cash"] and cash["symbols"] == []
    assert abs(cash["weight_pct"] - 100 * detail["cash"] / mix["portfolio_value"]) < 1e-4
    # analyze_impact computes its sector weights (of the whole value, no cash line) on its own path.
    impact = served.demo.post("/v1/execute", json={"capability": "optimizer.analyze_impact", "request": {
        "portfolio_id": PID, "pricing_pack_id": PACK, "proposed_trades": []}})
    sectors = as_json(impact)["before"]["sector_weights_pct"]
    assert sorted(sectors) == sorted(line["name"] for line in mix["sectors"] if line["name"] != "Cash")
    for line in mix["sectors"]:
        if line["name"] != "Cash":
            assert abs(line["weight_pct"] - sectors[line["name"]]) < 0.001, line["name"]
    # The latest pack by default; someone else's portfolio is not found; an unknown pack is named.
    assert as_json(served.demo.get(f"/v1/portfolios/{PID}/mix")) == mix
    assert served.mallory.get(f"/v1/portfolios/{PID}/mix").status_code == 404
    unknown = served.demo.get(f"/v1/portfolios/{PID}/mix", params={"pricing_pack_id": "PP_nope"})
    assert unknown.status_code == 404 and "PP_nope" in as_json(unknown)["message"]
