"""Lifecycle commands: ``targets set|show``, ``restrictions set|show``, ``history`` and ``orders``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.cli.common import acting_user, command, group, print_json, user_option
from agents.cli.report import table
from services.errors import InputError
from services.lifecycle.history import orders_csv, summary_rows
from services.lifecycle.targets import parse_weights_csv, weights_from_proposal

if TYPE_CHECKING:  # the store (SQLAlchemy) loads when a command runs, not for --help
    from services.data.store import Store


def register(commands: Any) -> None:
    """Add targets, restrictions, history and orders."""
    targets = group(
        commands,
        "targets",
        summary="set and show a portfolio's target weights (versioned)",
        description="A target is the weights a portfolio is rebalanced back to: `optimizer.check_drift` "
        "measures drift from it and the policy method `target` trades toward it. Setting a target "
        "adds a version; earlier versions stay.",
        examples=[
            "optimizer targets set demo_diversified --weights patterns/examples/targets_demo_diversified.csv",
            "optimizer targets set demo_diversified --from-proposal 12",
            "optimizer targets show demo_diversified --all",
        ],
    )
    set_cmd = command(
        targets,
        "set",
        summary="store a new target version",
        description="Store a new target for PORTFOLIO from a CSV file with header symbol,weight_pct "
        "(percent of portfolio value; what is left of 100 is the cash target), or from a recorded "
        "optimizer.propose_trades result's optimal weights (`optimizer history` and the proposals "
        "table give the ids). Every problem in the file is reported at once; nothing is written.",
        examples=[
            "optimizer targets set demo_diversified --weights patterns/examples/targets_demo_diversified.csv",
            "optimizer targets set demo_diversified --weights w.csv --policy quality_focused",
            "optimizer targets set demo_diversified --from-proposal 12",
        ],
        func=_cmd_set,
    )
    set_cmd.add_argument("portfolio", metavar="PORTFOLIO", help="a stored portfolio id")
    user_option(set_cmd, "act as this user: only their own portfolios (omitted: the local operator)")
    source = set_cmd.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", type=Path, metavar="FILE.csv", help="symbol,weight_pct rows")
    source.add_argument("--from-proposal", type=int, metavar="ID", help="a recorded proposal's id")
    set_cmd.add_argument("--policy", metavar="POLICY_ID", default=None,
                         help="the policy template the target belongs to")
    show = command(
        targets,
        "show",
        summary="show the current target (or every version)",
        description="Show PORTFOLIO's current target weights, or with --all every version.",
        examples=["optimizer targets show demo_diversified", "optimizer targets show demo_diversified --all --json"],
        func=_cmd_show,
        json_output=True,
    )
    show.add_argument("portfolio", metavar="PORTFOLIO", help="a stored portfolio id")
    user_option(show, "act as this user: only their own portfolios (omitted: the local operator)")
    show.add_argument("--all", action="store_true", help="every version, oldest first")

    restrictions = group(
        commands,
        "restrictions",
        summary="set and show a portfolio's restricted and frozen symbols",
        description="An account's trading restrictions, applied to every proposal for it on top of "
        "any the policy names: restricted symbols are never bought (a holding may be kept or sold), "
        "frozen symbols are never traded (pledged or employee-restricted shares).",
        examples=["optimizer restrictions set demo_diversified --restricted XOM --frozen AMD",
                  "optimizer restrictions show demo_diversified"],
    )
    set_r = command(
        restrictions,
        "set",
        summary="replace a portfolio's restrictions",
        description="Replace PORTFOLIO's restrictions with the symbols given (comma-separated); "
        "give neither option to clear them. They are part of the portfolio's rebalancing preferences: "
        "the change is recorded as a new preferences version (`optimizer preferences show PORTFOLIO --all`).",
        examples=["optimizer restrictions set demo_diversified --restricted XOM,CVX --frozen AMD",
                  "optimizer restrictions set demo_diversified"],
        func=_cmd_set_restrictions,
    )
    set_r.add_argument("portfolio", metavar="PORTFOLIO", help="a stored portfolio id")
    user_option(set_r, "act as this user: only their own portfolios (omitted: the local operator)")
    set_r.add_argument("--restricted", default="", metavar="SYMBOLS", help="never bought, e.g. XOM,CVX")
    set_r.add_argument("--frozen", default="", metavar="SYMBOLS", help="never traded, e.g. AMD")
    show_r = command(
        restrictions,
        "show",
        summary="show a portfolio's restrictions",
        description="Show PORTFOLIO's restricted and frozen symbols.",
        examples=["optimizer restrictions show demo_diversified --json"],
        func=_cmd_show_restrictions,
        json_output=True,
    )
    show_r.add_argument("portfolio", metavar="PORTFOLIO", help="a stored portfolio id")
    user_option(show_r, "act as this user: only their own portfolios (omitted: the local operator)")

    history = command(
        commands,
        "history",
        summary="list a portfolio's rebalances with before/after weights",
        description="Every rebalance of PORTFOLIO, booked or rejected, oldest first: the pack and "
        "date, the portfolio versions before and after, who approved and their note, the number and "
        "value of trades, costs, cash, and each symbol's weight before and after. With --version N, "
        "the portfolio as it was at version N instead (version 1 is before the first booking).",
        examples=["optimizer history demo_diversified", "optimizer history demo_diversified --json",
                  "optimizer history demo_diversified --version 1"],
        func=_cmd_history,
        json_output=True,
    )
    history.add_argument("portfolio", metavar="PORTFOLIO", help="a stored portfolio id")
    user_option(history, "act as this user: only their own portfolios (omitted: the local operator)")
    history.add_argument("--version", type=int, metavar="N", help="show the portfolio at version N")

    orders = command(
        commands,
        "orders",
        summary="write a run's approved orders as CSV for a broker or OMS",
        description="Write the orders booked by pattern run RUN_ID to FILE with columns "
        "symbol,side,quantity,limit_price,estimated_cost (limit price = the pack's close the "
        "trades were priced at). A rejected or unbooked run has no orders (exit code 3).",
        examples=["optimizer orders 7df66e70 --csv orders.csv", "optimizer orders 7df66e70 --csv -"],
        func=_cmd_orders,
    )
    orders.add_argument("run_id", metavar="RUN_ID", help="the run that booked the trades")
    orders.add_argument("--csv", required=True, metavar="FILE", help="where to write ('-': stdout)")
    user_option(orders, "act as this user: only orders booked into their own portfolios")


def _cmd_set(args: argparse.Namespace, store: Store) -> int:
    store.check_portfolio_access(args.portfolio, user=acting_user(args))
    if args.weights is not None:
        weights, policy_id, source = parse_weights_csv(args.weights), args.policy, f"file:{args.weights.name}"
    else:
        weights, policy_id = weights_from_proposal(store.get_proposal(args.from_proposal), args.portfolio)
        policy_id, source = args.policy or policy_id, f"proposal:{args.from_proposal}"
    version = store.put_target(args.portfolio, weights, policy_id=policy_id, source=source)
    print(f"target version {version} of {args.portfolio}: {len(weights)} symbols, "
          f"{sum(weights.values()):g}% invested, {100 - sum(weights.values()):g}% cash")
    return 0


def _cmd_show(args: argparse.Namespace, store: Store) -> int:
    store.check_portfolio_access(args.portfolio, user=acting_user(args))
    found = store.list_targets(args.portfolio) if args.all else [store.get_target(args.portfolio)]
    if args.all and not found:
        store.get_target(args.portfolio)  # raises the not-found error with its advice
    if args.json:
        print_json(found if args.all else found[0])
        return 0
    for target in found:
        print(f"target version {target['version']} of {target['portfolio_id']} (policy "
              f"{target['policy_id'] or '-'}, from {target['source']}, set {target['created_at']})")
        rows = [[s, f"{w:.4f}"] for s, w in target["weights_pct"].items()]
        rows.append(["CASH", f"{max(0.0, 100 - sum(target['weights_pct'].values())):.4f}"])
        print(table(["symbol", "weight_pct"], rows, right={1}))
    return 0


def _symbols(text: str) -> list[str]:
    return sorted({s.strip() for s in text.split(",") if s.strip()})


def _cmd_set_restrictions(args: argparse.Namespace, store: Store) -> int:
    from services.lifecycle import preferences

    # Restrictions are part of the preferences: the change is recorded as a preferences version.
    preferences.write(store, args.portfolio, {"restricted_symbols": _symbols(args.restricted),
                                              "frozen_symbols": _symbols(args.frozen)},
                      user=acting_user(args), merge=True)
    return _cmd_show_restrictions(argparse.Namespace(portfolio=args.portfolio, json=False, user=args.user), store)


def _cmd_show_restrictions(args: argparse.Namespace, store: Store) -> int:
    store.check_portfolio_access(args.portfolio, user=acting_user(args))
    found = store.get_restrictions(args.portfolio)
    if args.json:
        print_json(found)
        return 0
    print(f"{args.portfolio}: restricted (never bought): {', '.join(found['restricted']) or '-'}; "
          f"frozen (never traded): {', '.join(found['frozen']) or '-'}")
    return 0


def _cmd_history(args: argparse.Namespace, store: Store) -> int:
    store.check_portfolio_access(args.portfolio, user=acting_user(args))
    if args.version is not None:
        return _print_version(args, store)
    rows = summary_rows(store.list_rebalances(args.portfolio))
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print(f"no rebalances of {args.portfolio} yet")
        return 0
    for r in rows:
        print(f"rebalance {r['id']}: {r['status']} on {r['asof']} ({r['pricing_pack_id']}), version "
              f"{r['version_before']} -> {r['version_after'] or '-'}, by {r['approved_by'] or 'operator'}"
              + (f": {r['note']}" if r["note"] else ""))
        print(f"  {r['trade_count']} trades worth {r['total_trade_value']:,.2f}, costs "
              f"{r['estimated_costs']:,.2f}, cash {r['cash_before']:,.2f} -> {r['cash_after']:,.2f}"
              + (f", run {r['run_id']}" if r["run_id"] else ""))
        lines = [[w["symbol"], f"{w['before_pct']:.4f}", f"{w['after_pct']:.4f}",
                  f"{w['after_pct'] - w['before_pct']:+.4f}"] for w in r["weights"]]
        print("\n".join("  " + line for line in
                        table(["symbol", "before_pct", "after_pct", "change"], lines, right={1, 2, 3}).splitlines()))
    return 0


def _print_version(args: argparse.Namespace, store: Store) -> int:
    portfolio = store.get_portfolio_version(args.portfolio, args.version)
    lots = [lot.to_json() for lot in portfolio.lots]
    if args.json:
        print_json({"portfolio_id": portfolio.id, "version": args.version, "cash": str(portfolio.cash),
                    "positions": portfolio.positions(), "lots": lots})
        return 0
    print(f"{portfolio.id} version {args.version}: cash {portfolio.cash:,.2f}")
    print(table(["symbol", "shares", "cost_basis", "acquired"],
                [[lot["symbol"], str(lot["shares"]), lot["cost_basis"] or "-", lot["acquired"] or "-"]
                 for lot in lots], right={1, 2}))
    return 0


def _cmd_orders(args: argparse.Namespace, store: Store) -> int:
    user = acting_user(args)
    owner_of = {p["id"]: p["owner"] for p in store.list_portfolios(user=user)}
    # Another user's run reads like one that booked nothing: the error names no other portfolio.
    rebalances = [r for r in store.list_rebalances(run_id=args.run_id) if r["portfolio_id"] in owner_of]
    owners = sorted({str(owner_of[r["portfolio_id"]]) for r in rebalances})
    if user is None and len(owners) > 1:
        # Run ids are scoped per user: the operator must say whose run this is.
        raise InputError(
            f"run id '{args.run_id}' booked orders for several users ({', '.join(owners)}); "
            "act as one of them with --user NAME",
            details={"field": "run_id", "value": args.run_id, "allowed": owners},
        )
    text = orders_csv(rebalances, args.run_id)
    if args.csv == "-":
        print(text, end="")
        return 0
    try:
        Path(args.csv).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {args.csv}: {exc.strerror}", details={"file": args.csv}) from exc
    print(f"{text.count(chr(10)) - 1} orders written to {args.csv}")
    return 0
