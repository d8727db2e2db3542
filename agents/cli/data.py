"""Data commands: ``seed``, ``packs``, ``portfolios`` and ``policies``.
"""

from __future__ import annotations

import argparse
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.cli.common import acting_user, amount, cell, command, group, print_json, user_option
from agents.cli.report import table
from services.errors import NotFoundError

if TYPE_CHECKING:  # the store (SQLAlchemy) is imported when a command runs, not for --help
    from services.data.store import Store


def register(commands: Any) -> None:
    """Add seed, packs, portfolios and policies."""
    _add_seed(commands)
    _add_packs(commands)
    _add_portfolios(commands)
    _add_policies(commands)


# --- seed ----------------------------------------------------------------------------------------


def _add_seed(commands: Any) -> None:
    command(
        commands,
        "seed",
        summary="load the demo pack, portfolios, ratings and policy templates",
        description="Add the shipped seed data the store does not have yet: the demo pricing pack, "
        "demo portfolios, quality ratings and policy templates. Existing objects are never "
        "replaced, so running it twice changes nothing.",
        examples=["optimizer seed", "optimizer --home /tmp/opt seed --json"],
        func=_cmd_seed,
        autoseed=False,
        json_output=True,
    )


def _cmd_seed(args: argparse.Namespace, store: Store) -> int:
    from services.data.seeds import seed

    summary = seed(store)
    if args.json:
        print_json(summary)
        return 0
    rows = [
        [
            kind,
            str(len(s["added"])),
            str(len(s["present"])),
            ", ".join(s["added"]) if kind != "ratings" else "",
        ]
        for kind, s in sorted(summary.items())
    ]
    print(table(["kind", "added", "already present", "added ids"], rows, right={1, 2}))
    return 0


# --- packs ---------------------------------------------------------------------------------------


def _add_packs(commands: Any) -> None:
    packs = group(
        commands,
        "packs",
        summary="import and list pricing packs",
        description="Pricing packs are immutable snapshots of daily closes plus their security master.",
        examples=[
            "optimizer packs list",
            "optimizer packs import --id PP_2024-06-28 --prices p.csv --securities s.csv",
        ],
    )
    imp = command(
        packs,
        "import",
        summary="import a pricing pack from CSV files",
        description="Import a pricing pack. PRICES is a long CSV with header date,symbol,close "
        "(dates YYYY-MM-DD, increasing within each symbol; .csv.gz accepted). SECURITIES has "
        "header symbol,name,sector,asset_class[,halted] (halted: true/false, yes/no, 1/0 or "
        "empty; a halted security is never traded). Every problem in both files is reported at once "
        "and nothing is written unless both are valid. Re-importing identical content is a "
        "no-op; different content under an existing id is refused. Packs are frozen, so what "
        "would poison one is refused: closes outside 1e-06..1e+09, dates before 1900 or in the "
        "future, a close more than 3 times (or under a third of) the previous one unless "
        "--allow-jumps, symbols over 64 characters or starting with = + - @ (spreadsheet "
        "formulas).",
        examples=[
            "optimizer packs import --id PP_2024-06-28 --prices prices.csv --securities securities.csv",
            "optimizer packs import --id PP_2024-06-28 --prices prices.csv.gz --securities securities.csv --allow-jumps",
        ],
        func=_cmd_packs_import,
    )
    imp.add_argument("--id", required=True, help="pack id: 1-64 letters, digits or _ . : -")
    imp.add_argument(
        "--prices", required=True, type=Path, metavar="PRICES.csv", help="long closes file"
    )
    imp.add_argument(
        "--securities", required=True, type=Path, metavar="SECURITIES.csv", help="security master"
    )
    imp.add_argument(
        "--allow-jumps",
        action="store_true",
        help="accept one-day moves beyond +200%% / -66.7%% (real, not a split or a typo)",
    )
    command(
        packs,
        "list",
        summary="list stored pricing packs",
        description="List stored pricing packs: id, as-of date, size and content hash.",
        examples=["optimizer packs list", "optimizer packs list --json"],
        func=_cmd_packs_list,
        json_output=True,
    )


def _cmd_packs_import(args: argparse.Namespace, store: Store) -> int:
    from services.data.importers import read_pack

    pack = read_pack(args.id, args.prices, args.securities, allow_jumps=args.allow_jumps)
    added = store.put_pack(pack)
    verb = "imported" if added else "already present (identical content), nothing written:"
    print(
        f"pack {pack.id} {verb} asof {pack.asof.isoformat()}, {len(pack.closes.index)} dates, "
        f"{len(pack.closes.columns)} symbols, hash {pack.content_hash}"
    )
    return 0


def _cmd_packs_list(args: argparse.Namespace, store: Store) -> int:
    packs = store.list_packs()
    if args.json:
        print_json(packs)
        return 0
    rows = [
        [p["id"], p["asof"], str(p["n_dates"]), str(p["n_symbols"]), p["content_hash"][:16]]
        for p in packs
    ]
    print(table(["id", "asof", "dates", "symbols", "hash"], rows, right={2, 3}))
    return 0


