"""Users and API keys: created once, stored as a hash, revocable, mapped to a request context."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from agents.agent import OptimizerAgent
from agents.cli import main
from agents.wiring import open_store
from capabilities.base import RequestContext
from services.data.store import Store, api_keys, hash_api_key
from services.errors import AuthenticationError, ConflictError, InputError, NotFoundError


@pytest.fixture
def store(db_url: str | None, home: Path) -> Iterator[Store]:
    """An empty store: every test here runs on SQLite and on PostgreSQL (see ``db_url``)."""
    s = open_store()
    yield s
    s.close()

def test_a_key_is_stored_only_as_its_hash(store: Store) -> None:
    key = store.add_user("alice")
    assert key.startswith("opt_") and len(key) > 40
    with store.engine.connect() as conn:
        stored = conn.execute(select(api_keys)).all()
    assert [(r.user, r.key_hash) for r in stored] == [("alice", hash_api_key(key))]
    assert key not in repr(stored)
    assert store.user_for_api_key(key) == "alice"
    assert store.user_for_api_key(key + "x") is None


def test_revoked_keys_stop_working_and_a_new_key_can_be_issued(store: Store) -> None:
    old = store.add_user("alice")
    with pytest.raises(ConflictError):
        store.add_user("alice")
    store.revoke_user("alice")
    assert store.user_for_api_key(old) is None
    with pytest.raises(NotFoundError):
        store.revoke_user("alice")
    new = store.add_user("alice")
    assert new != old and store.user_for_api_key(new) == "alice"
    assert [(u["user"], u["active"]) for u in store.list_users()] == [("alice", True)]


@pytest.mark.parametrize("name", ["", " ", "a b", "-lead", "x" * 129, "ali\nce"])
def test_blank_or_malformed_user_names_are_input_errors(store: Store, name: str) -> None:
    with pytest.raises(InputError):
        store.add_user(name)
    with pytest.raises(InputError):
        RequestContext(user=name)
    assert store.list_users() == []


def test_agent_authenticates_a_key_to_its_user(seeded_store: Store, tmp_path: Path) -> None:
    agent = OptimizerAgent(seeded_store, home=tmp_path)
    key = seeded_store.add_user("bob")
    assert agent.authenticate(key).user == "bob"
    messages = set()
    for bad in (None, "", "opt_nope", key.upper()):
        with pytest.raises(AuthenticationError) as err:
            agent.authenticate(bad)
        messages.add(err.value.message)
    assert len(messages) == 1  # a missing, unknown or wrong key read the same


def test_users_cli_prints_the_key_once(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["users", "add", "carol"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("opt_")
    assert main(["users", "list", "--json"]) == 0
    listing = capsys.readouterr().out
    assert "carol" in listing and key not in listing
    assert main(["users", "add", "carol"]) == 3
    assert main(["users", "revoke", "carol"]) == 0
    assert main(["users", "add", " "]) == 2
