"""Patterns: the committed schema, loading (shape and meaning, every error at once), and the
compiled LangGraph graph (skips, errors, approval gates that survive a restart).

The machinery is exercised with small test-only capabilities in a registry of their own, so
these tests say what the pattern layer does regardless of the optimizer's numbers.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command
from pydantic import BaseModel, ConfigDict, Field

from capabilities.base import Capability, RequestContext, Services
from capabilities.catalog import optimizer_capabilities
from capabilities.registry import CapabilityRegistry
from capabilities.runner import CapabilityRunner
from patterns.compiler import RunContext, compile_pattern, initial_state
from patterns.loader import (
    SCHEMA_FILE,
    PatternError,
    load_pattern,
    prepare_inputs,
    read_pattern_document,
    shipped_patterns,
)
from patterns.model import render_schema
from services.data.store import Store
from services.errors import DomainError, InputError

PACK = "PP_2022-12-28"


# --- test-only capabilities ----------------------------------------------------------------------


class MeasureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pricing_pack_id: str = Field(description="Pack.")
    values: list[float] = Field(description="Numbers to measure.")
    label: str | None = Field(None, description="Optional label, echoed.")


class Item(BaseModel):
    index: int
    value: float


class MeasureOut(BaseModel):
    pricing_pack_id: str
    total: float
    largest: float | None
    label: str | None
    items: list[Item]
    warnings: list[str]


class ScaleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pricing_pack_id: str = Field(description="Pack.")
    amount: float = Field(description="What to scale.")
    factor: float = Field(2.0, description="By how much.")


class ScaleOut(BaseModel):
    pricing_pack_id: str
    scaled: float
    warnings: list[str]


class FailIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pricing_pack_id: str = Field(description="Pack.")
    kind: str = Field(description="'input' or 'domain'.")


def _measure(request: MeasureIn, ctx: RequestContext, services: Services) -> MeasureOut:
    return MeasureOut(
        pricing_pack_id=request.pricing_pack_id,
        total=sum(request.values),
        largest=max(request.values, default=None),
        label=request.label,
        items=[Item(index=i, value=v) for i, v in enumerate(request.values)],
        warnings=[],
    )


def _scale(request: ScaleIn, ctx: RequestContext, services: Services) -> ScaleOut:
    return ScaleOut(
        pricing_pack_id=request.pricing_pack_id, scaled=request.amount * request.factor, warnings=[]
    )


def _fail(request: FailIn, ctx: RequestContext, services: Services) -> BaseModel:
    if request.kind == "input":
        raise InputError("toy input error", details={"field": "kind"})
    raise DomainError("toy domain error")


TOY = (
    Capability("toy.measure", "Sum and list numbers.", MeasureIn, MeasureOut, _measure),
    Capability("toy.scale", "Scale a number.", ScaleIn, ScaleOut, _scale),
    Capability("toy.fail", "Always fails.", FailIn, ScaleOut, _fail),
)


def toy_registry() -> CapabilityRegistry:
    registry = CapabilityRegistry()
    for capability in TOY:
        registry.register(capability)
    return registry


class CountingCaller:
    """The runner, counting the calls that reach it."""

    def __init__(self, runner: CapabilityRunner):
        self.runner = runner
        self.calls: list[str] = []

    def run(self, name: str, payload: Any, ctx: RequestContext) -> dict[str, Any]:
        self.calls.append(name)
        return self.runner.run(name, payload, ctx)


@pytest.fixture
def caller(seeded_store: Store) -> CountingCaller:
    services = Services(store=seeded_store, constraint_defaults={}, benchmarks={})
    return CountingCaller(CapabilityRunner(toy_registry(), services))


@pytest.fixture
def saver(tmp_path: Path) -> Iterator[SqliteSaver]:
    with SqliteSaver.from_conn_string(str(tmp_path / "runs.db")) as s:
        yield s


def toy_pattern(**changes: Any) -> dict[str, Any]:
    """measure → scale (when total > limit) → gate (when total > 50) → rescale → outputs."""
    document: dict[str, Any] = {
        "id": "toy",
        "version": "1.0",
        "description": "Measure numbers, scale the total when it is large, ask before finishing.",
        "inputs": {
            "type": "object",
            "properties": {
                "values": {"type": "array", "items": {"type": "number"}},
                "label": {"type": "string"},
                "limit": {"type": "number", "default": 10},
            },
            "required": ["values"],
            "additionalProperties": False,
        },
        "steps": [
            {
                "id": "measure",
                "capability": "toy.measure",
                "args": {
                    "pricing_pack_id": PACK,
                    "values": {"$ref": "inputs.values"},
                    "label": {"$ref": "inputs.label"},
                },
            },
            {
                "id": "scale",
                "capability": "toy.scale",
                "when": {
                    "ref": "steps.measure.total",
                    "op": "gt",
                    "value": {"$ref": "inputs.limit"},
                },
                "args": {"pricing_pack_id": PACK, "amount": {"$ref": "steps.measure.total"}},
            },
            {
                "id": "rescale",
                "capability": "toy.scale",
                "args": {
                    "pricing_pack_id": PACK,
                    "amount": {"$ref": "steps.scale.scaled"},
                    "factor": 10,
                },
            },
        ],
        "approvals": [
            {
                "id": "approve",
                "after": "scale",
                "message": "Scaled total is large; go on?",
                "when": {"ref": "steps.measure.total", "op": "gt", "value": 50},
                "show": {"scaled": {"$ref": "steps.scale.scaled"}},
            },
        ],
        "outputs": {
            "total": {"$ref": "steps.measure.total"},
            "first": {"$ref": "steps.measure.items.0.value"},
            "scaled": {"$ref": "steps.scale.scaled"},
            "rescaled": {"$ref": "steps.rescale.scaled"},
            "summary": {"label": {"$ref": "inputs.label"}, "limit": {"$ref": "inputs.limit"}},
        },
    }
    document.update(changes)
    return document


def run(
    document: dict[str, Any],
    inputs: dict[str, Any],
    caller: CountingCaller,
    saver: SqliteSaver | None = None,
    thread: str = "t1",
) -> dict[str, Any]:
    pattern = load_pattern(document, toy_registry())
    graph = compile_pattern(pattern, caller, saver)
    return graph.invoke(
        initial_state(prepare_inputs(pattern, inputs)),
        {"configurable": {"thread_id": thread}},
        context=RunContext(user=None, trace_id=thread),
    )


# --- schema --------------------------------------------------------------------------------------


def test_committed_schema_matches_the_model() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == render_schema(), (
        "patterns/pattern.schema.json is out of date; regenerate it with "
        "`python -m patterns.model > patterns/pattern.schema.json`"
    )


def test_shipped_patterns_are_valid_against_the_real_capabilities() -> None:
    registry = CapabilityRegistry()
    for capability in optimizer_capabilities():
        registry.register(capability)
    shipped = shipped_patterns()
    assert set(shipped) == {"policy_rebalance", "hedge_review", "regime_response", "drift_rebalance"}
    for pattern_id, path in shipped.items():
        pattern = load_pattern(read_pattern_document(path), registry, source=str(path))
        assert pattern.id == pattern_id


@pytest.mark.parametrize("decision", [
    None,
    {"status": "approved", "by": "someone", "note": None},
    {"$ref": "inputs.portfolio_id"},
])
def test_a_booking_step_must_take_its_decision_from_an_earlier_gate(decision: object) -> None:
    registry = CapabilityRegistry()
    for capability in optimizer_capabilities():
        registry.register(capability)
    document = read_pattern_document(shipped_patterns()["drift_rebalance"])
    book = next(s for s in document["steps"] if s["capability"] == "optimizer.book_trades")
    if decision is None:
        del book["args"]["decision"]
    else:
        book["args"]["decision"] = decision
    with pytest.raises(PatternError) as caught:
        load_pattern(document, registry, source="forged.json")
    index = document["steps"].index(book)
    [problem] = [e for e in caught.value.details["errors"] if e["pointer"] == f"/steps/{index}/args/decision"]
    assert "approvals.approve_trades" in problem["message"]


# --- loading -------------------------------------------------------------------------------------


def test_shape_errors_are_all_reported_with_pointers() -> None:
    document = toy_pattern(version="one", extra=True)
    del document["outputs"]
    document["steps"][0]["id"] = "Bad-Id"
    document["steps"][1]["on_error"] = "explode"
    document["approvals"][0]["when"]["op"] = "bigger"
    with pytest.raises(PatternError) as caught:
        load_pattern(document, toy_registry(), source="toy.json")
    pointers = {e["pointer"] for e in caught.value.details["errors"]}
    assert {"", "/version", "/steps/0/id", "/steps/1/on_error", "/approvals/0/when/op"} <= pointers
    assert caught.value.code == "invalid_pattern" and caught.value.exit_code == 2
    messages = " ".join(e["message"] for e in caught.value.details["errors"])
    assert "'outputs' is a required property" in messages and "'extra'" in messages
    assert "/steps/1/on_error" in caught.value.message  # one message lists every problem


def test_meaning_errors_are_all_reported_with_pointers() -> None:
    document = toy_pattern()
    document["steps"][0]["args"]["bogus"] = 1
    document["steps"][1]["args"]["amount"] = {"$ref": "steps.rescale.scaled"}  # forward
    document["steps"][2]["capability"] = "toy.nothing"
    document["steps"].append(
        {"id": "measure", "capability": "toy.measure", "args": {"values": {"$ref": "inputs.nope"}}}
    )
    document["approvals"].append({"id": "outputs", "after": "ghost", "message": "?"})
    document["outputs"]["bad_field"] = {"$ref": "steps.measure.items.0.colour"}
    document["outputs"]["not_a_ref"] = {"$ref": "everything"}
    with pytest.raises(PatternError) as caught:
        load_pattern(document, toy_registry())
    errors = {e["pointer"]: e["message"] for e in caught.value.details["errors"]}
    assert "not an argument of toy.measure" in errors["/steps/0/args/bogus"]
    assert "does not run before this point" in errors["/steps/1/args/amount/$ref"]
    assert "unknown capability 'toy.nothing'" in errors["/steps/2/capability"]
    assert "duplicate id 'measure'" in errors["/steps/3/id"]
    assert "no field 'nope'" in errors["/steps/3/args/values/$ref"]
    assert "reserved" in errors["/approvals/1/id"]
    assert "no step 'ghost'" in errors["/approvals/1/after"]
    assert "no field 'colour' under 'items.0'" in errors["/outputs/bad_field/$ref"]
    assert "is not a reference" in errors["/outputs/not_a_ref/$ref"]


def test_a_gate_may_only_see_steps_up_to_its_own() -> None:
    document = toy_pattern()
    document["approvals"][0]["show"]["later"] = {"$ref": "steps.rescale.scaled"}
    with pytest.raises(PatternError) as caught:
        load_pattern(document, toy_registry())
    assert [e["pointer"] for e in caught.value.details["errors"]] == [
        "/approvals/0/show/later/$ref"
    ]


def test_inputs_get_defaults_and_every_error_at_once() -> None:
    pattern = load_pattern(toy_pattern(), toy_registry())
    assert prepare_inputs(pattern, {"values": [1]}) == {"values": [1], "limit": 10}
    with pytest.raises(InputError) as caught:
        prepare_inputs(pattern, {"values": ["x"], "limit": "high", "colour": 1})
    pointers = sorted(e["pointer"] for e in caught.value.details["errors"])
    assert pointers == ["", "/limit", "/values/0"]


# --- running -------------------------------------------------------------------------------------


def test_small_total_skips_the_conditional_step_and_its_dependants(caller: CountingCaller) -> None:
    state = run(toy_pattern(), {"values": [1, 2.5]}, caller)
    assert caller.calls == ["toy.measure"]
    steps = state["steps"]
    assert steps["measure"]["status"] == "ok"
    assert steps["measure"]["request"] == {
        "pricing_pack_id": PACK,
        "values": [1, 2.5],
    }  # no label given: left out
    assert steps["measure"]["output"]["_metadata"]["capability"] == "toy.measure"
    assert steps["scale"] == {
        "capability": "toy.scale",
        "status": "skipped",
        "reason": "condition false: steps.measure.total = 3.5 gt 10",
    }
    assert steps["rescale"]["status"] == "skipped"
    assert steps["rescale"]["reason"] == "needs steps.scale, which was skipped"
    assert state["approvals"]["approve"]["status"] == "not_required"
    assert state["outputs"] == {
        "total": 3.5,
        "first": 1.0,
        "scaled": None,
        "rescaled": None,
        "summary": {"limit": 10},
    }
    assert state["status"] == "completed" and "__interrupt__" not in state


def test_gate_not_required_lets_the_run_complete(caller: CountingCaller) -> None:
    state = run(
        toy_pattern(), {"values": [20], "label": "x"}, caller
    )  # scaled 40: no approval needed
    assert caller.calls == ["toy.measure", "toy.scale", "toy.scale"]
    assert state["approvals"]["approve"] == {
        "status": "not_required",
        "reason": "condition false: steps.measure.total = 20.0 gt 50",
    }
    assert state["outputs"]["rescaled"] == 400.0 and state["status"] == "completed"


def test_failed_step_halts_the_run(caller: CountingCaller) -> None:
    document = toy_pattern()
    document["steps"].insert(
        1,
        {
            "id": "boom",
            "capability": "toy.fail",
            "args": {"pricing_pack_id": PACK, "kind": "domain"},
        },
    )
    state = run(document, {"values": [50]}, caller)
    assert caller.calls == ["toy.measure", "toy.fail"]
    assert state["steps"]["boom"]["error"]["message"] == "toy domain error"
    assert state["halted"] == {
        "status": "failed",
        "at": "boom",
        "reason": "step 'boom' failed: toy domain error",
    }
    assert state["steps"]["scale"]["reason"] == "step 'boom' failed: toy domain error"
    assert state["approvals"]["approve"]["status"] == "skipped"
    assert state["status"] == "failed" and state["outputs"]["total"] == 50.0


def test_continue_on_error_runs_the_independent_steps(caller: CountingCaller) -> None:
    document = toy_pattern()
    document["steps"].insert(
        1,
        {
            "id": "boom",
            "capability": "toy.fail",
            "on_error": "continue",
            "args": {"pricing_pack_id": PACK, "kind": "input"},
        },
    )
    document["steps"].append(
        {
            "id": "after_boom",
            "capability": "toy.scale",
            "args": {"pricing_pack_id": PACK, "amount": {"$ref": "steps.boom.scaled"}},
        }
    )
    state = run(document, {"values": [1]}, caller)
    assert state["steps"]["boom"]["error"]["code"] == "invalid_input"
    assert state["steps"]["after_boom"]["reason"] == "needs steps.boom, which was error"
    assert state["status"] == "completed" and state["halted"] is None


def test_approval_gate_stops_and_resumes_after_a_restart(
    caller: CountingCaller, tmp_path: Path
) -> None:
    db = str(tmp_path / "runs.db")
    with SqliteSaver.from_conn_string(db) as saver:
        state = run(toy_pattern(), {"values": [30, 40]}, caller, saver, thread="run-1")
    interrupt = state["__interrupt__"][0].value
    assert interrupt == {
        "gate": "approve",
        "message": "Scaled total is large; go on?",
        "reason": "steps.measure.total = 70.0 gt 50",
        "show": {"scaled": 140.0},
    }
    assert "rescale" not in state["steps"] and caller.calls == ["toy.measure", "toy.scale"]

    # A new connection and a newly compiled graph: everything comes from the file.
    pattern = load_pattern(copy.deepcopy(toy_pattern()), toy_registry())
    with SqliteSaver.from_conn_string(db) as saver:
        graph = compile_pattern(pattern, caller, saver)
        config = {"configurable": {"thread_id": "run-1"}}
        assert graph.get_state(config).next == ("approve",)
        final = graph.invoke(
            Command(resume={"approved": True, "note": "ok", "by": "ann"}),
            config,
            context=RunContext(user=None, trace_id="run-1"),
        )
    assert caller.calls == ["toy.measure", "toy.scale", "toy.scale"]  # earlier steps are not re-run
    assert final["approvals"]["approve"] == {
        "status": "approved",
        "reason": "steps.measure.total = 70.0 gt 50",
        "by": "ann",
        "note": "ok",
    }
    assert final["outputs"]["rescaled"] == 1400.0 and final["status"] == "completed"


def test_a_gate_whose_condition_cannot_be_evaluated_asks(
    caller: CountingCaller, saver: SqliteSaver
) -> None:
    document = toy_pattern()
    document["approvals"][0]["when"] = {"ref": "steps.scale.scaled", "op": "gt", "value": 100}
    state = run(document, {"values": [1]}, caller, saver)  # scale is skipped
    assert state["__interrupt__"][0].value["reason"] == "needs steps.scale, which was skipped"


def test_rejection_skips_the_rest(caller: CountingCaller, saver: SqliteSaver) -> None:
    pattern = load_pattern(toy_pattern(), toy_registry())
    graph = compile_pattern(pattern, caller, saver)
    config = {"configurable": {"thread_id": "r"}}
    context = RunContext(user=None, trace_id="r")
    graph.invoke(initial_state(prepare_inputs(pattern, {"values": [100]})), config, context=context)
    final = graph.invoke(
        Command(resume={"approved": False, "note": "no", "by": None}), config, context=context
    )
    assert final["approvals"]["approve"]["status"] == "rejected"
    assert final["steps"]["rescale"] == {
        "capability": "toy.scale",
        "status": "skipped",
        "reason": "rejected at approval gate 'approve'",
    }
    assert final["status"] == "rejected" and final["outputs"]["scaled"] == 200.0


def test_one_node_per_step_and_gate_in_order(caller: CountingCaller) -> None:
    graph = compile_pattern(load_pattern(toy_pattern(), toy_registry()), caller)
    drawing = graph.get_graph()
    edges = sorted((e.source, e.target) for e in drawing.edges)
    assert edges == sorted(
        [
            ("__start__", "measure"),
            ("measure", "scale"),
            ("scale", "approve"),
            ("approve", "rescale"),
            ("rescale", "outputs"),
            ("outputs", "__end__"),
        ]
    )
    assert "approve --> rescale" in drawing.draw_mermaid()


def test_pattern_documents_are_plain_json(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(PatternError, match="not valid JSON"):
        read_pattern_document(path)
    path.write_text(json.dumps(toy_pattern()), encoding="utf-8")
    assert read_pattern_document(path)["id"] == "toy"


def test_for_each_calls_once_per_item_and_references_select_fields(caller: CountingCaller) -> None:
    document = toy_pattern()
    document["steps"].append(
        {
            "id": "each",
            "capability": "toy.scale",
            "for_each": {"$ref": "steps.measure.items"},
            "args": {"pricing_pack_id": PACK, "amount": {"$ref": "item.value"}},
        }
    )
    document["outputs"] = {
        "each": {"$ref": "steps.each", "fields": ["scaled"]},
        "first_each": {"$ref": "steps.each.0.scaled"},
        "second_item": {
            "$ref": "steps.measure.items",
            "where": {"index": 1},
            "fields": {"v": "value"},
        },
    }
    state = run(document, {"values": [1, 2]}, caller)
    assert caller.calls == ["toy.measure", "toy.scale", "toy.scale"]
    assert state["steps"]["each"]["requests"] == [
        {"pricing_pack_id": PACK, "amount": 1.0},
        {"pricing_pack_id": PACK, "amount": 2.0},
    ]
    assert state["outputs"] == {
        "each": [{"scaled": 2.0}, {"scaled": 4.0}],
        "first_each": 2.0,
        "second_item": [{"v": 2.0}],
    }


def test_item_and_selection_errors() -> None:
    document = toy_pattern()
    document["steps"][1]["args"]["amount"] = {"$ref": "item.value"}
    document["steps"][2]["for_each"] = {"$ref": "steps.measure.total"}
    document["outputs"] = {
        "bad": {"$ref": "steps.measure.items", "fields": ["colour"], "where": {"size": 1}}
    }
    with pytest.raises(PatternError) as caught:
        load_pattern(document, toy_registry())
    errors = {e["pointer"]: e["message"] for e in caught.value.details["errors"]}
    assert "only defined in the args of a step with for_each" in errors["/steps/1/args/amount/$ref"]
    assert "is not a list" in errors["/steps/2/for_each/$ref"]
    assert 'no field "colour"' in errors["/outputs/bad/fields/0"]
    assert 'no field "size"' in errors["/outputs/bad/where/size"]
