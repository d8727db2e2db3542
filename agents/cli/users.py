"""User commands: ``users add|revoke|list``, the API keys that HTTP and MCP-over-HTTP callers use."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from agents.cli.common import command, group, print_json
from agents.cli.report import table

if TYPE_CHECKING:  # the store (SQLAlchemy) is imported when a command runs, not for --help
    from services.data.store import Store


def register(commands: Any) -> None:
    """Add users."""
    users = group(
        commands,
        "users",
        summary="add, revoke and list users and their API keys",
        description="Callers over HTTP (`optimizer serve`) and MCP over HTTP (`optimizer mcp "
        "--transport http`) authenticate with `Authorization: Bearer KEY`. A key maps to one user, "
        "who sees and changes only their own portfolios, proposals and runs. Keys are printed "
        "once and stored only as a SHA-256 hash.",
        examples=["optimizer users add alice", "optimizer users revoke alice", "optimizer users list"],
    )
    add = command(
        users,
        "add",
        summary="create a user and print their API key (once)",
        description="Create USER with a new API key and print the key on stdout: store it now, it "
        "cannot be shown again. A user whose key was revoked gets a new one; a user with an active "
        "key must be revoked first.",
        examples=["optimizer users add alice", "KEY=$(optimizer users add alice)"],
        func=_cmd_add,
        autoseed=False,
    )
    add.add_argument("user", metavar="USER", help="1-128 letters, digits or _ . @ -")
    revoke = command(
        users,
        "revoke",
        summary="revoke a user's API key",
        description="Revoke USER's API key at once: requests with it get 401. Their portfolios, "
        "proposals and runs stay; `optimizer users add USER` issues a new key.",
        examples=["optimizer users revoke alice"],
        func=_cmd_revoke,
        autoseed=False,
    )
    revoke.add_argument("user", metavar="USER", help="the user")
    command(
        users,
        "list",
        summary="list users and whether their key is active",
        description="List users with the time their key was created and, if so, revoked (UTC). "
        "Keys are never shown.",
        examples=["optimizer users list", "optimizer users list --json"],
        func=_cmd_list,
        autoseed=False,
        json_output=True,
    )


def _cmd_add(args: argparse.Namespace, store: Store) -> int:
    key = store.add_user(args.user)
    print(key)
    if sys.stderr.isatty():
        print(f"API key for {args.user} printed above; it is not stored and cannot be shown again.",
              file=sys.stderr)
    return 0


def _cmd_revoke(args: argparse.Namespace, store: Store) -> int:
    store.revoke_user(args.user)
    print(f"API key of {args.user} revoked")
    return 0


def _cmd_list(args: argparse.Namespace, store: Store) -> int:
    users = store.list_users()
    if args.json:
        print_json(users)
        return 0
    rows = [[u["user"], "active" if u["active"] else "revoked", u["created_at"], u["revoked_at"] or "-"]
            for u in users]
    print(table(["user", "status", "created", "revoked"], rows))
    return 0
