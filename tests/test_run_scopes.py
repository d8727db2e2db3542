"""Run ids are scoped per user (issue 11 §1): a run id bob chooses tells him nothing about alice's
runs, their checkpoints never share a LangGraph thread, and a store recorded before the scoping
is migrated — on SQLite and on PostgreSQL (``db_url``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serving import cli
from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, inspect, select, text

from agents.agent import OptimizerAgent
from agents.run_log import migrate, pattern_runs
from agents.wiring import open_store
from capabilities.base import RequestContext
from services.data.store import Store
from services.errors import ConflictError, InputError, NotFoundError

PACK = "PP_2022-12-28"
INLINE = {"positions": [{"symbol": "AAPL", "shares": 10}], "cash": "5000"}


@pytest.fixture
def store(db_url: str | None, home: Path) -> Iterator[Store]:
    """A seeded store (SQLite in ``home`` or a fresh PostgreSQL database)."""
    assert cli("seed").returncode == 0
    s = open_store()
    yield s
    s.close()


@pytest.fixture
def gated(tmp_path: Path) -> Path:
    """analyze_impact of buying JNJ → a gate (always: the trade is worth more than 1) → again."""
    impact = {"portfolio": INLINE, "pricing_pack_id": PACK,
              "proposed_trades": [{"symbol": "JNJ", "action": "BUY", "quantity": 3}]}
    document = {
        "id": "gated", "version": "1.0", "description": "Buy JNJ, ask, measure again.",
        "inputs": {"type": "object", "properties": {}, "additionalProperties": False},
        "steps": [{"id": "first", "capability": "optimizer.analyze_impact", "args": impact},
                  {"id": "second", "capability": "optimizer.analyze_impact", "args": impact}],
        "approvals": [{"id": "ok", "after": "first", "message": "go on?",
                       "when": {"ref": "steps.first.trades_applied.0.trade_value", "op": "gt", "value": 1}}],
        "outputs": {"costs": {"$ref": "steps.first.estimated_costs"}},
    }
    path = tmp_path / "gated.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def as_user(user: str | None) -> RequestContext:
    return RequestContext(user=user)


def threads(store: Store) -> set[str]:
    """The LangGraph threads holding checkpoints."""
    with store.engine.connect() as conn:
        return {r[0] for r in conn.execute(text("SELECT DISTINCT thread_id FROM checkpoints"))}


def error_of(call: Any) -> Exception:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the test inspects whichever error it is
        return exc
    raise AssertionError("no error")


def test_the_same_run_id_is_one_run_per_user(store: Store, gated: Path) -> None:
    agent = OptimizerAgent(store)
    alice = agent.run_pattern(gated, {}, as_user("alice"), run_id="same")
    bob = agent.run_pattern(gated, {}, as_user("bob"), run_id="same")  # not refused: his own id
    assert alice["status"] == bob["status"] == "waiting_for_approval"
    assert threads(store) == {"alice/same", "bob/same"}
    # Each user's own reuse is refused, in the same words whoever else uses the id.
    reuse = error_of(lambda: agent.run_pattern(gated, {}, as_user("bob"), run_id="same"))
    assert isinstance(reuse, ConflictError) and "alice" not in reuse.message
    # bob's decision moves his run only.
    assert agent.resume_run("same", approve=True, ctx=as_user("bob"))["status"] == "completed"
    assert agent.run_record("same", as_user("alice"))["status"] == "waiting_for_approval"
    assert agent.run_report("same", as_user("bob"))["approvals"]["ok"]["by"] == "bob"
    assert agent.cancel_run("same", as_user("alice"))["status"] == "cancelled"
    assert agent.run_record("same", as_user("bob"))["status"] == "completed"
    assert [r["user"] for r in agent.list_runs(as_user("alice"))] == ["alice"]
    assert "thread_id" not in agent.run_record("same", as_user("alice"))


def test_another_users_run_id_answers_like_a_free_one(store: Store, gated: Path) -> None:
    agent = OptimizerAgent(store)
    agent.run_pattern(gated, {}, as_user("alice"), run_id="hers")
    calls = {
        "show": lambda run_id: agent.run_record(run_id, as_user("carol")),
        "report": lambda run_id: agent.run_report(run_id, as_user("carol")),
        "approve": lambda run_id: agent.resume_run(run_id, approve=True, ctx=as_user("carol")),
        "cancel": lambda run_id: agent.cancel_run(run_id, as_user("carol")),
        "recover": lambda run_id: agent.recover_run(run_id, as_user("carol")),
    }
    for name, call in calls.items():
        taken, free = error_of(lambda c=call: c("hers")), error_of(lambda c=call: c("free"))
        assert isinstance(taken, NotFoundError), name
        assert taken.to_dict() == json.loads(json.dumps(free.to_dict()).replace("free", "hers")), name
    assert agent.recover_runs(as_user("carol")) == []
    assert agent.list_runs(as_user("carol")) == []


def test_the_operator_chooses_between_users_only_when_needed(store: Store, gated: Path) -> None:
    agent = OptimizerAgent(store)
    agent.run_pattern(gated, {}, as_user("alice"), run_id="one")
    assert agent.run_record("one")["user"] == "alice"  # the only run of that id: reached
    agent.run_pattern(gated, {}, as_user("bob"), run_id="one")
    ambiguous = error_of(lambda: agent.run_record("one"))
    assert isinstance(ambiguous, InputError)
    assert ambiguous.details["allowed"] == ["alice", "bob"] and "--user" in ambiguous.message
    agent.run_pattern(gated, {}, None, run_id="one")  # the operator's own run of that id wins
    assert agent.run_record("one")["user"] is None
    assert agent.resume_run("one", approve=False)["status"] == "rejected"
    assert {r["user"] for r in agent.list_runs()} == {None, "alice", "bob"}
    assert threads(store) == {"alice/one", "bob/one", "/one"}


def test_cli_users_reuse_a_run_id_and_never_learn_of_each_other(
    db_url: str | None, home: Path, gated: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "inputs.json"
    inputs.write_text("{}", encoding="utf-8")
    for user in ("alice", "bob"):
        done = cli("run", str(gated), "--input", str(inputs), "--run-id", "r1", "--user", user, "--json")
        assert done.returncode == 0, done.stderr
    again = cli("run", str(gated), "--input", str(inputs), "--run-id", "r1", "--user", "bob")
    assert again.returncode == 3 and "alice" not in again.stderr
    operator = cli("runs", "show", "r1")
    assert operator.returncode == 2 and "alice, bob" in operator.stderr
    shown = cli("runs", "show", "r1", "--user", "bob", "--json")
    assert json.loads(shown.stdout)["user"] == "bob"


def test_orders_of_a_run_id_two_users_booked_under(store: Store) -> None:
    from datetime import date
    from decimal import Decimal

    from services.data.models import Portfolio

    for user in ("alice", "bob"):
        portfolio = Portfolio(id=f"{user}_pf", cash=Decimal("100"), owner=user)
        store.put_portfolio(portfolio, user=user)
        store.book_rebalance(portfolio, None, {"status": "rejected", "run_id": "r1", "pricing_pack_id": PACK,
                                               "asof": date(2022, 12, 28), "details": {}})
    operator = cli("orders", "r1", "--csv", "-")
    assert operator.returncode == 2 and "several users (alice, bob)" in operator.stderr
    hers = cli("orders", "r1", "--csv", "-", "--user", "alice")
    assert hers.returncode == 3 and "its trades were rejected" in hers.stderr


# --- a store recorded before the scoping --------------------------------------------------------


def legacy_table() -> Table:
    """``pattern_runs`` as it was: keyed by run id alone, no scope, no thread id."""
    return Table(
        "pattern_runs", MetaData(),
        Column("run_id", String(128), primary_key=True),
        Column("pattern_id", String(64), nullable=False),
        Column("pattern_version", String(32), nullable=False),
        Column("pattern_document", Text, nullable=False),
        Column("user", String(128), nullable=True),
        Column("status", String(32), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        Column("inputs", Text, nullable=False),
        Column("report", Text, nullable=True),
        Column("error", Text, nullable=True),
        Column("decision", Text, nullable=True),
        Column("lease_owner", String(64), nullable=True),
        Column("lease_expires_at", DateTime(timezone=True), nullable=True),
    )


def downgrade(store: Store) -> None:
    """Turn the store back into its pre-scoping form: the old table, checkpoints under bare run ids."""
    old = legacy_table()
    with store.engine.begin() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(pattern_runs))]
        pattern_runs.drop(conn)
        old.create(conn)
        for row in rows:
            conn.execute(old.insert().values({c.name: row[c.name] for c in old.columns}))
            for table in inspect(conn).get_table_names():
                if table != "pattern_runs" and "thread_id" in {
                        c["name"] for c in inspect(conn).get_columns(table)}:
                    conn.execute(text(f"UPDATE {table} SET thread_id = :old WHERE thread_id = :new"),
                                 {"old": row["run_id"], "new": row["thread_id"]})


def test_an_older_store_is_migrated_and_its_runs_go_on(store: Store, gated: Path) -> None:
    agent = OptimizerAgent(store)
    agent.run_pattern(gated, {}, as_user("alice"), run_id="waiting")
    agent.run_pattern(gated, {}, None, run_id="done")
    agent.resume_run("done", approve=True)
    before = {r["run_id"]: r for r in agent.list_runs()}
    downgrade(store)
    assert threads(store) == {"waiting", "done"}
    assert "scope" not in {c["name"] for c in inspect(store.engine).get_columns("pattern_runs")}

    reopened = open_store()  # migrates, as every process does on start
    try:
        assert not migrate(reopened.engine)  # once only
        later = OptimizerAgent(reopened)
        assert {r["run_id"]: r for r in later.list_runs()} == before
        # alice's run continues from the checkpoint under its old thread id
        final = later.resume_run("waiting", approve=True, ctx=as_user("alice"))
        assert final["status"] == "completed" and set(final["steps"]) == {"first", "second"}
        assert later.run_record("done")["status"] == "completed"
        # and bob may now use her run id: it is his own
        later.run_pattern(gated, {}, as_user("bob"), run_id="waiting")
        assert threads(reopened) == {"waiting", "done", "bob/waiting"}
    finally:
        reopened.close()
