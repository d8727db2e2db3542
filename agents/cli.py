"""The ``optimizer`` command line: seed the store; import, list and show packs, portfolios, policies.

Each command is a handler ``(args, store) -> int`` attached with ``set_defaults(func=...)``. To
add a command, write an ``_add_<name>(commands)`` function and call it in ``build_parser``.
Human output is aligned plain text on stdout; ``--json`` prints canonical JSON (sorted keys).
Errors go to stderr as one JSON object, with exit code 2 for input errors, 3 for domain errors
and 1 for anything unexpected (which is also logged with its traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import structlog

from agents.logging import configure_logging
from agents.wiring import open_store
from services.errors import InputError, NotFoundError, OptimizerError
from services.importers import import_portfolio, read_pack
from services.policy import resolve_policy
from services.seeds import load_constraint_defaults, seed
from services.store import Store

log = structlog.get_logger()

Handler = Callable[[argparse.Namespace, Store], int]


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit code (``--help`` returns 0, usage errors 2)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        configure_logging()
    except ValueError as exc:
        configure_logging(level="WARNING", fmt="json")
        return _fail(InputError(str(exc)))
    try:
        store = open_store(args.home)
        try:
            # A fresh home gets the demo data, so every command works out of the box.
            if args.autoseed and store.is_empty():
                log.info("seeding empty store", store=repr(store))
                seed(store)
            return int(args.func(args, store))
        finally:
            store.close()
    except OptimizerError as err:
        return _fail(err)
    except Exception as exc:
        log.exception("internal_error", command=args.command)
        return _fail(OptimizerError(f"unexpected {type(exc).__name__}: {exc}"))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command registered."""
    parser = argparse.ArgumentParser(
        prog="optimizer",
        description="Deterministic, whole-share portfolio optimization from immutable pricing packs. "
        "Data lives in a store under the home directory ($OPTIMIZER_HOME, default ~/.optimizer); "
        "a fresh home is seeded with demo data on first use.",
        epilog="examples:\n  optimizer seed\n  optimizer portfolios list\n  optimizer --home /tmp/opt packs list --json",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--home", type=Path, default=None, help="home directory (overrides $OPTIMIZER_HOME)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_seed(commands)
    _add_packs(commands)
    _add_portfolios(commands)
    _add_policies(commands)
    _add_call(commands)
    return parser


# --- parser helpers ------------------------------------------------------------------------------


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps one-paragraph descriptions; keeps multi-line text (the example epilogs) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _home_option() -> argparse.ArgumentParser:
    """A parent parser letting --home also follow the command (optimizer packs list --home X).

    SUPPRESS keeps a --home given before the command from being reset by the subcommand.
    """
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--home",
        type=Path,
        default=argparse.SUPPRESS,
        help="home directory (overrides $OPTIMIZER_HOME)",
    )
    return parent


