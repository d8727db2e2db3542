"""A portfolio's rebalancing preferences (services.lifecycle.preferences): stored as versions,
validated with the field, value and what is allowed, scoped to the portfolio's owner, and used by
check_drift and book_trades where a request does not say otherwise (request > preferences >
policy template > built-in default)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import error_of, run
from hypothesis import given, settings
from hypothesis import strategies as st

from capabilities.base import RequestContext
from services.data.policy import Policy, PolicyOverrides
from services.errors import InputError, NotFoundError
from services.lifecycle import preferences
from services.lifecycle.preferences import RebalancingPreferences
from services.lifecycle.targets import parse_weights_csv

PACK = "PP_2022-12-28"
PID = "demo_diversified"
TARGETS = Path(__file__).resolve().parents[1] / "patterns/examples/targets_demo_diversified.csv"


@pytest.fixture
def targeted(agent):
    """The agent, with demo_diversified's example target: XOM is 6.93 points under it, AMD 6.11 over."""
    agent.store.put_target(PID, parse_weights_csv(TARGETS), policy_id=None, source="test")
    return agent


def drift(agent, **request):
    return agent.execute("optimizer.check_drift", {"portfolio_id": PID, "pricing_pack_id": PACK, **request})


def test_defaults_until_set_then_versions_that_keep_the_old_ones(seeded_store) -> None:
    found = preferences.read(seeded_store, PID, user=None)
    assert found["version"] == 0 and found["changed_by"] is None
    assert found["preferences"] == found["defaults"] == {
        "approval_threshold": None, "band_pct": 5.0, "frozen_symbols": [], "relative_band_pct": None,
        "restricted_symbols": [], "schedule": "none"}
    preferences.write(seeded_store, PID, {"band_pct": 3, "schedule": "monthly"}, user=None, merge=True)
    preferences.write(seeded_store, PID, {"approval_threshold": "25000.50", "restricted_symbols": [" XOM", "CVX"]},
                      user="demo", merge=True)
    now = preferences.read(seeded_store, PID, user="demo")
    assert now["version"] == 2 and now["changed_by"] == "demo"
    assert now["preferences"] == {
        "approval_threshold": 25000.5, "band_pct": 3.0, "frozen_symbols": [], "relative_band_pct": None,
        "restricted_symbols": ["CVX", "XOM"], "schedule": "monthly"}
    # The restrictions are the ones every proposal for the account uses.
    assert seeded_store.get_restrictions(PID) == {"restricted": ["CVX", "XOM"], "frozen": []}
    # Without merge the body is the whole set: what it omits goes back to its default.
    preferences.write(seeded_store, PID, {"band_pct": 4}, user=None)
    versions = preferences.history(seeded_store, PID, user=None)
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert [v["changed_by"] for v in versions] == [None, "demo", None]
    assert versions[0]["preferences"]["schedule"] == "monthly" and versions[0]["preferences"]["band_pct"] == 3.0
    assert versions[1]["preferences"]["approval_threshold"] == 25000.5
    assert versions[2]["preferences"] == {**found["defaults"], "band_pct": 4.0}
    assert seeded_store.get_restrictions(PID) == {"restricted": [], "frozen": []}


@pytest.mark.parametrize(("values", "field", "value", "allowed"), [
    ({"band_pct": 0}, "band_pct", 0, "greater than 0 and at most 100"),
    ({"band_pct": 100.5}, "band_pct", 100.5, "greater than 0 and at most 100"),
    ({"band_pct": float("nan")}, "band_pct", "nan", "greater than 0 and at most 100"),
    ({"relative_band_pct": -1}, "relative_band_pct", -1, "at most 1000"),
    ({"schedule": "yearly"}, "schedule", "yearly", "one of none, daily, weekly, monthly, quarterly"),
    ({"approval_threshold": -5}, "approval_threshold", -5, "an amount from 0 to"),
    ({"approval_threshold": "lots"}, "approval_threshold", "lots", "an amount from 0 to"),
    ({"restricted_symbols": ["XOM", "bad symbol"]}, "restricted_symbols", ["XOM", "bad symbol"], "ticker symbols"),
    ({"restricted_symbols": ["AMD"], "frozen_symbols": ["AMD"]}, "frozen_symbols", ["AMD"], "no symbol both"),
    ({"restricted_symbols": ["xom"]}, "restricted_symbols", ["xom"], "symbols of a stored pricing pack"),
    ({"band": 5}, "band", 5, "only the fields band_pct, relative_band_pct, schedule"),
])
def test_a_bad_value_names_field_value_and_what_is_allowed_and_writes_nothing(
    seeded_store, values, field, value, allowed
) -> None:
    with pytest.raises(InputError) as caught:
        preferences.write(seeded_store, PID, values, user=None, merge=True)
    [error] = [e for e in caught.value.details["errors"] if e["field"] == field]
    assert error["value"] == value and allowed in error["allowed"]
    assert caught.value.message.startswith(f"preferences: {field} ")
    assert preferences.read(seeded_store, PID, user=None)["version"] == 0
    assert seeded_store.get_restrictions(PID) == {"restricted": [], "frozen": []}


