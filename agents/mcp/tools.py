"""The MCP server's tools: the capabilities, discovery and pattern runs, each over the agent's public methods.

A ``ToolSpec`` is transport-free: name, description, input and output JSON Schemas (generated
from pydantic models or the capability declarations, never written by hand), whether it only
reads, and ``call(arguments, ctx) -> dict``. The server in ``agents.mcp.server`` turns them into
MCP tools; every name, and every tool named in a description, comes from ``agents.tools.tool_name``
in the server's naming (``capability`` by default: ``optimizer.propose_trades``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.agent import OptimizerAgent
from agents.tool_names import ToolNaming, tool_name
from agents.tools import tool_input_schema, tool_request
from capabilities.base import Capability, RequestContext
from capabilities.views import Detail
from patterns.loader import shipped_patterns
from services.errors import InputError

Call = Callable[[dict[str, Any], RequestContext], dict[str, Any]]


@dataclass(frozen=True)
class ToolSpec:
    """One tool, independent of the transport that offers it."""

    name: str
    title: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    read_only: bool
    call: Call
    lists_ids: bool = False
    """True for a tool that lists valid ids (packs, portfolios, ...): error hints point to it."""


# --- argument and result models (their JSON Schemas are what the tools declare) -------------------


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoArgs(_Args):
    """No arguments."""


class PolicyArgs(_Args):
    policy_id: str = Field(min_length=1, description="A policy template id, e.g. quality_focused.")


class RunPatternArgs(_Args):
    # The description, naming the list_patterns tool as the server names it, is set in _run_tools.
    pattern: str = Field(description="The pattern's id.")
    inputs: dict[str, Any] = Field(description="The run's inputs, as the pattern's inputs schema says.")
    run_id: str | None = Field(None, description="An id for the run (default: a random one); reusing one is refused.")
    detail: Detail = Field("summary", description="'summary': step statuses, pending approval and output "
                           "names; 'full': every step's request and output.")


class RunArgs(_Args):
    run_id: str = Field(min_length=1, description="The run's id, as run_pattern returned it.")
    detail: Detail = Field("summary", description="'summary' or 'full' (every step's request and output).")


class DecisionArgs(_Args):
    run_id: str = Field(min_length=1, description="The id of a run waiting for approval.")
    note: str | None = Field(None, max_length=2000, description="Why; recorded with the decision.")
    detail: Detail = Field("summary", description="'summary' or 'full' (every step's request and output).")


class PortfolioArgs(_Args):
    portfolio_id: str = Field(min_length=1, description="A stored portfolio id, as list_portfolios gives it.")


class PreferenceValues(BaseModel):
    band_pct: float = Field(description="Drift threshold in percentage points.")
    relative_band_pct: float | None = Field(description="Relative band, % of each target weight; null: none.")
    schedule: str = Field(description="none, daily, weekly, monthly or quarterly.")
    approval_threshold: float | None = Field(
        description="Trades worth more need a person's approval; null: the policy template's, else 10000."
    )
    restricted_symbols: list[str] = Field(description="Never bought.")
    frozen_symbols: list[str] = Field(description="Never traded.")


class PreferencesInfo(BaseModel):
    portfolio_id: str
    version: int = Field(description="0 while never set (every value is its default).")
    changed_by: str | None
    changed_at: str | None
    preferences: PreferenceValues
    defaults: PreferenceValues


class ListRunsArgs(_Args):
    limit: int = Field(20, ge=1, le=200, description="How many of the latest runs.")


class PackInfo(BaseModel):
    id: str
    asof: str = Field(description="The pack's date: every result priced from it is as of this date.")
    n_symbols: int
    n_dates: int


class Packs(BaseModel):
    packs: list[PackInfo]


class PortfolioInfo(BaseModel):
    id: str
    owner: str | None
    description: str
    cash: str = Field(description="Cash in the portfolio currency, as an exact decimal string.")
    n_symbols: int


class Portfolios(BaseModel):
    portfolios: list[PortfolioInfo]


class PolicyInfo(BaseModel):
    id: str
    method_version: str
    description: str
    policy: dict[str, Any] = Field(description="The template's policy fields (every *_pct is a percentage).")


class Policies(BaseModel):
    policies: list[PolicyInfo]


class ScenarioInfo(BaseModel):
    id: str
    name: str
    narrative: str


class Scenarios(BaseModel):
    scenarios: list[ScenarioInfo]


class RegimeInfo(BaseModel):
    regime: str
    narrative: str
    steps: list[str] = Field(description="The playbook's steps, in order.")


class Regimes(BaseModel):
    regimes: list[RegimeInfo]


class PatternInfo(BaseModel):
    id: str
    version: str
    description: str
    inputs: dict[str, Any] = Field(description="The JSON Schema of the pattern's inputs.")
    steps: list[str]


class Patterns(BaseModel):
    patterns: list[PatternInfo]


class RunView(BaseModel):
    """A run's report: its status, steps, approvals and the gate it waits at, if any."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    status: str = Field(description="running, waiting_for_approval, completed, failed, rejected or halted.")
    pattern: dict[str, Any] | None = None
    pending_approval: dict[str, Any] | None = Field(None, description="The gate waiting, with what to show.")


