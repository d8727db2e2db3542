"""The pattern file format, defined once: pydantic models from which ``pattern.schema.json`` is made.

A pattern chains capabilities. Values in ``args``, ``when``, ``show`` and ``outputs`` may be
references, written ``{"$ref": "inputs.<field>..."}``, ``{"$ref": "steps.<step id>.<field>..."}`` or,
after a gate, ``{"$ref": "approvals.<gate id>.<status|reason|by|note>"}`` (the gate's decision);
a dotted path continues into objects by name and into lists by index. A reference to a list of
objects may add ``"where": {field: value}`` (keep the items with those values) and ``"fields"``:
a list of names (keep only those fields of each item) or ``{new name: field}`` (keep and rename),
to hand one capability's records to another. In the args of a step with ``for_each``,
``{"$ref": "item..."}`` names the current item. Everything else is a literal.

Regenerate the committed schema after changing a model here::

    python -m patterns.model > patterns/pattern.schema.json
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

IDENTIFIER = r"^[a-z][a-z0-9_]{0,63}$"
REFERENCE = r"^((inputs|steps|approvals)(\.[A-Za-z0-9_]+)+|item(\.[A-Za-z0-9_]+)*)$"
REFERENCE_KEYS = frozenset({"$ref", "where", "fields"})
SCHEMA_ID = "https://optimizer-agent.local/patterns/pattern.schema.json"

Operator = Literal["eq", "ne", "gt", "ge", "lt", "le", "in", "not_in"]


class Condition(BaseModel):
    """A comparison of a referenced value with a literal or another reference."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ref: str = Field(
        pattern=REFERENCE, description="What to test, e.g. 'steps.impact.post_concentration_top10'."
    )
    op: Operator = Field(
        description="eq, ne, gt, ge, lt, le; 'in' / 'not_in' test membership in a list."
    )
    value: Any = Field(
        description='A literal, or a reference {"$ref": ...} to an input or an earlier step\'s output.'
    )


class Step(BaseModel):
    """One capability call. Steps run in the order written."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(
        pattern=IDENTIFIER, description="Unique within the pattern; later steps refer to it."
    )
    capability: str = Field(
        min_length=1, description="A registered capability, e.g. 'optimizer.propose_trades'."
    )
    description: str = Field("", description="What the step is for, shown in reports.")
    args: dict[str, Any] = Field(
        default_factory=dict,
        description='The capability request: literals and {"$ref": ...} values. A reference to an input '
        "the caller left out leaves that argument out.",
    )
    when: Condition | None = Field(
        None, description="Run only when this holds; otherwise the step is skipped."
    )
    for_each: dict[str, Any] | None = Field(
        None,
        description="A reference to a list: the capability is called once per item, in order, with "
        '{"$ref": "item"} in args naming the item; the step\'s output is the list of results.',
    )
    on_error: Literal["fail", "continue"] = Field(
        "fail",
        description="'fail' stops the run at an error; 'continue' records the error, skips the steps "
        "that need this one and runs the rest.",
    )


class ApprovalGate(BaseModel):
    """A stop after a step where a person approves or rejects before the run goes on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=IDENTIFIER, description="Unique among steps and gates.")
    after: str = Field(pattern=IDENTIFIER, description="The step after which the gate stands.")
    message: str = Field(min_length=1, description="What the approver is asked.")
    when: Condition | None = Field(
        None, description="Ask only when this holds; otherwise the run goes on."
    )
    show: dict[str, Any] = Field(
        default_factory=dict,
        description='Values shown to the approver: literals and {"$ref": ...} values.',
    )
    requires: list[str] = Field(
        default_factory=list,
        description="Steps whose output the gate approves: when one of them did not run, there is "
        "nothing to approve and the gate is skipped (without it, a gate that cannot evaluate its "
        "condition asks).",
    )
    on_reject: Literal["halt", "continue"] = Field(
        "halt",
        description="'halt' ends the run at a rejection; 'continue' records it and runs the later "
        "steps, which see the decision as approvals.<gate id>.status (e.g. to record the rejection).",
    )


class Pattern(BaseModel):
    """A named, versioned chain of capability calls with approval gates and outputs."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="Optimizer pattern",
        json_schema_extra={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": SCHEMA_ID,
        },
    )

    id: str = Field(pattern=IDENTIFIER, description="The pattern's name, e.g. 'policy_rebalance'.")
    version: str = Field(
        pattern=r"^\d+(\.\d+){0,2}$", description="Bumped whenever the pattern's behaviour changes."
    )
    description: str = Field(
        min_length=1, description="What the pattern does, for people and LLMs."
    )
    inputs: dict[str, Any] = Field(
        description="A JSON Schema (type object) for the run's inputs; top-level 'default's are applied."
    )
    steps: list[Step] = Field(min_length=1, description="Capability calls, run in order.")
    approvals: list[ApprovalGate] = Field(default_factory=list, description="Approval gates.")
    outputs: dict[str, Any] = Field(
        description='The run\'s results by name: literals and {"$ref": ...} values (null when the step '
        "they name did not run)."
    )


def pattern_json_schema() -> dict[str, Any]:
    """The JSON Schema every pattern file is validated against."""
    return Pattern.model_json_schema()


def render_schema() -> str:
    """The committed form of the schema: sorted keys, two-space indent, trailing newline."""
    return json.dumps(pattern_json_schema(), sort_keys=True, indent=2) + "\n"


if __name__ == "__main__":
    print(render_schema(), end="")
