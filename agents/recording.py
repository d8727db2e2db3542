"""Record mode for pattern runs: a case directory that a golden test replays.

A case directory holds ``case.json`` (what to run: pattern, inputs, run id, user, and optionally
``resume`` with an approval decision), ``calls/NN_<capability>.json`` (each capability call's
request and response, or error, in order) and ``final_state.json`` (the run's last report).
Library versions are left out of recorded results: they differ between installs, while every
number in a result must not.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

from capabilities.base import RequestContext
from capabilities.runner import canonical_json
from patterns.compiler import CapabilityCaller
from services.errors import OptimizerError


class RecordingCaller:
    """A capability caller that appends each call (phase, capability, request, response or error)."""

    def __init__(self, inner: CapabilityCaller, calls: list[dict[str, Any]], phase: str):
        self._inner = inner
        self._calls = calls
        self._phase = phase

    def run(self, name: str, payload: Any, ctx: RequestContext) -> dict[str, Any]:
        entry: dict[str, Any] = {"phase": self._phase, "capability": name, "request": payload}
        self._calls.append(entry)
        try:
            entry["response"] = self._inner.run(name, payload, ctx)
        except OptimizerError as err:
            entry["error"] = err.to_dict()
            raise
        return entry["response"]


def case_files(
    case: dict[str, Any], calls: list[dict[str, Any]], report: dict[str, Any]
) -> dict[str, Any]:
    """The files of a case directory by relative path, as JSON values.

    In ``final_state.json`` a step output that a recorded call returned is written as
    ``{"$call": "calls/NN_<capability>.json"}``: the response is compared once, in its call file.
    """
    files: dict[str, Any] = {"case.json": case}
    recorded: dict[str, str] = {}
    for number, call in enumerate(calls, start=1):
        name = f"calls/{number:02d}_{call['capability']}.json"
        files[name] = without_versions(call)
        if "response" in call:
            recorded.setdefault(canonical_json(call["response"]), name)

    def pointer(output: Any) -> Any:
        name = recorded.get(canonical_json(output))
        return output if name is None else {"$call": name}

    state = copy.deepcopy(report)
    for record in state["steps"].values():
        if "output" in record:
            output = record["output"]
            record["output"] = (
                [pointer(o) for o in output] if "requests" in record else pointer(output)
            )
    files["final_state.json"] = without_versions(state)
    return files


def write_case(directory: Path, files: dict[str, Any]) -> None:
    """Write a case directory, replacing the calls of an earlier recording."""
    shutil.rmtree(directory / "calls", ignore_errors=True)
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, sort_keys=True, indent=2) + "\n", encoding="utf-8")


def without_versions(value: Any) -> Any:
    """``value`` (JSON) with ``versions`` removed from every ``_metadata``."""
    if isinstance(value, dict):
        out = {k: without_versions(v) for k, v in value.items()}
        if isinstance(out.get("_metadata"), dict):
            out["_metadata"] = {k: v for k, v in out["_metadata"].items() if k != "versions"}
        return out
    if isinstance(value, list):
        return [without_versions(v) for v in value]
    return value
