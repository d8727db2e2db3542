"""Run commands: ``run`` a pattern, ``resume`` a run waiting at a gate, ``runs list|show``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.cli.common import agent_for, command, group, print_json, read_json
from agents.cli.report import render_report, table

if TYPE_CHECKING:  # the store (SQLAlchemy) is imported when a command runs, not for --help
    from services.data.store import Store


def register(commands: Any) -> None:
    """Add run, resume and runs."""
    _add_run(commands)
    _add_resume(commands)
    _add_runs(commands)


def _add_run(commands: Any) -> None:
    parser = command(
        commands,
        "run",
        summary="run a pattern on a JSON input file",
        description="Validate the pattern and its inputs, then run its steps in order. The run stops "
        "at an approval gate whose condition holds and waits for `optimizer resume RUN_ID "
        "--approve|--reject`, even across restarts. Prints a readable report (--json: the final "
        "state with its run_id). Exit code 0 when the run completed, waits or was rejected, 3 when "
        "a step failed.",
        examples=[
            "optimizer run policy_rebalance --input patterns/examples/policy_rebalance.json",
            "optimizer run ./my_pattern.json --input inputs.json --json",
            "optimizer run hedge_review --input in.json --run-id review-1 --record tests/golden/patterns/review-1",
        ],
        func=_cmd_run,
        json_output=True,
    )
    parser.add_argument("pattern", metavar="PATTERN", help="a shipped pattern's id or a pattern file")
    parser.add_argument("--input", required=True, metavar="FILE", help="inputs JSON file, or - for stdin")
    parser.add_argument("--user", default=None, help="act as this user (stored portfolios are owner-only)")
    parser.add_argument("--run-id", default=None, help="the run's id (default: a random one)")
    parser.add_argument(
        "--record", type=Path, default=None, metavar="DIR",
        help="also write a golden case directory: case.json, calls/*.json, final_state.json "
        "(the run id defaults to DIR's name)",
    )


def _cmd_run(args: argparse.Namespace, store: Store) -> int:
    from agents.recording import case_files, write_case
    from capabilities.base import RequestContext

    agent = agent_for(args, store)
    inputs = read_json(args.input)
    run_id = args.run_id or (args.record.name if args.record else None)
    calls: list[dict[str, Any]] | None = [] if args.record else None
    report = agent.run_pattern(args.pattern, inputs, RequestContext(user=args.user), run_id=run_id, call_log=calls)
    if args.record:
        case = {"pattern": args.pattern, "inputs": inputs, "run_id": report["run_id"], "user": args.user}
        write_case(args.record, case_files(case, calls or [], report))
    return _print_report(args, report)


def _add_resume(commands: Any) -> None:
    parser = command(
        commands,
        "resume",
        summary="approve or reject a run waiting at an approval gate",
        description="Record the decision on the gate a run waits at and let the run go on: approved, "
        "it continues with its next step; rejected, its remaining steps are skipped and it ends as "
        "rejected. Works after a restart: the run's state is kept in the store's database. One "
        "decision per gate: if someone else decided first, this exits 3 naming their decision.",
        examples=[
            "optimizer resume 3f2a... --approve",
            "optimizer resume 3f2a... --reject --note 'too much turnover this quarter'",
        ],
        func=_cmd_resume,
        json_output=True,
    )
    parser.add_argument("run_id", metavar="RUN_ID", help="the run's id, as printed by `optimizer run`")
    decision = parser.add_mutually_exclusive_group(required=True)
    decision.add_argument("--approve", action="store_true", help="approve and continue")
    decision.add_argument("--reject", action="store_true", help="reject and stop")
    parser.add_argument("--note", default=None, metavar="TEXT", help="why, recorded with the decision")
    parser.add_argument("--user", default=None, help="act as this user (only the run's own user may resume it)")


def _cmd_resume(args: argparse.Namespace, store: Store) -> int:
    from capabilities.base import RequestContext

    report = agent_for(args, store).resume_run(
        args.run_id, approve=args.approve, note=args.note, ctx=RequestContext(user=args.user)
    )
    return _print_report(args, report)


def _print_report(args: argparse.Namespace, report: dict[str, Any]) -> int:

    if args.json:
        print_json(report)
    else:
        print(render_report(report))
    return 3 if report["status"] == "failed" else 0


def _add_runs(commands: Any) -> None:
    runs = group(
        commands,
        "runs",
        summary="list and show pattern runs",
        description="Pattern runs with their status: running, waiting_for_approval, completed, "
        "rejected, failed or cancelled.",
        examples=["optimizer runs list", "optimizer runs show RUN_ID", "optimizer runs recover",
                  "optimizer runs cancel RUN_ID"],
    )
    listing = command(
        runs,
        "list",
        summary="list the latest runs",
        description="List the latest runs, newest first: id, pattern, status, user and timestamps (UTC).",
        examples=["optimizer runs list", "optimizer runs list --limit 5 --json"],
        func=_cmd_runs_list,
        json_output=True,
    )
    listing.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
    listing.add_argument("--user", default=None, help="only this user's runs")
    show = command(
        runs,
        "show",
        summary="show one run's report",
        description="Show a run: its status and timestamps, then its latest report (or its error). "
        "--json prints the whole record, including the pattern it ran.",
        examples=["optimizer runs show RUN_ID", "optimizer runs show RUN_ID --json"],
        func=_cmd_runs_show,
        json_output=True,
    )
    show.add_argument("run_id", metavar="RUN_ID", help="the run's id")
    show.add_argument("--user", default=None, help="act as this user (only the run's own user may see it)")
    recover = command(
        runs,
        "recover",
        summary="continue runs whose process died while running",
        description="A running run holds a lease its process renews every few seconds; when the "
        "process dies (kill -9, a lost machine) the lease lapses after 30 s. recover continues each "
        "such run from its last checkpoint (applying a decision already recorded at its gate) or, "
        "with no checkpoint to continue from, marks it failed. Given RUN_ID, only that run (exit 3 "
        "if it is not orphaned). Prints each recovered run's id and new status.",
        examples=["optimizer runs recover", "optimizer runs recover RUN_ID --json"],
        func=_cmd_runs_recover,
        json_output=True,
    )
    recover.add_argument("run_id", metavar="RUN_ID", nargs="?", default=None, help="only this run")
    recover.add_argument("--user", default=None, help="act as this user (only their own runs)")
    cancel = command(
        runs,
        "cancel",
        summary="cancel a running or waiting run",
        description="Mark a run that waits at a gate or is running as cancelled: it can no longer be "
        "resumed, and a process still driving it records nothing more. Exit 3 if the run had "
        "already ended.",
        examples=["optimizer runs cancel RUN_ID", "optimizer runs cancel RUN_ID --user alice --json"],
        func=_cmd_runs_cancel,
        json_output=True,
    )
    cancel.add_argument("run_id", metavar="RUN_ID", help="the run's id")
    cancel.add_argument("--user", default=None, help="act as this user (only their own runs)")


def _cmd_runs_list(args: argparse.Namespace, store: Store) -> int:
    from capabilities.base import RequestContext

    items = agent_for(args, store).list_runs(RequestContext(user=args.user), limit=args.limit)
    if args.json:
        print_json(items)
        return 0
    rows = [[r["run_id"], f"{r['pattern_id']} v{r['pattern_version']}", r["status"], r["user"] or "-",
             r["created_at"], r["updated_at"]] for r in items]
    print(table(["run_id", "pattern", "status", "user", "created", "updated"], rows))
    return 0


def _cmd_runs_show(args: argparse.Namespace, store: Store) -> int:
    from capabilities.base import RequestContext

    record = agent_for(args, store).run_record(args.run_id, RequestContext(user=args.user))
    if args.json:
        print_json(record)
        return 0
    print(f"run {record['run_id']}: {record['status']} (created {record['created_at']}, "
          f"updated {record['updated_at']}, user {record['user'] or '-'})")
    if record["report"]:
        print()
        print(render_report(record["report"]))
    if record["error"]:
        print(f"error: {record['error']['message']}")
    return 0


def _cmd_runs_recover(args: argparse.Namespace, store: Store) -> int:
    from capabilities.base import RequestContext

    agent, ctx = agent_for(args, store), RequestContext(user=args.user)
    records = [agent.recover_run(args.run_id, ctx)] if args.run_id else agent.recover_runs(ctx)
    if args.json:
        print_json([{"run_id": r["run_id"], "status": r["status"]} for r in records])
        return 0
    if not records:
        print("no orphaned runs")
    for r in records:
        print(f"run {r['run_id']}: {r['status']}")
    return 0


def _cmd_runs_cancel(args: argparse.Namespace, store: Store) -> int:
    from capabilities.base import RequestContext

    record = agent_for(args, store).cancel_run(args.run_id, RequestContext(user=args.user))
    if args.json:
        print_json({"run_id": record["run_id"], "status": record["status"]})
    else:
        print(f"run {record['run_id']}: {record['status']}")
    return 0