# --- portfolios ----------------------------------------------------------------------------------


def _add_portfolios(commands: Any) -> None:
    portfolios = group(
        commands,
        "portfolios",
        summary="import, list and show portfolios",
        description="Portfolios are cash plus tax lots of whole shares. Each belongs to an owner: "
        "with --user NAME a command sees and changes only NAME's portfolios (someone else's is "
        "reported like a missing one); without it, it acts as the local operator, who sees all.",
        examples=[
            "optimizer portfolios list",
            "optimizer portfolios show demo_diversified",
            "optimizer portfolios list --user alice",
        ],
    )
    imp = command(
        portfolios,
        "import",
        summary="import a portfolio from a positions CSV",
        description="Import a portfolio. POSITIONS has header symbol,shares[,cost_basis,acquired]: "
        "one row per lot, whole positive shares, several lots per symbol allowed. Symbols are "
        "checked against the pricing pack's security master (an index cannot be held). With "
        "--user NAME the portfolio is NAME's and --replace works only on NAME's own portfolios. "
        "The operator (no --user) may import for anyone with --owner; replacing a portfolio keeps "
        "its owner unless --owner names another, and such a reassignment is recorded (shown by "
        "`portfolios show --json`).",
        examples=[
            "optimizer portfolios import --id MINE --positions positions.csv --cash 2500.00 --user alice",
            "optimizer portfolios import --id MINE --positions positions.csv --pack PP_2022-12-28 --replace --user alice",
            "optimizer portfolios import --id client_42 --positions positions.csv --owner bob --replace",
        ],
        func=_cmd_portfolios_import,
    )
    imp.add_argument("--id", required=True, help="portfolio id: 1-64 letters, digits or _ . : -")
    imp.add_argument(
        "--positions", required=True, type=Path, metavar="POSITIONS.csv", help="lots file"
    )
    imp.add_argument(
        "--cash", type=amount, default=Decimal("0"), metavar="AMOUNT", help="cash held (default 0)"
    )
    imp.add_argument(
        "--owner",
        default=None,
        metavar="USER",
        help="owner (operator only; default: the --user, or the current owner when replacing, "
        "or none: the operator's own)",
    )
    user_option(imp, "act as this user: the portfolio is theirs")
    imp.add_argument("--description", default="", help="free text shown in listings")
    imp.add_argument(
        "--pack",
        default=None,
        metavar="PACK_ID",
        help="pack to validate symbols against (default: latest asof)",
    )
    imp.add_argument(
        "--replace", action="store_true", help="overwrite a portfolio with the same id"
    )
    listing = command(
        portfolios,
        "list",
        summary="list stored portfolios",
        description="List stored portfolios: id, owner, cash and number of lots and symbols. "
        "With --user NAME only NAME's portfolios.",
        examples=[
            "optimizer portfolios list",
            "optimizer portfolios list --json",
            "optimizer portfolios list --user alice",
        ],
        func=_cmd_portfolios_list,
        json_output=True,
    )
    user_option(listing, "list only this user's portfolios")
    show = command(
        portfolios,
        "show",
        summary="show one portfolio's positions and cash",
        description="Show a portfolio: shares and number of lots per symbol, and cash. --json adds "
        "every lot and the portfolio's reassignments (owner_changes).",
        examples=[
            "optimizer portfolios show demo_diversified",
            "optimizer portfolios show demo_diversified --json",
            "optimizer portfolios show client_42 --user alice",
        ],
        func=_cmd_portfolios_show,
        json_output=True,
    )
    show.add_argument("id", metavar="ID", help="portfolio id")
    user_option(show, "act as this user (only their own portfolios)")


def _cmd_portfolios_import(args: argparse.Namespace, store: Store) -> int:
    from services.data.models import check_user_name

    user = acting_user(args)
    owner = args.owner
    if owner is not None:
        check_user_name(owner, field="owner")
    if user is not None:
        owner = user if owner is None else owner  # put_portfolio refuses any other owner
    elif owner is None and args.replace:
        # The operator replacing a portfolio keeps its owner; only an explicit --owner reassigns.
        try:
            owner = store.portfolio_owner(args.id)
        except NotFoundError:
            owner = None
    pack_id = args.pack or store.latest_pack_id()
    pack = store.get_pack(pack_id)
    from services.data.importers import import_portfolio

    portfolio = import_portfolio(args.id, args.positions, args.cash, owner, pack)
    store.put_portfolio(portfolio, replace=args.replace, description=args.description, user=user)
    print(
        f"portfolio {portfolio.id} imported: {len(portfolio.lots)} lots, "
        f"{len(portfolio.positions())} symbols, cash {portfolio.cash} (symbols checked against pack {pack.id})"
    )
    return 0