def _command(
    commands: Any,
    name: str,
    *,
    summary: str,
    description: str,
    examples: Sequence[str],
    func: Handler,
    autoseed: bool = True,
    json_output: bool = False,
) -> argparse.ArgumentParser:
    """Register a runnable command with its help text, examples and handler."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog="example"
        + ("s" if len(examples) > 1 else "")
        + ":\n"
        + "\n".join(f"  {e}" for e in examples),
        formatter_class=_HelpFormatter,
        parents=[_home_option()],
    )
    parser.set_defaults(func=func, autoseed=autoseed)
    if json_output:
        parser.add_argument(
            "--json",
            action="store_true",
            help="print canonical JSON (sorted keys) instead of a table",
        )
    return parser


def _group(
    commands: Any, name: str, *, summary: str, description: str, examples: Sequence[str]
) -> Any:
    """Register a command that only holds subcommands; returns their subparsers."""
    parser = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + "\n".join(f"  {e}" for e in examples),
        formatter_class=_HelpFormatter,
    )
    return parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")


def _amount(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an amount; write e.g. 10000 or 2500.50"
        ) from None


# --- seed ----------------------------------------------------------------------------------------


def _add_seed(commands: Any) -> None:
    _command(
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
    summary = seed(store)
    if args.json:
        _print_json(summary)
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
    print(_table(["kind", "added", "already present", "added ids"], rows, right={1, 2}))
    return 0


# --- packs ---------------------------------------------------------------------------------------


def _add_packs(commands: Any) -> None:
    packs = _group(
        commands,
        "packs",
        summary="import and list pricing packs",
        description="Pricing packs are immutable snapshots of daily closes plus their security master.",
        examples=[
            "optimizer packs list",
            "optimizer packs import --id PP_2024-06-28 --prices p.csv --securities s.csv",
        ],
    )
    imp = _command(
        packs,
        "import",
        summary="import a pricing pack from CSV files",
        description="Import a pricing pack. PRICES is a long CSV with header date,symbol,close "
        "(dates YYYY-MM-DD, increasing within each symbol; .csv.gz accepted). SECURITIES has "
        "header symbol,name,sector,asset_class. Every problem in both files is reported at once "
        "and nothing is written unless both are valid. Re-importing identical content is a "
        "no-op; different content under an existing id is refused.",
        examples=[
            "optimizer packs import --id PP_2024-06-28 --prices prices.csv --securities securities.csv"
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
    _command(
        packs,
        "list",
        summary="list stored pricing packs",
        description="List stored pricing packs: id, as-of date, size and content hash.",
        examples=["optimizer packs list", "optimizer packs list --json"],
        func=_cmd_packs_list,
        json_output=True,
    )


def _cmd_packs_import(args: argparse.Namespace, store: Store) -> int:
    pack = read_pack(args.id, args.prices, args.securities)
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
        _print_json(packs)
        return 0
    rows = [
        [p["id"], p["asof"], str(p["n_dates"]), str(p["n_symbols"]), p["content_hash"][:16]]
        for p in packs
    ]
    print(_table(["id", "asof", "dates", "symbols", "hash"], rows, right={2, 3}))
    return 0


# --- portfolios ----------------------------------------------------------------------------------


def _add_portfolios(commands: Any) -> None:
    portfolios = _group(
        commands,
        "portfolios",
        summary="import, list and show portfolios",
        description="Portfolios are cash plus tax lots of whole shares.",
        examples=["optimizer portfolios list", "optimizer portfolios show demo_diversified"],
    )
    imp = _command(
        portfolios,
        "import",
        summary="import a portfolio from a positions CSV",
        description="Import a portfolio. POSITIONS has header symbol,shares[,cost_basis,acquired]: "
        "one row per lot, whole positive shares, several lots per symbol allowed. Symbols are "
        "checked against the pricing pack's security master (an index cannot be held).",
        examples=[
            "optimizer portfolios import --id MINE --positions positions.csv --cash 2500.00",
            "optimizer portfolios import --id MINE --positions positions.csv --pack PP_2022-12-28 --replace",
        ],
        func=_cmd_portfolios_import,
    )
    imp.add_argument("--id", required=True, help="portfolio id: 1-64 letters, digits or _ . : -")
    imp.add_argument(
        "--positions", required=True, type=Path, metavar="POSITIONS.csv", help="lots file"
    )
    imp.add_argument(
        "--cash", type=_amount, default=Decimal("0"), metavar="AMOUNT", help="cash held (default 0)"
    )
    imp.add_argument(
        "--owner", default=None, metavar="USER", help="owner; omit for a portfolio anyone may read"
    )
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
    _command(
        portfolios,
        "list",
        summary="list stored portfolios",
        description="List stored portfolios: id, owner, cash and number of lots and symbols.",
        examples=["optimizer portfolios list", "optimizer portfolios list --json"],
        func=_cmd_portfolios_list,
        json_output=True,
    )
    show = _command(
        portfolios,
        "show",
        summary="show one portfolio's positions and cash",
        description="Show a portfolio: shares and number of lots per symbol, and cash. --json adds every lot.",
        examples=[
            "optimizer portfolios show demo_diversified",
            "optimizer portfolios show demo_diversified --json",
        ],
        func=_cmd_portfolios_show,
        json_output=True,
    )
    show.add_argument("id", metavar="ID", help="portfolio id")


def _cmd_portfolios_import(args: argparse.Namespace, store: Store) -> int:
    pack_id = args.pack or _latest_pack_id(store)
    pack = store.get_pack(pack_id)
    portfolio = import_portfolio(args.id, args.positions, args.cash, args.owner, pack)
    store.put_portfolio(portfolio, replace=args.replace, description=args.description)
    print(
        f"portfolio {portfolio.id} imported: {len(portfolio.lots)} lots, "
        f"{len(portfolio.positions())} symbols, cash {portfolio.cash} (symbols checked against pack {pack.id})"
    )
    return 0


def _latest_pack_id(store: Store) -> str:
    packs = store.list_packs()
    if not packs:
        raise NotFoundError(
            "the store has no pricing pack; import one with `optimizer packs import` or run `optimizer seed`"
        )
    return max(packs, key=lambda p: (p["asof"], p["id"]))["id"]


def _cmd_portfolios_list(args: argparse.Namespace, store: Store) -> int:
    items = store.list_portfolios()
    if args.json:
        _print_json(items)
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
    print(_table(["id", "owner", "cash", "lots", "symbols", "description"], rows, right={2, 3, 4}))
    return 0


def _cmd_portfolios_show(args: argparse.Namespace, store: Store) -> int:
    portfolio = store.get_portfolio(args.id)
    description = next(p["description"] for p in store.list_portfolios() if p["id"] == portfolio.id)
    n_lots: dict[str, int] = {}
    for lot in portfolio.lots:
        n_lots[lot.symbol] = n_lots.get(lot.symbol, 0) + 1
    positions = [
        {"symbol": sym, "shares": shares, "lots": n_lots[sym]}
        for sym, shares in portfolio.positions().items()
    ]
    if args.json:
        _print_json(
            {
                "id": portfolio.id,
                "owner": portfolio.owner,
                "description": description,
                "cash": str(portfolio.cash),
                "positions": positions,
                "lots": [
                    {
                        "lot_no": i,
                        "symbol": lot.symbol,
                        "shares": lot.shares,
                        "cost_basis": None if lot.cost_basis is None else str(lot.cost_basis),
                        "acquired": None if lot.acquired is None else lot.acquired.isoformat(),
                    }
                    for i, lot in enumerate(portfolio.lots, start=1)
                ],
            }
        )
        return 0
    print(f"portfolio {portfolio.id} (owner: {portfolio.owner or '-'})")
    if description:
        print(textwrap.fill(description, width=100))
    print()
    rows = [[p["symbol"], str(p["shares"]), str(p["lots"])] for p in positions]
    print(_table(["symbol", "shares", "lots"], rows, right={1, 2}))
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
    policies = _group(
        commands,
        "policies",
        summary="list and show policy templates",
        description="Policy templates are named sets of optimizer settings; a request names one and "
        "may override any field. Fields a template leaves out come from the constraint defaults.",
        examples=["optimizer policies list", "optimizer policies show quality_focused"],
    )
    _command(
        policies,
        "list",
        summary="list policy templates with their key limits",
        description="List policy templates: id, method version, method and key limits ('-' = not set "
        "by the template; the default applies).",
        examples=["optimizer policies list", "optimizer policies list --json"],
        func=_cmd_policies_list,
        json_output=True,
    )
    show = _command(
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
        _print_json(items)
        return 0
    headers = ["id", "method_version", "method", *_KEY_LIMITS]
    rows = [
        [
            p["id"],
            p["method_version"],
            _text(p["policy"].get("method")),
            *(_text(p["policy"].get(k)) for k in _KEY_LIMITS),
        ]
        for p in items
    ]
    print(_table(headers, rows, right=set(range(3, len(headers)))))
    return 0


def _cmd_policies_show(args: argparse.Namespace, store: Store) -> int:
    overrides, method_version = store.get_policy_template(args.id)
    description = next(p["description"] for p in store.list_policies() if p["id"] == args.id)
    policy = resolve_policy(load_constraint_defaults(), overrides, None, policy_id=args.id)
    template = overrides.model_dump(mode="json", exclude_none=True)
    resolved = policy.model_dump(mode="json")
    if args.json:
        _print_json(
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
        [name, _text(value), "template" if name in template else "default"]
        for name, value in sorted(resolved.items())
        if name != "policy_id"
    ]
    print(_table(["field", "value", "from"], rows))
    for warning in policy.suspicious_values():
        print(f"warning: {warning}")
    return 0


# --- call ----------------------------------------------------------------------------------------


def _add_call(commands: Any) -> None:
    parser = _command(
        commands,
        "call",
        summary="run one capability on a JSON request and print the result",
        description="Validate the JSON request against the capability's input schema, run it, and "
        "print the result as canonical JSON (sorted keys) on stdout, with _metadata (source, asof, "
        "ttl, inputs hash, versions). The same request against the same pack prints the same bytes. "
        "Errors print a JSON object {code, message, details} on stderr: exit 2 for input errors "
        "(fix the request), 3 for domain errors (unknown pack or portfolio, infeasible policy).",
        examples=[
            "optimizer call optimizer.propose_trades --input request.json",
            "echo '{\"portfolio_id\": \"demo_diversified\", \"pricing_pack_id\": \"PP_2022-12-28\", "
            "\"policy_id\": \"quality_focused\"}' | optimizer call optimizer.propose_trades --input -",
            "optimizer call optimizer.propose_trades --schema   # print the input JSON Schema",
        ],
        func=_cmd_call,
    )
    parser.add_argument("capability", help="capability name, e.g. optimizer.propose_trades")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="FILE", help="request JSON file, or - for stdin")
    source.add_argument("--schema", action="store_true", help="print the input JSON Schema and exit")
    parser.add_argument("--user", default=None, help="act as this user (stored portfolios are owner-only)")


def _cmd_call(args: argparse.Namespace, store: Store) -> int:
    from agents.agent import OptimizerAgent
    from capabilities.base import RequestContext

    agent = OptimizerAgent(store)
    if args.schema:
        _print_json(agent.registry.get(args.capability).input_schema())
        return 0
    request = _read_json(args.input)
    result = agent.execute(args.capability, request, RequestContext(user=args.user))
    _print_json(result)
    return 0


def _read_json(source: str) -> Any:
    name = "stdin" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read request {name}: {exc.strerror}", details={"file": name}) from exc
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"request {name} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            details={"file": name, "line": exc.lineno, "column": exc.colno},
        ) from exc


def _reject_constant(name: str) -> Any:
    raise InputError(f"request contains {name}, which is not a number; use a finite value",
                     details={"value": name})


# --- output --------------------------------------------------------------------------------------


def _print_json(value: Any) -> None:
    print(json.dumps(value, sort_keys=True, indent=2))


def _text(value: Any) -> str:
    """A value for a table cell: '-' for unset, compact JSON for lists and dicts."""
    if value is None:
        return "-"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int] | None = None
) -> str:
    """Aligned plain-text table; columns in ``right`` (numbers) are right-aligned."""
    right = right or set()
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _fail(err: OptimizerError) -> int:
    print(json.dumps(err.to_dict(), sort_keys=True, default=str), file=sys.stderr)
    return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