def test_only_the_owner_or_the_operator_reaches_them(seeded_store) -> None:
    assert seeded_store.portfolio_owner(PID) == "demo"
    preferences.write(seeded_store, PID, {"band_pct": 2}, user="demo", merge=True)
    for call in (lambda u, p: preferences.read(seeded_store, p, user=u),
                 lambda u, p: preferences.history(seeded_store, p, user=u),
                 lambda u, p: preferences.write(seeded_store, p, {"band_pct": 9}, user=u, merge=True)):
        with pytest.raises(NotFoundError) as theirs:
            call("mallory", PID)
        with pytest.raises(NotFoundError) as missing:
            call("mallory", "nope")
        assert theirs.value.message == missing.value.message.replace("nope", PID)
    assert preferences.read(seeded_store, PID, user=None)["preferences"]["band_pct"] == 2.0
    assert len(seeded_store.list_preferences(PID)) == 1


def test_check_drift_takes_band_and_schedule_from_the_request_else_the_portfolio_else_5(targeted) -> None:
    default = drift(targeted)
    assert default["band_pct"] == 5.0 and default["rebalance_due"] and default["schedule"] is None
    largest = default["largest_drift"]
    assert largest["symbol"] == "XOM" and 6.9 < abs(largest["drift_pct"]) < 7  # breaches 5, not 7
    preferences.write(targeted.store, PID, {"band_pct": 7}, user=None, merge=True)
    calm = drift(targeted)
    assert (calm["band_pct"], calm["rebalance_due"], calm["reasons"]) == (7.0, False, [])
    assert drift(targeted, band_pct=5)["rebalance_due"]  # the request wins
    # A relative band of 50% of each target weight: AMD (1.59% target, 7.70% held) is far outside it.
    preferences.write(targeted.store, PID, {"relative_band_pct": 50}, user=None, merge=True)
    relative = drift(targeted)
    assert relative["relative_band_pct"] == 50.0 and relative["rebalance_due"]
    assert {d["symbol"] for d in relative["drifts"] if d["breached"]} >= {"AMD"}
    preferences.write(targeted.store, PID, {"relative_band_pct": None, "schedule": "monthly"}, user=None, merge=True)
    scheduled = drift(targeted)
    assert scheduled["schedule"] == "monthly" and scheduled["reasons"] == [
        "monthly schedule: no rebalance has been booked yet"]
    off = drift(targeted, schedule="none")  # the request turns the portfolio's schedule off
    assert off["schedule"] is None and not off["rebalance_due"]


def test_approval_threshold_request_then_portfolio_then_template_then_10000(targeted) -> None:
    store = targeted.store
    store.put_policy_template("strict", "1", "a template with its own approval threshold",
                              {"approval_threshold": "20000"})
    assert drift(targeted)["approval_threshold"] == 10000.0
    assert drift(targeted, policy_id="strict")["approval_threshold"] == 20000.0
    preferences.write(store, PID, {"approval_threshold": 25000}, user=None, merge=True)
    assert drift(targeted)["approval_threshold"] == 25000.0
    assert drift(targeted, policy_id="strict")["approval_threshold"] == 25000.0
    assert drift(targeted, policy_id="strict", policy={"approval_threshold": 500})["approval_threshold"] == 500.0


def test_booking_without_approval_is_refused_above_the_portfolio_threshold(targeted) -> None:
    # 10 AAPL at the pack's close 125.674 = 1,256.74: under the default 10,000, over a 1,000 preference.
    request = {"portfolio_id": PID, "pricing_pack_id": PACK,
               "trades": [{"symbol": "AAPL", "action": "BUY", "quantity": 10}]}
    preferences.write(targeted.store, PID, {"approval_threshold": 1000}, user=None, merge=True)
    before = targeted.store.get_portfolio(PID)
    with pytest.raises(InputError) as caught:
        targeted.execute("optimizer.book_trades", request, RequestContext(), allow_writes=True)
    assert "trades worth 1256.74 exceed the approval threshold 1000" in caught.value.message
    assert targeted.store.get_portfolio(PID) == before
    preferences.write(targeted.store, PID, {"approval_threshold": None}, user=None, merge=True)
    booked = targeted.execute("optimizer.book_trades", request, RequestContext(), allow_writes=True)
    assert booked["status"] == "booked" and booked["total_trade_value"] == 1256.74


