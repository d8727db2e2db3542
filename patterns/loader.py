"""Load a pattern: validate its shape against ``pattern.schema.json``, then check what it means.

Both stages collect every problem before reporting, each with the JSON pointer of the place it
is about, so one correction round fixes a file. A pattern that fails either stage is never
compiled, so a bad pattern never starts running.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from capabilities.registry import CapabilityRegistry
from patterns.model import REFERENCE, REFERENCE_KEYS, Condition, Pattern, Step
from services.data.bounds import MAX_PATTERN_STEPS, check_json_value, parse_json_text
from services.errors import InputError

# jsonschema is imported where a pattern is validated: building the agent imports this module,
# and a capability call never validates a pattern.
if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

PATTERN_DIR = Path(__file__).parent
SCHEMA_FILE = PATTERN_DIR / "pattern.schema.json"
RESERVED_IDS = frozenset({"outputs"})
# JSON Schema keywords that name another schema by URI.
_SCHEMA_REFERENCES = frozenset({"$ref", "$dynamicRef", "$recursiveRef"})
# The output schema of a step whose capability is unknown: references to it are not checked.
_UNKNOWN_OUTPUT: dict[str, Any] = {}
# What ``approvals.<gate id>`` names: the gate's record (see compiler._gate_node).
GATE_DECISION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["approved", "rejected", "not_required", "skipped"]},
        "reason": {"type": "string"},
        "by": {"type": ["string", "null"]},
        "note": {"type": ["string", "null"]},
    },
}


class PatternError(InputError):
    """A pattern file is invalid; ``details.errors`` lists each problem with its JSON pointer."""

    code = "invalid_pattern"


def shipped_patterns() -> dict[str, Path]:
    """The patterns that ship with the package, by id (the file's stem)."""
    return {p.stem: p for p in sorted(PATTERN_DIR.glob("*.json")) if p != SCHEMA_FILE}


def pattern_source(name: str | Path) -> Path:
    """The file of a shipped pattern's id, or ``name`` itself when it is a path to a file."""
    shipped = shipped_patterns()
    if isinstance(name, str) and name in shipped:
        return shipped[name]
    path = Path(name)
    if path.is_file():
        return path
    raise InputError(
        f"no pattern '{name}': not a shipped pattern ({', '.join(shipped)}) and not a file",
        code="unknown_pattern",
        details={"value": str(name), "allowed": list(shipped)},
    )


def read_pattern_document(path: Path) -> dict[str, Any]:
    """The JSON object in a pattern file (within the size and nesting limits of any request)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PatternError(
            f"cannot read pattern {path}: {exc.strerror}", details={"file": str(path)}
        ) from exc
    except UnicodeDecodeError as exc:
        raise PatternError(
            f"cannot read pattern {path}: not UTF-8 text ({exc.reason})", details={"file": str(path)}
        ) from exc
    try:
        return parse_json_text(text, source=str(path), kind="pattern")  # type: ignore[no-any-return]
    except InputError as exc:
        raise PatternError(exc.message, details=exc.details) from exc


def load_pattern(
    document: dict[str, Any], registry: CapabilityRegistry, *, source: str = "pattern"
) -> Pattern:
    """Validate a pattern document (shape, then meaning) and return the pattern.

    Raises:
        PatternError: listing every problem found, each as {pointer, message}.
    """
    try:
        check_json_value(document, kind="pattern", source=source)
    except InputError as exc:
        raise PatternError(exc.message, details=exc.details) from exc
    errors = shape_errors(document) + bound_errors(document)
    if errors:
        raise _pattern_error(source, errors)
    pattern = Pattern.model_validate(document)
    errors = meaning_errors(pattern, registry)
    if errors:
        raise _pattern_error(source, errors)
    return pattern


def shape_errors(document: Any) -> list[dict[str, str]]:
    """Every place where ``document`` breaks ``pattern.schema.json``."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))
    found = [leaf for e in validator.iter_errors(document) for leaf in _leaf_errors(e)]
    found.sort(key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [{"pointer": _pointer(e.absolute_path), "message": e.message} for e in found]


def bound_errors(document: Any) -> list[dict[str, str]]:
    """Limits a schema does not state: the number of steps, and references out of the pattern.

    An inputs schema may only refer inside itself (``#...``): a ``$ref`` to an http: or file: URL
    would make validation fetch it when a run starts (a request to wherever the pattern says).
    """
    errors: list[dict[str, str]] = []
    if not isinstance(document, dict):
        return errors
    steps = document.get("steps")
    if isinstance(steps, list) and len(steps) > MAX_PATTERN_STEPS:
        errors.append({"pointer": "/steps",
                       "message": f"{len(steps)} steps; a pattern may have at most {MAX_PATTERN_STEPS}"})
    todo: list[tuple[Any, str]] = [(document.get("inputs"), "/inputs")]
    while todo:
        node, pointer = todo.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                at = f"{pointer}/{_escape(str(key))}"
                if key in _SCHEMA_REFERENCES and not (isinstance(value, str) and value.startswith("#")):
                    errors.append({"pointer": at, "message": f"{json.dumps(value)} refers outside the "
                                   "pattern; an inputs schema may only use local references ('#/...')"})
                elif key in _SCHEMA_REFERENCES and not _resolves(document["inputs"], value):
                    errors.append({"pointer": at, "message": f"{json.dumps(value)} names nothing in the "
                                   "inputs schema; write a JSON pointer such as '#/$defs/name'"})
                else:
                    todo.append((value, at))
        elif isinstance(node, list):
            todo.extend((item, f"{pointer}/{i}") for i, item in enumerate(node))
    return sorted(errors, key=lambda e: e["pointer"])


def _resolves(schema: Any, reference: str) -> bool:
    """Whether a local reference ``#/a/b`` (a JSON pointer into ``schema``) names something."""
    if reference in ("#", "") or not reference.startswith("#/"):
        return reference in ("#", "")
    node = schema
    for token in reference[2:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return False
    return True


def _leaf_errors(error: ValidationError) -> list[ValidationError]:
    """The errors inside an ``anyOf`` that matter: those of the one branch the value could be.

    An optional object is ``anyOf: [object, null]``; for a wrong object, "not valid under any of
    the given schemas" hides what is wrong, while the null branch's type error is beside the point.
    """
    branches: dict[Any, list[ValidationError]] = {}
    for sub in error.context or []:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    relevant = [
        errs
        for errs in branches.values()
        if not (len(errs) == 1 and errs[0].validator == "type" and not errs[0].relative_path)
    ]
    if len(relevant) != 1:
        return [error]
    return [leaf for sub in relevant[0] for leaf in _leaf_errors(sub)]


def meaning_errors(pattern: Pattern, registry: CapabilityRegistry) -> list[dict[str, str]]:
    """Problems a schema cannot see: unknown capabilities, ids, and references that do not resolve.

    A reference must point backwards (to the inputs or to an earlier step) and name a field that
    exists in the inputs schema or in the referenced capability's output schema.
    """
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    errors: list[dict[str, str]] = []

    def error(pointer: str, message: str) -> None:
        errors.append({"pointer": pointer, "message": message})

    try:
        Draft202012Validator.check_schema(pattern.inputs)
    except SchemaError as exc:
        error("/inputs" + _pointer(exc.absolute_path), f"not a valid JSON Schema: {exc.message}")
    if pattern.inputs.get("type") != "object":
        error("/inputs/type", "the inputs schema must have type 'object'")

    seen: dict[str, str] = {}
    for pointer, item_id in [(f"/steps/{i}/id", s.id) for i, s in enumerate(pattern.steps)] + [
        (f"/approvals/{i}/id", g.id) for i, g in enumerate(pattern.approvals)
    ]:
        if item_id in RESERVED_IDS:
            error(pointer, f"'{item_id}' is reserved; choose another id")
        elif item_id in seen:
            error(pointer, f"duplicate id '{item_id}' (first used at {seen[item_id]})")
        else:
            seen[item_id] = pointer

    outputs: dict[str, dict[str, Any]] = {}
    for i, step in enumerate(pattern.steps):
        base = f"/steps/{i}"
        if step.capability not in registry:
            error(
                f"{base}/capability",
                f"unknown capability '{step.capability}'; registered: "
                f"{', '.join(registry.names())}",
            )
        else:
            capability = registry.get(step.capability)
            known = capability.input_schema().get("properties", {})
            for name in step.args:
                if name not in known:
                    error(
                        f"{base}/args/{_escape(name)}",
                        f"'{name}' is not an argument of {step.capability}; "
                        f"valid: {', '.join(sorted(known))}",
                    )
        scope = _Scope(pattern, outputs, error)
        if step.when is not None:
            scope.check_condition(step.when, f"{base}/when")
        if step.for_each is not None:
            scope = scope.for_items(step.for_each, f"{base}/for_each")
        for pointer, ref in _references(step.args, f"{base}/args"):
            scope.check(ref, pointer)
        if step.capability in registry and registry.get(step.capability).writes:
            _check_decided_by_a_gate(step, outputs, f"{base}/args/decision", error)
        if step.capability in registry:
            output = registry.get(step.capability).output_schema()
            outputs[step.id] = _list_of(output) if step.for_each is not None else output
        else:
            outputs[step.id] = _UNKNOWN_OUTPUT
        for gate in pattern.approvals:
            if gate.after == step.id:
                outputs[f"approvals.{gate.id}"] = GATE_DECISION

    step_ids = [s.id for s in pattern.steps]
    for i, gate in enumerate(pattern.approvals):
        base = f"/approvals/{i}"
        if gate.after not in step_ids:
            error(f"{base}/after", f"no step '{gate.after}'; steps: {', '.join(step_ids)}")
            continue
        visible = {
            k: v for k, v in outputs.items() if k in step_ids[: step_ids.index(gate.after) + 1]
        }
        for j, step_id in enumerate(gate.requires):
            if step_id not in visible:
                error(f"{base}/requires/{j}", f"'{step_id}' is not a step at or before '{gate.after}'")
        scope = _Scope(pattern, visible, error)
        if gate.when is not None:
            scope.check_condition(gate.when, f"{base}/when")
        for pointer, ref in _references(gate.show, f"{base}/show"):
            scope.check(ref, pointer)

    scope = _Scope(pattern, outputs, error)
    for pointer, ref in _references(pattern.outputs, "/outputs"):
        scope.check(ref, pointer)
    return errors


def prepare_inputs(pattern: Pattern, inputs: Any) -> dict[str, Any]:
    """The run's inputs with top-level defaults applied, validated against the pattern's inputs schema.

    Raises:
        InputError: listing every problem, each with its JSON pointer.
    """
    if not isinstance(inputs, dict):
        raise InputError(
            f"the inputs of pattern {pattern.id} must be a JSON object, got {type(inputs).__name__}"
        )
    from jsonschema import Draft202012Validator
    from referencing import Registry

    check_json_value(inputs, kind=f"the inputs of pattern {pattern.id}")
    prepared = copy.deepcopy(inputs)
    for name, spec in pattern.inputs.get("properties", {}).items():
        if name not in prepared and isinstance(spec, dict) and "default" in spec:
            prepared[name] = copy.deepcopy(spec["default"])
    # An empty registry: even a reference that slipped past bound_errors is never fetched.
    validator = Draft202012Validator(pattern.inputs, registry=Registry())
    found = sorted(validator.iter_errors(prepared), key=lambda e: list(map(str, e.absolute_path)))
    if found:
        errors = [{"pointer": _pointer(e.absolute_path), "message": e.message} for e in found]
        raise InputError(
            f"invalid inputs for pattern {pattern.id}: "
            + "; ".join(f"{e['pointer'] or '/'}: {e['message']}" for e in errors),
            details={"errors": errors, "schema": pattern.inputs},
        )
    return prepared


def is_reference(value: Any) -> bool:
    """Whether ``value`` is a reference object: ``{"$ref": ...}`` with optional ``where`` / ``fields``."""
    return isinstance(value, dict) and "$ref" in value and set(value) <= REFERENCE_KEYS


def _references(value: Any, pointer: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every reference object inside ``value``, with its pointer."""
    if is_reference(value):
        yield pointer, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _references(item, f"{pointer}/{_escape(key)}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _references(item, f"{pointer}/{i}")


class _Scope:
    """What references may name at one place in a pattern: the inputs, the steps before it, and
    (in the args of a ``for_each`` step) the item."""

    def __init__(
        self,
        pattern: Pattern,
        outputs: dict[str, dict[str, Any]],
        error: Callable[[str, str], None],
        item: tuple[dict[str, Any], dict[str, Any]] | None = None,
    ):
        self.pattern = pattern
        self.outputs = outputs
        self.error = error
        self.item = item  # (the item's schema, the schema its $refs resolve in)

    def for_items(self, reference: Any, pointer: str) -> _Scope:
        """The scope of a ``for_each`` step's args: this one plus the items of ``reference``."""
        if not is_reference(reference):
            self.error(pointer, "'for_each' must be a reference {\"$ref\": ...} to a list")
            return self
        found = self.check(reference, pointer)
        if found is None:
            return self
        schema, root = found
        item = _field_schema(schema, root, "0")
        if item is None:
            self.error(
                f"{pointer}/$ref", f"'{reference['$ref']}' is not a list; 'for_each' needs one"
            )
            return self
        return _Scope(self.pattern, self.outputs, self.error, (item, root))

    def check_condition(self, condition: Condition, pointer: str) -> None:
        self.check({"$ref": condition.ref}, pointer, ref_pointer=f"{pointer}/ref")
        for ref_pointer, ref in _references(condition.value, f"{pointer}/value"):
            self.check(ref, ref_pointer)

    def check(
        self, reference: dict[str, Any], pointer: str, ref_pointer: str | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Report a reference that does not resolve; return (schema, root) of what it names.

        A reference must point backwards (to the inputs or an earlier step) and name a field that
        exists in the inputs schema or the step's output schema; ``where`` and ``fields`` must
        name fields of the referenced list's items.
        """
        ref, ref_pointer = reference["$ref"], ref_pointer or f"{pointer}/$ref"
        if not isinstance(ref, str) or not re.fullmatch(REFERENCE, ref):
            self.error(
                ref_pointer,
                f"{json.dumps(ref)} is not a reference; write 'inputs.<field>', "
                "'steps.<step>.<field>' or, in a for_each step's args, 'item.<field>'",
            )
            return None
        root_name, *path = ref.split(".")
        if root_name == "item":
            if self.item is None:
                self.error(
                    ref_pointer,
                    f"'{ref}': 'item' is only defined in the args of a step with for_each",
                )
                return None
            (current, root), where = self.item, "the for_each item"
        elif root_name == "inputs":
            current = root = self.pattern.inputs
            where = "the inputs schema"
        elif root_name == "approvals":
            gate_id, path = path[0], path[1:]
            if f"approvals.{gate_id}" not in self.outputs:
                self.error(
                    ref_pointer,
                    f"'{ref}' refers to approval gate '{gate_id}', which does not stand before "
                    "this point (or does not exist)",
                )
                return None
            current = root = self.outputs[f"approvals.{gate_id}"]
            where = f"the decision of gate '{gate_id}'"
        else:
            step_id, path = path[0], path[1:]
            if step_id not in self.outputs:
                later = step_id in {s.id for s in self.pattern.steps}
                self.error(
                    ref_pointer,
                    f"'{ref}' refers to step '{step_id}', which "
                    + ("does not run before this point" if later else "does not exist")
                    + f"; earlier steps: {', '.join(k for k in self.outputs if '.' not in k) or '(none)'}",
                )
                return None
            current = root = self.outputs[step_id]
            if current is _UNKNOWN_OUTPUT:
                return None  # its unknown capability is reported already
            where = f"the output of step '{step_id}'"
        for depth, segment in enumerate(path):
            found = _field_schema(current, root, segment)
            if found is None:
                under = f" under '{'.'.join(path[:depth])}'" if depth else ""
                self.error(ref_pointer, f"'{ref}': {where} has no field '{segment}'{under}")
                return None
            current = found
        if "where" in reference or "fields" in reference:
            self._check_selection(reference, pointer, current, root)
        return current, root

    def _check_selection(
        self, reference: dict[str, Any], pointer: str, schema: dict[str, Any], root: dict[str, Any]
    ) -> None:
        ref = reference["$ref"]
        item = _field_schema(schema, root, "0")
        if item is None:
            self.error(
                pointer, f"'{ref}' is not a list; 'where' and 'fields' apply to lists of objects"
            )
            return
        where_clause, fields = reference.get("where", {}), reference.get("fields", [])
        if not isinstance(where_clause, dict):
            self.error(f"{pointer}/where", "'where' must be an object {field: value}")
            where_clause = {}
        named: list[tuple[Any, str]] = [(k, f"{pointer}/where/{_escape(k)}") for k in where_clause]
        if isinstance(fields, list):
            named += [(f, f"{pointer}/fields/{i}") for i, f in enumerate(fields)]
        elif isinstance(fields, dict):
            named += [(f, f"{pointer}/fields/{_escape(new)}") for new, f in fields.items()]
        else:
            self.error(
                f"{pointer}/fields",
                "'fields' must be a list of field names or an object {new name: field}",
            )
        for key, at in named:
            if not isinstance(key, str) or _field_schema(item, root, key) is None:
                self.error(at, f"the items of '{ref}' have no field {json.dumps(key)}")


def _check_decided_by_a_gate(
    step: Step, visible: dict[str, Any], pointer: str, error: Callable[[str, str], None]
) -> None:
    """A step that writes (books trades) must take its ``decision`` from an earlier approval gate.

    The decision is then the one a person recorded at that gate (who, when, the note), never a
    value written into the pattern file.
    """
    decision = step.args.get("decision")
    gate = decision.get("$ref", "") if is_reference(decision) else ""
    if not (gate.startswith("approvals.") and gate in visible):
        gates = sorted(k for k in visible if k.startswith("approvals."))
        error(
            pointer,
            f"{step.capability} changes a portfolio, so its 'decision' must be "
            '{"$ref": "approvals.<gate>"} of an approval gate before this step'
            + (f"; gates before it: {', '.join(gates)}" if gates else "; there is no gate before it"),
        )


def _list_of(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema of a list of ``schema`` (a for_each step's output), keeping its ``$defs`` at the root."""
    items = {k: v for k, v in schema.items() if k != "$defs"}
    return {"type": "array", "items": items, "$defs": schema.get("$defs", {})}


def _field_schema(
    schema: dict[str, Any] | None, root: dict[str, Any], segment: str
) -> dict[str, Any] | None:
    """The schema of field ``segment`` (a name, or an index into a list) of ``schema``, if it has one."""
    if schema is None:
        return None
    while "$ref" in schema and schema["$ref"].startswith("#/$defs/"):
        schema = root.get("$defs", {}).get(schema["$ref"].removeprefix("#/$defs/"), {})
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            found = _field_schema(option, root, segment)
            if found is not None:
                return found
    if segment.isdigit():
        items = schema.get("items")
        return items if isinstance(items, dict) else None
    properties = schema.get("properties", {})
    if segment in properties:
        return properties[segment]
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def _pattern_error(source: str, errors: list[dict[str, str]]) -> PatternError:
    lines = "\n".join(f"  {e['pointer'] or '/'}: {e['message']}" for e in errors)
    return PatternError(
        f"{source} is not a valid pattern ({len(errors)} problem{'s' if len(errors) != 1 else ''}):\n{lines}",
        details={"source": source, "errors": errors},
    )


def _pointer(path: Any) -> str:
    return "".join(f"/{_escape(str(p))}" for p in path)


def _escape(token: str) -> str:
    """A JSON pointer reference token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")
