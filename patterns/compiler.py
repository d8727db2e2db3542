"""Compile a validated pattern to a LangGraph ``StateGraph``: a straight line of nodes.

Each step becomes one node made by ``_step_node``; each approval gate becomes a node right after
its step; a last ``outputs`` node resolves the pattern's outputs and the run's status. Every
node always writes a record (``ok``, ``skipped`` with a reason, or ``error``) instead of being
routed around by conditional edges, so the state tells why something did not run.

The state is plain JSON, so any checkpointer can persist it. Approval gates call LangGraph's
``interrupt``; with a persistent checkpointer the run can stop, outlive its process and be
resumed with ``Command(resume={"approved": ..., "note": ..., "by": ...})``.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from capabilities.base import RequestContext
from patterns.loader import is_reference
from patterns.model import ApprovalGate, Condition, Pattern, Step
from services.data.bounds import MAX_RUN_STATE_BYTES
from services.errors import OptimizerError

OUTPUTS_NODE = "outputs"


class CapabilityCaller(Protocol):
    """What nodes call capabilities through: the capability runner (or a wrapper of it)."""

    def run(self, name: str, payload: Any, ctx: RequestContext) -> dict[str, Any]: ...


@dataclass(frozen=True)
class RunContext:
    """Who the run acts for and the trace id its capability calls are logged under."""

    user: str | None
    trace_id: str


def _merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    return {**left, **right}


class RunState(TypedDict, total=False):
    """A run's state: its inputs, one record per step and gate, why it halted, outputs, status."""

    inputs: dict[str, Any]
    steps: Annotated[dict[str, Any], _merge]
    approvals: Annotated[dict[str, Any], _merge]
    halted: dict[str, Any] | None
    outputs: dict[str, Any]
    status: str


class _Unresolved(Exception):
    """A reference names a step that has no output (it was skipped or failed)."""


_MISSING = object()
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
    "in": lambda left, right: left in right,
    "not_in": lambda left, right: left not in right,
}


def initial_state(inputs: dict[str, Any]) -> RunState:
    """The state a run starts from."""
    return {
        "inputs": inputs,
        "steps": {},
        "approvals": {},
        "halted": None,
        "outputs": {},
        "status": "running",
    }


def compile_pattern(
    pattern: Pattern, caller: CapabilityCaller, checkpointer: BaseCheckpointSaver | None = None
) -> CompiledStateGraph:
    """The pattern as a compiled graph; invoke it with ``context=RunContext(...)``."""
    graph = StateGraph(RunState, context_schema=RunContext)
    previous = START
    for step in pattern.steps:
        graph.add_node(step.id, _step_node(step, caller))
        graph.add_edge(previous, step.id)
        previous = step.id
        for gate in (g for g in pattern.approvals if g.after == step.id):
            graph.add_node(gate.id, _gate_node(gate))
            graph.add_edge(previous, gate.id)
            previous = gate.id
    graph.add_node(OUTPUTS_NODE, _outputs_node(pattern))
    graph.add_edge(previous, OUTPUTS_NODE)
    graph.add_edge(OUTPUTS_NODE, END)
    return graph.compile(checkpointer=checkpointer, name=pattern.id)


