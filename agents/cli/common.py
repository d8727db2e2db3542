"""What every command module shares: registering a command with its help and examples, reading
JSON requests, printing results and errors, and building the agent a command needs.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.output import pretty_json
from services.data.bounds import parse_json_text
from services.errors import InputError, OptimizerError

if TYPE_CHECKING:
    from agents.agent import OptimizerAgent
    from services.data.store import Store

Handler = Callable[[argparse.Namespace, "Store"], int]


class HelpFormatter(argparse.HelpFormatter):
    """Wraps one-paragraph descriptions; keeps multi-line text (the example epilogs) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def home_option() -> argparse.ArgumentParser:
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


def command(
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
        formatter_class=HelpFormatter,
        parents=[home_option()],
    )
    parser.set_defaults(func=func, autoseed=autoseed)
    if json_output:
        parser.add_argument(
            "--json",
            action="store_true",
            help="print canonical JSON (sorted keys) instead of a table",
        )
    return parser


def group(
    commands: Any, name: str, *, summary: str, description: str, examples: Sequence[str]
) -> Any:
    """Register a command that only holds subcommands; returns their subparsers."""
    parser = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + "\n".join(f"  {e}" for e in examples),
        formatter_class=HelpFormatter,
    )
    return parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")


def user_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """Add ``--user NAME``: who the command acts as (omitted: the local operator, who sees all)."""
    parser.add_argument("--user", default=None, metavar="NAME", help=help_text)


def acting_user(args: argparse.Namespace) -> str | None:
    """The ``--user`` a command acts as, validated (an empty or blank name is an input error)."""
    from services.data.models import check_user_name

    user = getattr(args, "user", None)
    return None if user is None else check_user_name(user, field="user")


def amount(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an amount; write e.g. 10000 or 2500.50"
        ) from None


def read_json(source: str) -> Any:
    """The JSON request in file ``source`` (``-``: stdin), within the size and depth limits."""
    name = "stdin" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read request {name}: {exc.strerror}", details={"file": name}) from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"cannot read request {name}: not UTF-8 text ({exc.reason})",
                         details={"file": name}) from exc
    return parse_json_text(text, source=name)


def pause_gc() -> None:
    """Stop automatic cyclic garbage collection while a one-command process imports its libraries.

    A demo ``optimizer call`` imports about 160,000 long-lived objects (modules, classes,
    functions) and no garbage worth collecting, yet Python ran a full collection over that heap
    each time it grew by a quarter: 0.3-0.5 s of the 1.4-1.7 s the command took. ``resume_gc``
    turns collection back on once the command's imports are in.
    """
    gc.disable()


def resume_gc() -> None:
    """Turn automatic collection back on after ``pause_gc``, leaving the imported heap out of it.

    ``gc.freeze`` moves every object alive now (what the imports made, kept until exit anyway)
    to the permanent generation, so later collections walk only what the work creates. Does
    nothing when collection was not paused: a test calling the CLI in-process keeps its own
    collector settings and heap.
    """
    if gc.isenabled():
        return
    gc.freeze()
    gc.enable()


def agent_for(args: argparse.Namespace, store: Store) -> OptimizerAgent:
    """The agent a command works with; automatic garbage collection resumes once it is built.

    Building it imports what every command that uses it needs (the capabilities, the estimators),
    so this is where a one-command process's import phase ends (``pause_gc``).
    """
    # Imported here so data commands start without loading the optimizer and LangGraph.
    from agents.agent import OptimizerAgent

    agent = OptimizerAgent(store, home=args.home)
    resume_gc()
    return agent


def print_json(value: Any) -> None:
    sys.stdout.write(pretty_json(value))


def cell(value: Any) -> str:
    """A value for a table cell: '-' for unset, compact JSON for lists and dicts."""
    if value is None:
        return "-"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def fail(err: OptimizerError) -> int:
    """Print ``err`` as one JSON object on stderr; return its exit code."""
    print(json.dumps(err.to_dict(), sort_keys=True, default=str), file=sys.stderr)
    return err.exit_code
