"""The README's policy reference covers exactly the fields the policy model accepts."""

from __future__ import annotations

import re
from pathlib import Path

from services.data.policy import PolicyOverrides

README = Path(__file__).resolve().parents[1] / "README.md"


def test_policy_reference_lists_every_field_and_no_other() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Policy fields", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE))
    templates = {"quality_focused", "aggressive_growth", "conservative_income"}
    assert rows - templates == set(PolicyOverrides.model_fields)