def _step_node(
    step: Step, caller: CapabilityCaller
) -> Callable[[RunState, Runtime[RunContext]], dict[str, Any]]:
    """The node of one step: decide whether it runs, build its request, call, record the result."""

    def node(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        def recorded(status: str, **fields: Any) -> dict[str, Any]:
            return {"steps": {step.id: {"capability": step.capability, "status": status, **fields}}}

        halted = state.get("halted")
        if halted:
            return recorded("skipped", reason=halted["reason"])
        try:
            if step.when is not None:
                holds, explanation = evaluate(step.when, state)
                if not holds:
                    return recorded("skipped", reason=f"condition false: {explanation}")
            if step.for_each is None:
                requests = [resolve(step.args, state)]
            else:
                items = resolve(step.for_each, state)
                requests = [resolve(step.args, state, item=item) for item in items or []]
        except _Unresolved as exc:
            return recorded("skipped", reason=str(exc))
        ctx = RequestContext(user=runtime.context.user, trace_id=runtime.context.trace_id)
        single = step.for_each is None
        outputs: list[dict[str, Any]] = []
        # Every checkpoint stores the whole state, so its size is bounded as it grows.
        state_bytes = _json_bytes({"inputs": state["inputs"], "steps": state["steps"]})
        for request in requests:
            try:
                output = caller.run(step.capability, request, ctx)
            except OptimizerError as err:
                sent = _calls(single, requests[: len(outputs) + 1])
                update = recorded("error", **sent, error=err.to_dict())
                if step.on_error == "fail":
                    reason = f"step '{step.id}' failed: {err.message}"
                    update["halted"] = {"status": "failed", "at": step.id, "reason": reason}
                return update
            state_bytes += _json_bytes(request) + _json_bytes(output)
            if state_bytes > MAX_RUN_STATE_BYTES:
                err = OptimizerError(
                    f"the run's state would exceed {MAX_RUN_STATE_BYTES:,} bytes at step "
                    f"'{step.id}'; split the work into smaller runs (fewer for_each items)",
                    code="run_state_too_large",
                    details={"step": step.id, "max_bytes": MAX_RUN_STATE_BYTES},
                )
                update = recorded("error", **_calls(single, requests[: len(outputs) + 1]),
                                  error=err.to_dict())
                update["halted"] = {"status": "failed", "at": step.id, "reason": err.message}
                return update
            outputs.append(output)
        return recorded("ok", **_calls(single, requests, outputs))

    node.__name__ = f"step_{step.id}"
    return node


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, default=str, ensure_ascii=False).encode("utf-8"))