def test_the_cli_shows_sets_and_refuses_with_the_field(capsys, seeded_home: Path) -> None:
    code, out, _ = run(capsys, "preferences", "show", PID)
    assert code == 0 and "never set (every setting is its default)" in out
    assert "band_pct            5 points" in out
    code, out, _ = run(capsys, "preferences", "set", PID, "--band-pct", "3", "--schedule", "monthly",
                       "--approval-threshold", "25000", "--restricted", "XOM, CVX", "--user", "demo")
    assert code == 0 and "version 1, set by demo" in out
    assert "approval_threshold  25,000.00  portfolio" in out and "restricted_symbols  CVX, XOM   portfolio" in out
    code, _, err = run(capsys, "preferences", "set", PID)
    assert code == 2 and "give at least one setting to change" in error_of(err)["message"]
    code, _, err = run(capsys, "preferences", "set", PID, "--band-pct", "-1", "--schedule", "yearly")
    error = error_of(err)
    assert code == 2 and error["code"] == "invalid_input"
    assert [e["field"] for e in error["details"]["errors"]] == ["band_pct", "schedule"]
    assert "band_pct '-1': Input should be greater than 0" in error["message"]
    code, out, _ = run(capsys, "preferences", "set", PID, "--approval-threshold", "default", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["version"] == 2 and shown["preferences"]["approval_threshold"] is None
    assert shown["preferences"]["band_pct"] == 3.0  # kept: set changes only what it is given
    # `restrictions set` is a preferences change too: it is recorded as a version.
    assert run(capsys, "restrictions", "set", PID, "--frozen", "AMD")[0] == 0
    code, out, _ = run(capsys, "preferences", "show", PID, "--all", "--json")
    versions = json.loads(out)
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert versions[2]["preferences"]["frozen_symbols"] == ["AMD"] and versions[2]["preferences"]["schedule"] == "monthly"
    code, out, err = run(capsys, "preferences", "show", PID, "--user", "mallory")
    assert (code, out) == (3, "") and error_of(err)["code"] == "not_found"


bands = st.one_of(st.none(), st.floats(min_value=0.01, max_value=100))
schedules = st.one_of(st.none(), st.sampled_from(["none", "daily", "weekly", "monthly", "quarterly"]))


@settings(max_examples=60, deadline=None)
@given(stored_band=st.floats(min_value=0.01, max_value=100), stored_rel=bands,
       stored_schedule=st.sampled_from(["none", "daily", "weekly", "monthly", "quarterly"]),
       band=bands, rel=bands, schedule=schedules,
       stored_threshold=st.one_of(st.none(), st.decimals(min_value=0, max_value=10**9, places=2)),
       requested=st.one_of(st.none(), st.decimals(min_value=0, max_value=10**9, places=2)),
       template=st.decimals(min_value=0, max_value=10**9, places=2))
def test_the_first_layer_that_sets_a_value_wins(stored_band, stored_rel, stored_schedule, band, rel, schedule,
                                                stored_threshold, requested, template) -> None:
    prefs = RebalancingPreferences(band_pct=stored_band, relative_band_pct=stored_rel, schedule=stored_schedule,
                                   approval_threshold=stored_threshold)
    got = preferences.drift_settings(prefs, band_pct=band, relative_band_pct=rel, schedule=schedule)
    chosen = schedule if schedule is not None else stored_schedule
    assert got == (band if band is not None else stored_band, rel if rel is not None else stored_rel,
                   None if chosen == "none" else chosen)
    overrides = None if requested is None else PolicyOverrides(approval_threshold=requested)
    # resolve_policy has already put the request's value over the template's.
    policy = Policy(approval_threshold=requested if requested is not None else template)
    expected = requested if requested is not None else stored_threshold if stored_threshold is not None else template
    assert preferences.with_approval_threshold(policy, prefs, overrides).approval_threshold == Decimal(expected)


async def _mcp_call(agent, user: str, arguments: dict[str, object]):
    from mcp.shared.memory import create_connected_server_and_client_session

    from agents.mcp.server import build_server

    server = build_server(agent, lambda: RequestContext(user=user), "capability")
    async with create_connected_server_and_client_session(server) as client:
        return await client.call_tool("optimizer.show_preferences", arguments)


def test_mcp_shows_them_read_only_to_the_owner(agent) -> None:
    import anyio

    preferences.write(agent.store, PID, {"schedule": "weekly"}, user="demo", merge=True)
    mine = anyio.run(_mcp_call, agent, "demo", {"portfolio_id": PID})
    assert not mine.isError and mine.structuredContent["version"] == 1
    assert mine.structuredContent["preferences"]["schedule"] == "weekly"
    theirs = anyio.run(_mcp_call, agent, "mallory", {"portfolio_id": PID})
    assert theirs.isError and "not found" in theirs.content[0].text
