"""``optimizer report PROPOSAL_ID --html FILE``: a recorded proposal as one self-contained HTML file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.cli.common import acting_user, command, user_option
from services.errors import InputError, NotFoundError

if TYPE_CHECKING:  # the store (SQLAlchemy) is imported when a command runs, not for --help
    from services.data.store import Store


def register(commands: Any) -> None:
    """Add report."""
    report = command(
        commands,
        "report",
        summary="write a recorded proposal as one HTML file (charts included)",
        description="Write the dashboard's view of a recorded optimizer.propose_trades result "
        "(figures before and after with a chart, trades, costs, turnover, tracking error, binding "
        "constraints, and for a taxable account the tax preview: estimated tax, lots sold, wash-sale "
        "blocks) as one self-contained HTML file: styles, Plotly and the data are inside it, "
        "so it opens offline, to send to a client or attach to a ticket. Every propose_trades call "
        "is recorded with an id (`optimizer history` shows booked ones; the HTTP API's "
        "/api/v1/optimization/ID/latest the last one).",
        examples=["optimizer report 12 --html proposal-12.html",
                  "optimizer report 12 --html out.html --user alice"],
        func=_cmd_report,
    )
    report.add_argument("proposal_id", metavar="PROPOSAL_ID", type=int, help="a recorded proposal's id")
    report.add_argument("--html", type=Path, required=True, metavar="FILE", help="the HTML file to write")
    user_option(report, "act as this user: only proposals for their own portfolios")


def _cmd_report(args: argparse.Namespace, store: Store) -> int:
    from agents.dashboard.report import proposal_html

    row = store.get_proposal(args.proposal_id)
    user = acting_user(args)
    readable = user is None  # an inline portfolio's proposal: the operator's only
    if row["portfolio_id"] is not None:
        try:
            store.check_portfolio_access(row["portfolio_id"], user=user)
            readable = True
        except NotFoundError:
            readable = False
    if not readable:  # someone else's proposal answers like a missing one
        raise NotFoundError(f"proposal {args.proposal_id} not found",
                            details={"proposal_id": args.proposal_id})
    if row["capability"] != "optimizer.propose_trades":
        raise InputError(
            f"proposal {args.proposal_id} is a {row['capability']} result; only "
            "optimizer.propose_trades results have a proposal view",
            details={"field": "proposal_id", "value": args.proposal_id,
                     "capability": row["capability"]},
        )
    page = proposal_html(json.loads(row["result_json"]),
                         title=f"Proposal {args.proposal_id} for {row['portfolio_id']}")
    args.html.write_text(page, encoding="utf-8")
    print(f"proposal {args.proposal_id} written to {args.html}")
    return 0