def _calls(
    single: bool, requests: list[dict[str, Any]], outputs: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A step's requests and outputs as recorded: one of each, or lists for a for_each step."""
    recorded: dict[str, Any] = {"request": requests[0]} if single else {"requests": requests}
    if outputs is not None:
        recorded["output"] = outputs[0] if single else outputs
    return recorded


def _gate_node(gate: ApprovalGate) -> Callable[[RunState], dict[str, Any]]:
    """The node of an approval gate: ask when its condition holds, record the decision."""

    def node(state: RunState) -> dict[str, Any]:
        def recorded(status: str, reason: str, **fields: Any) -> dict[str, Any]:
            return {"approvals": {gate.id: {"status": status, "reason": reason, **fields}}}

        halted = state.get("halted")
        if halted:
            return recorded("skipped", halted["reason"])
        for step_id in gate.requires:
            record = state.get("steps", {}).get(step_id)
            if record is None or record.get("status") != "ok":
                why = "has not run" if record is None else f"was {record['status']}"
                return recorded("skipped", f"nothing to approve: step '{step_id}' {why}")
        explanation = "always asked"
        if gate.when is not None:
            try:
                holds, explanation = evaluate(gate.when, state)
            except _Unresolved as exc:
                # A gate whose condition cannot be evaluated asks rather than lets the run through.
                holds, explanation = True, str(exc)
            if not holds:
                return recorded("not_required", f"condition false: {explanation}")
        shown = resolve(gate.show, state, strict=False)
        decision = interrupt(
            {"gate": gate.id, "message": gate.message, "reason": explanation, "show": shown}
        )
        # The decision comes from Command(resume=...); anything but an explicit approval rejects.
        decision = decision if isinstance(decision, dict) else {}
        approved = decision.get("approved") is True
        update = recorded(
            "approved" if approved else "rejected",
            explanation,
            by=decision.get("by"),
            note=decision.get("note"),
        )
        if not approved and gate.on_reject == "halt":
            reason = f"rejected at approval gate '{gate.id}'"
            update["halted"] = {"status": "rejected", "at": gate.id, "reason": reason}
        return update

    node.__name__ = f"gate_{gate.id}"
    return node


def _outputs_node(pattern: Pattern) -> Callable[[RunState], dict[str, Any]]:
    """The last node: the outputs (null where a step did not run) and the run's final status."""

    def node(state: RunState) -> dict[str, Any]:
        halted = state.get("halted")
        rejected = any(a.get("status") == "rejected" for a in state.get("approvals", {}).values())
        return {
            "outputs": outputs_of(pattern, state),
            "status": halted["status"] if halted else "rejected" if rejected else "completed",
        }

    return node


def outputs_of(pattern: Pattern, state: RunState) -> dict[str, Any]:
    """The pattern's outputs resolved against ``state``: null where a step has not run or did not finish.

    Also used for a run waiting at a gate, to show what it has produced so far.
    """
    return resolve(pattern.outputs, state, strict=False)


def evaluate(condition: Condition, state: RunState) -> tuple[bool, str]:
    """Whether ``condition`` holds, and a readable account of the comparison made."""
    left = lookup(condition.ref, state)
    right = resolve(condition.value, state)
    try:
        holds = _OPERATORS[condition.op](left, right)
    except TypeError:
        # An absent value (null) compares with nothing; the condition simply does not hold.
        holds = False
    return bool(holds), f"{condition.ref} = {_short(left)} {condition.op} {_short(right)}"


def resolve(value: Any, state: RunState, *, strict: bool = True, item: Any = None) -> Any:
    """``value`` with every reference replaced by what it names (``item``: a for_each step's item).

    A reference to an input the caller left out removes the key (or list item) holding it. With
    ``strict``, a reference to a step without output raises ``_Unresolved``; otherwise it is null.
    """
    resolved = _resolve(value, state, strict, item)
    return None if resolved is _MISSING else resolved


def _resolve(value: Any, state: RunState, strict: bool, item: Any) -> Any:
    if is_reference(value):
        try:
            return _select(lookup(value["$ref"], state, missing=_MISSING, item=item), value)
        except _Unresolved:
            if strict:
                raise
            return None
    if isinstance(value, dict):
        entries = {k: _resolve(v, state, strict, item) for k, v in value.items()}
        return {k: v for k, v in entries.items() if v is not _MISSING}
    if isinstance(value, list):
        return [x for x in (_resolve(v, state, strict, item) for v in value) if x is not _MISSING]
    return value


def _select(found: Any, reference: dict[str, Any]) -> Any:
    """Apply a reference's ``where`` (keep matching items) and ``fields`` (keep those fields)."""
    if not isinstance(found, list) or not ({"where", "fields"} & set(reference)):
        return found
    conditions = reference.get("where", {})
    items = [item for item in found if all(item.get(k) == v for k, v in conditions.items())]
    if "fields" in reference:
        fields = reference["fields"]
        renames = fields if isinstance(fields, dict) else {name: name for name in fields}
        items = [{new: item[old] for new, old in renames.items() if old in item} for item in items]
    return items


def lookup(ref: str, state: RunState, missing: Any = None, item: Any = None) -> Any:
    """The value a reference names; ``missing`` for an input that was not given.

    Raises:
        _Unresolved: the reference names a step that has no output.
    """
    root, *path = ref.split(".")
    if root == "item":
        current: Any = item
    elif root == "inputs":
        current = state.get("inputs", {})
        if path[0] not in current:
            return missing
    elif root == "approvals":
        gate_id, path = path[0], path[1:]
        current = state.get("approvals", {}).get(gate_id)
        if current is None:
            raise _Unresolved(f"needs approvals.{gate_id}, which has not been reached")
    else:
        step_id, path = path[0], path[1:]
        record = state.get("steps", {}).get(step_id)
        if record is None or record.get("status") != "ok":
            why = "has not run" if record is None else f"was {record['status']}"
            raise _Unresolved(f"needs steps.{step_id}, which {why}")
        current = record["output"]
    for segment in path:
        if isinstance(current, dict):
            current = current.get(segment)
        elif isinstance(current, list) and segment.isdigit() and int(segment) < len(current):
            current = current[int(segment)]
        else:
            return None
    return current


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
