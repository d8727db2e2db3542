"""Compare a result with its golden file: floats with a small tolerance, everything else exactly.

``_metadata.versions`` is left out of the comparison: library versions differ between installs,
while every number in a result must not.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

REL_TOL = 1e-6
ABS_TOL = 1e-6
IGNORED_PATHS = ("$._metadata.versions",)


def differences(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """Readable differences between two JSON values, one line per differing path."""
    if path in IGNORED_PATHS:
        return []
    if isinstance(expected, bool) or isinstance(actual, bool):
        return [] if expected is actual else [f"{path}: expected {expected!r}, got {actual!r}"]
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        if math.isclose(expected, actual, rel_tol=REL_TOL, abs_tol=ABS_TOL):
            return []
        return [f"{path}: expected {expected!r}, got {actual!r}"]
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in sorted(set(expected) | set(actual)):
            if key not in actual:
                out.append(f"{path}.{key}: missing (expected {_short(expected[key])})")
            elif key not in expected:
                out.append(f"{path}.{key}: unexpected {_short(actual[key])}")
            else:
                out += differences(expected[key], actual[key], f"{path}.{key}")
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        out = [f"{path}: expected {len(expected)} items, got {len(actual)}"] if len(expected) != len(actual) else []
        for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
            out += differences(e, a, f"{path}[{i}]")
        return out
    return [] if expected == actual else [f"{path}: expected {_short(expected)}, got {_short(actual)}"]


def check_golden(expected_file: Path, actual: Any, mode: str) -> list[str]:
    """Compare ``actual`` with ``expected_file`` (or write it, per ``mode``); returns differences."""
    if mode == "always" or (mode == "missing" and not expected_file.exists()):
        expected_file.write_text(json.dumps(actual, sort_keys=True, indent=2) + "\n", encoding="utf-8")
        return []
    if not expected_file.exists():
        return [f"{expected_file} does not exist; run pytest with --golden-update=missing to create it"]
    return differences(json.loads(expected_file.read_text(encoding="utf-8")), actual)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."