class RunInfo(BaseModel):
    run_id: str
    pattern_id: str
    pattern_version: str
    user: str | None
    status: str
    created_at: str
    updated_at: str


class Runs(BaseModel):
    runs: list[RunInfo]


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def _parse(model: type[_Args], arguments: dict[str, Any]) -> Any:
    """Tool arguments as ``model``; errors are input errors naming the field (like a capability's)."""
    try:
        return model.model_validate(arguments)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "(root)", "message": e["msg"]} for e in exc.errors()
        ]
        raise InputError(
            "invalid arguments: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors),
            details={"errors": errors},
        ) from exc


# --- the tools --------------------------------------------------------------------------------------


def build_tools(agent: OptimizerAgent, naming: ToolNaming = "capability") -> list[ToolSpec]:
    """Every tool, capabilities first, each name made by ``tool_name`` in ``naming``."""
    def name(verb: str) -> str:
        return tool_name(f"optimizer.{verb}", naming=naming)

    return [
        *(_capability_tool(agent, c, naming) for c in agent.tool_capabilities()),
        *_discovery_tools(agent, name),
        *_run_tools(agent, name),
    ]


def _capability_tool(agent: OptimizerAgent, capability: Capability, naming: ToolNaming) -> ToolSpec:
    def call(arguments: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        return agent.execute(capability.name, tool_request(capability, arguments), ctx)

    return ToolSpec(
        name=tool_name(capability.name, naming=naming),
        title=capability.name,
        description=capability.description + " Returns a summary unless detail='full'.",
        input_schema=tool_input_schema(capability),
        output_schema=capability.view_output_schema(),
        # Recording the result in the proposal history is bookkeeping, not a change to portfolios.
        read_only=True,
        call=call,
    )


def _discovery_tools(agent: OptimizerAgent, name: Callable[[str], str]) -> list[ToolSpec]:
    def read(
        verb: str, title: str, description: str, args: type[_Args], out: type[BaseModel],
        fetch: Callable[[Any, RequestContext], dict[str, Any]],
    ) -> ToolSpec:
        return ToolSpec(
            name=name(verb), title=title, description=description, input_schema=_schema(args),
            output_schema=_schema(out), read_only=True,
            call=lambda arguments, ctx: out.model_validate(fetch(_parse(args, arguments), ctx)).model_dump(mode="json"),
            lists_ids=verb.startswith("list_"),
        )

    return [
        read("list_packs", "Pricing packs", "List the pricing packs (id, asof date, symbols): every capability "
             "prices from one, named by pricing_pack_id.", NoArgs, Packs,
             lambda a, ctx: {"packs": agent.list_packs()}),
        read("list_portfolios", "Portfolios", "List the stored portfolios you may use as portfolio_id (yours and "
             "shared ones).", NoArgs, Portfolios, lambda a, ctx: {"portfolios": agent.list_portfolios(ctx)}),
        read("show_preferences", "Rebalancing preferences", "Show a portfolio's rebalancing preferences: drift "
             "band, schedule, approval threshold, restricted and frozen symbols. check_drift and booking use them "
             "when a request does not set its own.", PortfolioArgs, PreferencesInfo,
             lambda a, ctx: agent.portfolio_preferences(a.portfolio_id, ctx)),
        read("list_policies", "Policy templates", f"List the policy templates (policy_id of "
             f"{name('propose_trades')}) with their limits.", NoArgs, Policies,
             lambda a, ctx: {"policies": agent.list_policies()}),
        read("show_policy", "Policy template", "Show one policy template's fields.", PolicyArgs, PolicyInfo,
             lambda a, ctx: agent.policy(a.policy_id)),
        read("list_scenarios", "Stress scenarios", f"List the stress scenarios (scenario_id of "
             f"{name('suggest_hedges')}).", NoArgs, Scenarios, lambda a, ctx: {"scenarios": agent.scenarios()}),
        read("list_regimes", "Macro regimes", f"List the macro regimes (regime of "
             f"{name('suggest_deleveraging_hedges')}) and their playbook steps.", NoArgs, Regimes,
             lambda a, ctx: {"regimes": agent.regimes()}),
        read("list_patterns", "Patterns", f"List the patterns {name('run_pattern')} runs, with their inputs "
             "schemas.", NoArgs, Patterns,
             lambda a, ctx: {"patterns": [
                 {"id": p.id, "version": p.version, "description": p.description, "inputs": p.inputs,
                  "steps": [s.id for s in p.steps]} for p in agent.patterns()]}),
        read("list_runs", "Runs", "List your latest pattern runs and their status.", ListRunsArgs, Runs,
             lambda a, ctx: {"runs": agent.list_runs(ctx, limit=a.limit)}),
    ]


def _run_tools(agent: OptimizerAgent, name: Callable[[str], str]) -> list[ToolSpec]:
    patterns = sorted(shipped_patterns())
    run_args = _schema(RunPatternArgs)
    run_args["properties"]["pattern"]["enum"] = patterns
    run_args["properties"]["pattern"]["description"] = f"The pattern's id ({name('list_patterns')} shows each one's inputs)."
    view = _schema(RunView)

    def run(arguments: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        args = _parse(RunPatternArgs, arguments)
        if args.pattern not in patterns:
            raise InputError(
                f"pattern: unknown pattern '{args.pattern}'; valid: {', '.join(patterns)}",
                details={"field": "pattern", "value": args.pattern, "allowed": patterns},
            )
        return agent.run_view(agent.run_pattern(args.pattern, args.inputs, ctx, run_id=args.run_id), args.detail)

    def get(arguments: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        args = _parse(RunArgs, arguments)
        return agent.run_view(agent.run_report(args.run_id, ctx), args.detail)

    def decide(approve: bool) -> Call:
        def call(arguments: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
            args = _parse(DecisionArgs, arguments)
            report = agent.resume_run(args.run_id, approve=approve, note=args.note, ctx=ctx)
            return agent.run_view(report, args.detail)

        return call

    return [
        ToolSpec(name("run_pattern"), "Run a pattern",
                 "Run a pattern (e.g. policy_rebalance: propose trades, analyze their impact, suggest hedges, ask "
                 "for approval) until it completes or waits at an approval gate; returns the run with its run_id.",
                 run_args, view, False, run),
        ToolSpec(name("get_run"), "Get a run", "Show one of your runs: status, steps, approvals "
                 "and the gate it waits at.", _schema(RunArgs), view, True, get),
        ToolSpec(name("approve_run"), "Approve a run", "Approve the gate a run waits at and let "
                 "it go on; returns the run's new state.", _schema(DecisionArgs), view, False, decide(True)),
        ToolSpec(name("reject_run"), "Reject a run", "Reject the gate a run waits at: the run "
                 "ends as rejected.", _schema(DecisionArgs), view, False, decide(False)),
    ]

