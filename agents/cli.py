"""The ``optimizer`` command line: data (seed, packs, portfolios, policies), capabilities
(``call``, ``capabilities``) and patterns (``patterns``, ``graph``, ``run``, ``resume``, ``runs``).

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
from typing import TYPE_CHECKING, Any

import structlog

from agents.logging import configure_logging
from agents.report import table
from agents.wiring import open_store
from services.errors import InputError, NotFoundError, OptimizerError
from services.importers import import_portfolio, read_pack
from services.policy import resolve_policy
from services.seeds import load_constraint_defaults, seed
from services.store import Store

if TYPE_CHECKING:
    from agents.agent import OptimizerAgent

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
        epilog="examples:\n  optimizer seed\n  optimizer portfolios list\n  optimizer --home /tmp/opt packs list --json\n"
        "  optimizer run policy_rebalance --input patterns/examples/policy_rebalance.json",
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
    _add_capabilities(commands)
    _add_patterns(commands)
    _add_graph(commands)
    _add_run(commands)
    _add_resume(commands)
    _add_runs(commands)
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
    print(table(["kind", "added", "already present", "added ids"], rows, right={1, 2}))
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
    print(table(["id", "asof", "dates", "symbols", "hash"], rows, right={2, 3}))
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
    print(table(["id", "owner", "cash", "lots", "symbols", "description"], rows, right={2, 3, 4}))
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
    print(table(headers, rows, right=set(range(3, len(headers)))))
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
    print(table(["field", "value", "from"], rows))
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
    from capabilities.base import RequestContext

    agent = _agent(args, store)
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


# --- capabilities, patterns and runs --------------------------------------------------------------


def _agent(args: argparse.Namespace, store: Store) -> OptimizerAgent:
    # Imported here so data commands start without loading the optimizer and LangGraph.
    from agents.agent import OptimizerAgent

    return OptimizerAgent(store, home=args.home)


def _add_capabilities(commands: Any) -> None:
    _command(
        commands,
        "capabilities",
        summary="list the capabilities with their descriptions, TTL and source",
        description="List the capabilities the agent registers. --json prints each with its "
        "description, input and output JSON Schemas, TTL and source template.",
        examples=["optimizer capabilities", "optimizer capabilities --json"],
        func=_cmd_capabilities,
        json_output=True,
    )


def _cmd_capabilities(args: argparse.Namespace, store: Store) -> int:
    described = _agent(args, store).describe()
    if args.json:
        _print_json(described)
        return 0
    rows = [[c["name"], str(c["ttl"]), c["source"], textwrap.shorten(c["description"], 70, placeholder=" ...")]
            for c in described]
    print(table(["name", "ttl", "source", "description"], rows, right={1}))
    return 0


def _add_patterns(commands: Any) -> None:
    _command(
        commands,
        "patterns",
        summary="list the shipped patterns",
        description="List the shipped patterns (each validated against the registered capabilities): "
        "id, version, steps in order with approval gates in brackets, and description.",
        examples=["optimizer patterns", "optimizer patterns --json"],
        func=_cmd_patterns,
        json_output=True,
    )


def _cmd_patterns(args: argparse.Namespace, store: Store) -> int:
    patterns = _agent(args, store).patterns()
    if args.json:
        _print_json([p.model_dump(mode="json") for p in patterns])
        return 0
    rows = []
    for p in patterns:
        chain = []
        for step in p.steps:
            chain.append(step.id)
            chain += [f"[{g.id}]" for g in p.approvals if g.after == step.id]
        rows.append([p.id, p.version, " > ".join(chain), textwrap.shorten(p.description, 60, placeholder=" ...")])
    print(table(["id", "version", "steps", "description"], rows))
    return 0


def _add_graph(commands: Any) -> None:
    parser = _command(
        commands,
        "graph",
        summary="print a pattern's LangGraph graph as a Mermaid flowchart",
        description="Validate a pattern and print the graph it compiles to as Mermaid: one node per "
        "step, one per approval gate, and the outputs node.",
        examples=["optimizer graph policy_rebalance", "optimizer graph ./my_pattern.json > graph.mmd"],
        func=_cmd_graph,
    )
    parser.add_argument("pattern", metavar="PATTERN", help="a shipped pattern's id or a pattern file")


def _cmd_graph(args: argparse.Namespace, store: Store) -> int:
    print(_agent(args, store).pattern_graph(args.pattern), end="")
    return 0


def _add_run(commands: Any) -> None:
    parser = _command(
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

    agent = _agent(args, store)
    inputs = _read_json(args.input)
    run_id = args.run_id or (args.record.name if args.record else None)
    calls: list[dict[str, Any]] | None = [] if args.record else None
    report = agent.run_pattern(args.pattern, inputs, RequestContext(user=args.user), run_id=run_id, call_log=calls)
    if args.record:
        case = {"pattern": args.pattern, "inputs": inputs, "run_id": report["run_id"], "user": args.user}
        write_case(args.record, case_files(case, calls or [], report))
    return _print_report(args, report)


def _add_resume(commands: Any) -> None:
    parser = _command(
        commands,
        "resume",
        summary="approve or reject a run waiting at an approval gate",
        description="Record the decision on the gate a run waits at and let the run go on: approved, "
        "it continues with its next step; rejected, its remaining steps are skipped and it ends as "
        "rejected. Works after a restart: the run's state is kept in <home>/runs.db.",
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

    report = _agent(args, store).resume_run(
        args.run_id, approve=args.approve, note=args.note, ctx=RequestContext(user=args.user)
    )
    return _print_report(args, report)


def _print_report(args: argparse.Namespace, report: dict[str, Any]) -> int:
    from agents.report import render_report

    if args.json:
        _print_json(report)
    else:
        print(render_report(report))
    return 3 if report["status"] == "failed" else 0


def _add_runs(commands: Any) -> None:
    runs = _group(
        commands,
        "runs",
        summary="list and show pattern runs",
        description="Pattern runs with their status: completed, waiting_for_approval, rejected or failed.",
        examples=["optimizer runs list", "optimizer runs show RUN_ID"],
    )
    listing = _command(
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
    show = _command(
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


def _cmd_runs_list(args: argparse.Namespace, store: Store) -> int:
    from capabilities.base import RequestContext

    items = _agent(args, store).list_runs(RequestContext(user=args.user), limit=args.limit)
    if args.json:
        _print_json(items)
        return 0
    rows = [[r["run_id"], f"{r['pattern_id']} v{r['pattern_version']}", r["status"], r["user"] or "-",
             r["created_at"], r["updated_at"]] for r in items]
    print(table(["run_id", "pattern", "status", "user", "created", "updated"], rows))
    return 0


def _cmd_runs_show(args: argparse.Namespace, store: Store) -> int:
    from agents.report import render_report
    from capabilities.base import RequestContext

    record = _agent(args, store).run_record(args.run_id, RequestContext(user=args.user))
    if args.json:
        _print_json(record)
        return 0
    print(f"run {record['run_id']}: {record['status']} (created {record['created_at']}, "
          f"updated {record['updated_at']}, user {record['user'] or '-'})")
    if record["report"]:
        print()
        print(render_report(record["report"]))
    if record["error"]:
        print(f"error: {record['error']['message']}")
    return 0


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


def _fail(err: OptimizerError) -> int:
    print(json.dumps(err.to_dict(), sort_keys=True, default=str), file=sys.stderr)
    return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
