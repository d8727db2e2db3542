"""Ratings commands: ``ratings import FILE.csv`` and ``ratings list``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.cli.common import acting_user, command, group, print_json, user_option
from agents.cli.report import table

if TYPE_CHECKING:  # the store (SQLAlchemy) loads when a command runs, not for --help
    from services.data.store import Store

USER_HELP = "the user whose own ratings these are (omitted: the shared ratings every user sees)"


def register(commands: Any) -> None:
    """Add ratings import and ratings list."""
    ratings = group(
        commands,
        "ratings",
        summary="import and list quality ratings (0-10) that min_quality_score filters on",
        description="Quality ratings decide which names a policy with min_quality_score may hold when a "
        "request gives no ratings of its own. The demo ships illustrative scores (source 'demo'); "
        "import your own: with --user they are that user's, seen by them only and over the shared "
        "ones; without, they replace the shared ones for the symbols in the file.",
        examples=["optimizer ratings import my_ratings.csv --user ann",
                  "optimizer ratings list --user ann"],
    )
    imp = command(
        ratings,
        "import",
        summary="store ratings from a CSV file",
        description="Store the ratings in FILE.csv, header symbol,score (scores from 0 to 10). Every "
        "problem in the file is reported at once and nothing is written; symbols already rated are "
        "overwritten, others are kept. The file's name is recorded as where each rating came from, "
        "and a proposal that applies a stored demo rating to a pack other than the demo's says so.",
        examples=["optimizer ratings import my_ratings.csv --user ann",
                  "optimizer ratings import house_view.csv   # the shared ratings"],
        func=_cmd_import,
    )
    imp.add_argument("file", type=Path, metavar="FILE.csv", help="symbol,score rows")
    user_option(imp, USER_HELP)
    show = command(
        ratings,
        "list",
        summary="list the ratings a user sees, with where each came from",
        description="The shared ratings overlaid by the user's own (--user), by symbol, with their source.",
        examples=["optimizer ratings list", "optimizer ratings list --user ann --json"],
        func=_cmd_list,
        json_output=True,
    )
    user_option(show, USER_HELP)


def _cmd_import(args: argparse.Namespace, store: Store) -> int:
    from services.data.importers import read_ratings

    user = acting_user(args)
    ratings = read_ratings(args.file)
    store.put_ratings(ratings, source=f"file:{args.file.name}", owner=user)
    whose = f"{user}'s own" if user is not None else "shared"
    print(f"{len(ratings)} {whose} rating(s) stored from {args.file.name}: {', '.join(ratings)}")
    return 0


def _cmd_list(args: argparse.Namespace, store: Store) -> int:
    rated = store.rating_sources(acting_user(args))
    if args.json:
        print_json([{"symbol": s, "score": score, "source": source} for s, (score, source) in rated.items()])
        return 0
    print(table(["symbol", "score", "source"], [[s, f"{score:g}", source] for s, (score, source) in rated.items()],
                right={1}))
    return 0
