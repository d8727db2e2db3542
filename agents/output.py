"""The one text form of a result that the CLI prints and the HTTP API returns."""

from __future__ import annotations

import json
from typing import Any


def pretty_json(value: Any) -> str:
    """Canonical, readable JSON: sorted keys, two-space indent, one trailing newline.

    ``optimizer call`` prints exactly this, and ``POST /v1/execute`` returns exactly these
    bytes (UTF-8) for the same request, so a result can be compared across the two.
    """
    return json.dumps(value, sort_keys=True, indent=2) + "\n"