def _cmd_portfolios_list(args: argparse.Namespace, store: Store) -> int:
    items = store.list_portfolios(user=acting_user(args))
    if args.json:
        print_json(items)
        return 0
    rows = [
        [
            p["id"],
            p["owner"] or "-",
            p["cash"],
            str(p["n_lots"]),
            str(p["n_symbols"]),
            textwrap.shorten(p["description"], width=60, placeholder=" ..."),
        ]
        for p in items
    ]
    print(table(["id", "owner", "cash", "lots", "symbols", "description"], rows, right={2, 3, 4}))
    return 0


def _cmd_portfolios_show(args: argparse.Namespace, store: Store) -> int:
    user = acting_user(args)
    portfolio = store.get_portfolio(args.id, user=user)
    description = next(
        p["description"] for p in store.list_portfolios(user=user) if p["id"] == portfolio.id
    )
    n_lots: dict[str, int] = {}
    for lot in portfolio.lots:
        n_lots[lot.symbol] = n_lots.get(lot.symbol, 0) + 1
    positions = [
        {"symbol": sym, "shares": shares, "lots": n_lots[sym]}
        for sym, shares in portfolio.positions().items()
    ]
    if args.json:
        print_json(
            {
                "id": portfolio.id,
                "owner": portfolio.owner,
                "description": description,
                "cash": str(portfolio.cash),
                "positions": positions,
                "owner_changes": store.portfolio_owner_changes(portfolio.id),
                "lots": [{"lot_no": i, **lot.to_json()} for i, lot in enumerate(portfolio.lots, start=1)],
            }
        )
        return 0
    print(f"portfolio {portfolio.id} (owner: {portfolio.owner or '-'})")
    if description:
        print(textwrap.fill(description, width=100))
    print()
    rows = [[p["symbol"], str(p["shares"]), str(p["lots"])] for p in positions]
    print(table(["symbol", "shares", "lots"], rows, right={1, 2}))
    print()
    print(f"cash: {portfolio.cash}")
    return 0


# --- policies ------------------------------------------------------------------------------------

_KEY_LIMITS = (
    "max_single_position_pct",
    "max_sector_pct",
    "max_turnover_pct",
    "max_tracking_error_pct",
    "min_quality_score",
)


def _add_policies(commands: Any) -> None:
    policies = group(
        commands,
        "policies",
        summary="list and show policy templates",
        description="Policy templates are named sets of optimizer settings; a request names one and "
        "may override any field. Fields a template leaves out come from the constraint defaults.",
        examples=["optimizer policies list", "optimizer policies show quality_focused"],
    )
    command(
        policies,
        "list",
        summary="list policy templates with their key limits",
        description="List policy templates: id, method version, method and key limits ('-' = not set "
        "by the template; the default applies).",
        examples=["optimizer policies list", "optimizer policies list --json"],
        func=_cmd_policies_list,
        json_output=True,
    )
    show = command(
        policies,
        "show",
        summary="show a template and the full policy it resolves to",
        description="Show a policy template: every policy field with its resolved value and whether "
        "it comes from the template or the defaults, plus warnings about suspicious values.",
        examples=[
            "optimizer policies show quality_focused",
            "optimizer policies show quality_focused --json",
        ],
        func=_cmd_policies_show,
        json_output=True,
    )
    show.add_argument("id", metavar="ID", help="policy template id")


def _cmd_policies_list(args: argparse.Namespace, store: Store) -> int:
    items = store.list_policies()
    if args.json:
        print_json(items)
        return 0
    headers = ["id", "method_version", "method", *_KEY_LIMITS]
    rows = [
        [
            p["id"],
            p["method_version"],
            cell(p["policy"].get("method")),
            *(cell(p["policy"].get(k)) for k in _KEY_LIMITS),
        ]
        for p in items
    ]
    print(table(headers, rows, right=set(range(3, len(headers)))))
    return 0


def _cmd_policies_show(args: argparse.Namespace, store: Store) -> int:
    overrides, method_version = store.get_policy_template(args.id)
    description = next(p["description"] for p in store.list_policies() if p["id"] == args.id)
    from services.data.policy import resolve_policy
    from services.data.seeds import load_constraint_defaults

    policy = resolve_policy(load_constraint_defaults(), overrides, None, policy_id=args.id)
    template = overrides.model_dump(mode="json", exclude_none=True)
    resolved = policy.model_dump(mode="json")
    if args.json:
        print_json(
            {
                "id": args.id,
                "method_version": method_version,
                "description": description,
                "template": template,
                "resolved": resolved,
                "warnings": policy.suspicious_values(),
            }
        )
        return 0
    print(f"policy template {args.id} (method version {method_version})")
    if description:
        print(textwrap.fill(description, width=100))
    print()
    rows = [
        [name, cell(value), "template" if name in template else "default"]
        for name, value in sorted(resolved.items())
        if name != "policy_id"
    ]
    print(table(["field", "value", "from"], rows))
    for warning in policy.suspicious_values():
        print(f"warning: {warning}")
    return 0
