"""A pattern run's report as readable text: what ran, the outputs, and what to do next.

Outputs are rendered by shape, so any pattern reads well: a list of records becomes a table
(trades get their usual columns), a mapping of ``{"before": ..., "after": ...}`` pairs becomes a
before/after table, other mappings become ``name: value`` lines.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

# Columns shown first, in this order, when the records have them (trades, hedges, contributors).
_PREFERRED = (
    "symbol",
    "action",
    "quantity",
    "instrument",
    "price",
    "trade_value",
    "notional",
    "current_weight_pct",
    "target_weight_pct",
    "weight_pct",
    "expected_offset",
    "hedge_ratio",
    "estimated_cost",
)
_MAX_CELL = 28
_MAX_COLUMNS = 8


def render_report(report: dict[str, Any]) -> str:
    """The report of ``OptimizerAgent.run_pattern`` / ``resume_run`` as plain text."""
    pattern = report["pattern"]
    lines = [
        f"run {report['run_id']}: pattern {pattern['id']} v{pattern['version']}, status {report['status']}",
        "",
    ]
    lines.append("steps:")
    for step_id, record in report["steps"].items():
        detail = record.get("reason") or (record.get("error") or {}).get("message") or ""
        lines.append(
            f"  {step_id:<14} {record['status']:<8} {record['capability']}"
            + (f"  ({detail})" if detail else "")
        )
    for gate_id, record in report["approvals"].items():
        lines.append(f"  {gate_id:<14} {record['status']:<8} approval gate" + _decision(record))
    for name, value in report["outputs"].items():
        lines += ["", f"{name}:", *_render(value)]
    pending = report.get("pending_approval")
    if pending:
        lines += [
            "",
            f"waiting for approval at gate '{pending['gate']}': {pending['message']}",
            f"  because {pending['reason']}",
        ]
        lines += [f"  {k}: {_cell(v, wide=True)}" for k, v in pending.get("show", {}).items()]
        lines.append(
            f"  resume with `optimizer resume {report['run_id']} --approve` "
            f"(or --reject; add --note TEXT to record why)"
        )
    if report.get("halted"):
        lines += ["", f"halted: {report['halted']['reason']}"]
    return "\n".join(lines)


def _decision(record: dict[str, Any]) -> str:
    parts = [
        p
        for p in (
            record.get("reason"),
            record.get("by") and f"by {record['by']}",
            record.get("note") and f"note: {record['note']}",
        )
        if p
    ]
    return f"  ({'; '.join(parts)})" if parts else ""


def _render(value: Any) -> list[str]:
    if _is_records(value):
        lines = ["  " + line for line in _records_table(value).splitlines()]
        # Nested records (e.g. each scenario's hedges) follow as tables of their own.
        label = next(iter(value[0]))
        for record in value:
            for key, nested in record.items():
                if _is_records(nested):
                    lines += ["", f"  {record[label]} {key}:"]
                    lines += ["    " + line for line in _records_table(nested).splitlines()]
        return lines
    if isinstance(value, dict) and value and all(_is_pair(v) for v in value.values()):
        rows = [
            [name, _cell(v["before"]), _cell(v["after"]), _delta(v["before"], v["after"])]
            for name, v in value.items()
        ]
        return [
            "  " + line
            for line in table(
                ["metric", "before", "after", "change"], rows, right={1, 2, 3}
            ).splitlines()
        ]
    if isinstance(value, dict):
        return [f"  {k}: {_cell(v, wide=True)}" for k, v in value.items()] or ["  (none)"]
    if isinstance(value, list) and not value:
        return ["  (none)"]
    return [f"  {_cell(value, wide=True)}"]


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _is_pair(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"before", "after"}


def _records_table(records: list[dict[str, Any]]) -> str:
    scalar = [k for k in records[0] if all(not isinstance(r.get(k), (dict, list)) for r in records)]
    # Long free text (rationales, descriptions) and the less telling columns would make the table
    # unreadable; they stay in --json.
    short = [k for k in scalar if all(len(_cell(r.get(k))) <= _MAX_CELL for r in records)]
    columns = ([k for k in _PREFERRED if k in short] + [k for k in short if k not in _PREFERRED])[
        :_MAX_COLUMNS
    ]
    rows = [[_cell(r.get(k)) for k in columns] for r in records]
    numeric = {
        i
        for i, k in enumerate(columns)
        if all(
            isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)
            for r in records
            if r.get(k) is not None
        )
        and any(r.get(k) is not None for r in records)
    }
    return table(columns, rows, right=numeric)


def _delta(before: Any, after: Any) -> str:
    if (
        isinstance(before, (int, float))
        and isinstance(after, (int, float))
        and not isinstance(before, bool)
    ):
        change = after - before
        return ("+" if change >= 0 else "-") + _cell(abs(float(change)))
    return ""


def _cell(value: Any, wide: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        # Money and other large numbers to the cent; small ones (weights, ratios) to 4 decimals.
        return f"{value:,.2f}" if abs(value) >= 1000 else f"{value:.4f}".rstrip("0").rstrip(".")
    if isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
        return text if wide or len(text) <= _MAX_CELL else text[: _MAX_CELL - 3] + "..."
    return str(value)


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int] | None = None
) -> str:
    """Aligned plain-text table; columns in ``right`` (numbers) are right-aligned."""
    right = right or set()
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])
