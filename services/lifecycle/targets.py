"""Targets: the weights a portfolio is rebalanced back to, from a CSV file or a proposal.

A target maps symbols to weights in percent of portfolio value; what is left of 100% is the cash
target. Targets are versioned in the store: setting one keeps the previous ones.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from services.errors import InputError, NotFoundError

COLUMNS = ("symbol", "weight_pct")


def parse_weights_csv(path: Path) -> dict[str, float]:
    """``symbol,weight_pct`` rows as {symbol: weight_pct}; every problem is reported at once."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the file ({exc.strerror})", details={"file": str(path)}) from exc
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise InputError(
            f"{path}: the header must be exactly {','.join(COLUMNS)}; got {','.join(reader.fieldnames or [])!r}",
            details={"file": str(path), "expected": list(COLUMNS)},
        )
    weights: dict[str, float] = {}
    problems: list[str] = []
    for line, row in enumerate(reader, start=2):
        sym, raw = (row.get("symbol") or "").strip(), (row.get("weight_pct") or "").strip()
        try:
            value = float(raw)
        except ValueError:
            problems.append(f"line {line}: weight_pct {raw!r} is not a number")
            continue
        if not sym:
            problems.append(f"line {line}: symbol is empty")
        elif sym in weights:
            problems.append(f"line {line}: {sym} appears twice")
        else:
            weights[sym] = value
    if problems:
        raise InputError(f"{path}: " + "; ".join(problems), details={"file": str(path), "problems": problems})
    return check_weights(weights, where=str(path))


def check_weights(weights: dict[str, float], *, where: str = "target") -> dict[str, float]:
    """Weights that are finite, 0-100 each, at most 100 in total, and name at least one symbol."""
    problems = [f"{s}: weight_pct {w!r} must be from 0 to 100" for s, w in sorted(weights.items())
                if not math.isfinite(w) or not 0 <= w <= 100]
    total = sum(w for w in weights.values() if math.isfinite(w))
    if total > 100 + 1e-6:
        problems.append(f"weights sum to {total:g}%, more than 100% (the rest of 100% is the cash target)")
    if not weights:
        problems.append("no weights given")
    if problems:
        raise InputError(f"{where}: " + "; ".join(problems), details={"field": "weights", "problems": problems})
    return {s: w for s, w in sorted(weights.items()) if w > 0}


def weights_from_proposal(row: dict[str, Any], portfolio_id: str) -> tuple[dict[str, float], str | None]:
    """The optimal weights (and policy id) of a recorded ``optimizer.propose_trades`` result."""
    if row["capability"] != "optimizer.propose_trades" or row["portfolio_id"] != portfolio_id:
        raise NotFoundError(
            f"proposal {row['id']} is not an optimizer.propose_trades result for portfolio {portfolio_id}",
            details={"proposal_id": row["id"], "portfolio_id": portfolio_id},
        )
    result = json.loads(row["result_json"])
    weights = {t["symbol"]: t["optimal_weight_pct"] for t in result["trades"] if t["optimal_weight_pct"] > 0}
    return check_weights(weights, where=f"proposal {row['id']}"), result.get("policy_id")
