"""Preferences commands: ``preferences show|set PORTFOLIO`` (services.lifecycle.preferences)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from agents.cli.common import acting_user, command, group, print_json, user_option
from agents.cli.report import table
from services.errors import InputError

if TYPE_CHECKING:  # the store (SQLAlchemy) loads when a command runs, not for --help
    from services.data.store import Store

# The word that puts a setting back to its default (the policy's threshold, no relative band).
DEFAULT = "default"
PRECEDENCE = (
    "Each setting is taken from the request if it gives one, else from these preferences, else (the "
    "approval threshold only) from the policy template, else from the built-in default: band 5 points, "
    "no relative band, no schedule, approval above $10,000."
)


def register(commands: Any) -> None:
    """Add ``preferences show`` and ``preferences set``."""
    preferences = group(
        commands,
        "preferences",
        summary="show and set a portfolio's rebalancing preferences (versioned)",
        description="A portfolio's rebalancing preferences: the drift band (percentage points, and "
        "optionally relative to each target weight), the calendar schedule, the approval threshold and "
        "the restricted and frozen symbols. `optimizer.check_drift`, `optimizer.book_trades`, "
        "`optimizer.propose_trades` and the drift_rebalance pattern use them when a request does not say "
        f"otherwise. {PRECEDENCE} Every change is a new version; earlier ones stay (`show --all`).",
        examples=[
            "optimizer preferences show demo_diversified",
            "optimizer preferences set demo_diversified --band-pct 3 --schedule monthly --approval-threshold 25000",
            "optimizer preferences show demo_diversified --all --json",
        ],
    )
    show = command(
        preferences,
        "show",
        summary="show a portfolio's preferences (or every version)",
        description="Show PORTFOLIO's current rebalancing preferences, each with where its value comes "
        "from; version 0 means nothing was ever set (all defaults). With --all, every version with who "
        "changed it and when.",
        examples=["optimizer preferences show demo_diversified",
                  "optimizer preferences show demo_diversified --all",
                  "optimizer preferences show demo_diversified --user alice --json"],
        func=_cmd_show,
        json_output=True,
    )
    show.add_argument("portfolio", metavar="PORTFOLIO", help="a stored portfolio id")
    user_option(show, "act as this user: only their own portfolios (omitted: the local operator)")
    show.add_argument("--all", action="store_true", help="every version, oldest first")

    set_cmd = command(
        preferences,
        "set",
        summary="change some of a portfolio's preferences (a new version)",
        description="Change the preferences given and keep the others; the result is stored as a new "
        f"version and printed. `{DEFAULT}` puts a setting back to its default. A bad value is refused with "
        "the field, the value and what is allowed, and nothing is written.",
        examples=[
            "optimizer preferences set demo_diversified --band-pct 3 --relative-band-pct 25",
            "optimizer preferences set demo_diversified --schedule quarterly --approval-threshold 50000",
            "optimizer preferences set demo_diversified --restricted XOM,CVX --frozen AMD",
            "optimizer preferences set demo_diversified --approval-threshold default --schedule none",
        ],
        func=_cmd_set,
        json_output=True,
    )
    set_cmd.add_argument("portfolio", metavar="PORTFOLIO", help="a stored portfolio id")
    user_option(set_cmd, "act as this user: only their own portfolios (omitted: the local operator)")
    set_cmd.add_argument("--band-pct", metavar="POINTS",
                         help=f"drift threshold in percentage points, >0 to 100 (`{DEFAULT}`: 5)")
    set_cmd.add_argument("--relative-band-pct", metavar="PCT",
                         help=f"relative band, %% of each target weight, >0 to 1000 (`{DEFAULT}`: none)")
    set_cmd.add_argument("--schedule", metavar="WHEN",
                         help="none, daily, weekly, monthly or quarterly (first trading date of each period)")
    set_cmd.add_argument("--approval-threshold", metavar="AMOUNT",
                         help=f"trades worth more need a person's approval (`{DEFAULT}`: the policy's, else 10000)")
    set_cmd.add_argument("--restricted", metavar="SYMBOLS", help="never bought, comma-separated ('' for none)")
    set_cmd.add_argument("--frozen", metavar="SYMBOLS", help="never traded, comma-separated ('' for none)")


def _cmd_show(args: argparse.Namespace, store: Store) -> int:
    from services.lifecycle import preferences

    user = acting_user(args)
    if args.all:
        versions = preferences.history(store, args.portfolio, user=user)
        if args.json:
            print_json(versions)
            return 0
        if not versions:
            print(f"no preferences set for {args.portfolio}: every setting is its default")
        for v in versions:
            print(f"version {v['version']}, set by {v['changed_by'] or 'operator'} at {v['changed_at']}")
            print(_table(v["preferences"], None))
        return 0
    found = preferences.read(store, args.portfolio, user=user)
    if args.json:
        print_json(found)
        return 0
    _print(found)
    return 0


def _cmd_set(args: argparse.Namespace, store: Store) -> int:
    from services.lifecycle import preferences

    changes: dict[str, Any] = {}
    for option, field, default in (("band_pct", "band_pct", 5.0), ("relative_band_pct", "relative_band_pct", None),
                                   ("schedule", "schedule", "none"),
                                   ("approval_threshold", "approval_threshold", None)):
        value = getattr(args, option)
        if value is not None:
            changes[field] = default if value.strip().lower() == DEFAULT else value.strip()
    for option in ("restricted", "frozen"):
        value = getattr(args, option)
        if value is not None:
            changes[f"{option}_symbols"] = [s.strip() for s in value.split(",") if s.strip()]
    if not changes:
        raise InputError(
            "preferences set: give at least one setting to change (--band-pct, --relative-band-pct, --schedule, "
            "--approval-threshold, --restricted, --frozen); `optimizer preferences show` prints the current ones",
            details={"field": "options", "allowed": ["band_pct", "relative_band_pct", "schedule",
                                                     "approval_threshold", "restricted", "frozen"]},
        )
    found = preferences.write(store, args.portfolio, changes, user=acting_user(args), merge=True)
    if args.json:
        print_json(found)
        return 0
    _print(found)
    return 0


def _print(found: dict[str, Any]) -> None:
    version = found["version"]
    print(f"preferences of {found['portfolio_id']}: "
          + (f"version {version}, set by {found['changed_by'] or 'operator'} at {found['changed_at']}"
             if version else "never set (every setting is its default)"))
    print(_table(found["preferences"], found["defaults"]))


def _table(prefs: dict[str, Any], defaults: dict[str, Any] | None) -> str:
    threshold = prefs["approval_threshold"]
    rows = [
        ["band_pct", f"{prefs['band_pct']:g} points"],
        ["relative_band_pct", "none" if prefs["relative_band_pct"] is None else f"{prefs['relative_band_pct']:g}%"],
        ["schedule", prefs["schedule"]],
        ["approval_threshold", "the policy's (else 10,000.00)" if threshold is None else f"{threshold:,.2f}"],
        ["restricted_symbols", ", ".join(prefs["restricted_symbols"]) or "none"],
        ["frozen_symbols", ", ".join(prefs["frozen_symbols"]) or "none"],
    ]
    if defaults is None:
        return table(["setting", "value"], rows)
    return table(["setting", "value", "source"],
                 [[*row, "default" if prefs[row[0]] == defaults[row[0]] else "portfolio"] for row in rows])
