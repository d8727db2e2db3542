"""Reading the rebalance history: one line per rebalance, and the order file of a booked one."""

from __future__ import annotations

import csv
import io
from typing import Any

from services.errors import NotFoundError

ORDER_COLUMNS = ("symbol", "side", "quantity", "limit_price", "estimated_cost")


def summary_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per rebalance: id, status, asof, versions, who, trade count, value, costs and the weights
    before and after for every symbol that was or is held (CASH included)."""
    out = []
    for h in history:
        before, after = h["weights_before_pct"], h["weights_after_pct"]
        out.append({
            "id": h["id"], "status": h["status"], "asof": h["asof"], "run_id": h["run_id"],
            "pricing_pack_id": h["pricing_pack_id"], "version_before": h["version_before"],
            "version_after": h["version_after"], "approved_by": h["approved_by"], "note": h["note"],
            "trade_count": len(h["trades"]), "total_trade_value": h["total_trade_value"],
            "estimated_costs": h["estimated_costs"], "cash_before": h["cash_before"],
            "cash_after": h["cash_after"] if h["status"] == "booked" else h["cash_before"],
            "weights": [
                {"symbol": s, "before_pct": before.get(s, 0.0), "after_pct": after.get(s, 0.0)}
                for s in sorted(set(before) | set(after))
            ],
        })
    return out


def orders_csv(history: list[dict[str, Any]], run_id: str) -> str:
    """The booked orders of run ``run_id`` as CSV for a broker or OMS (limit price = the pack's close).

    Raises:
        NotFoundError: the run booked nothing (no booking, or only a rejection).
    """
    booked = [h for h in history if h["run_id"] == run_id and h["status"] == "booked"]
    if not booked:
        rejected = any(h["run_id"] == run_id for h in history)
        raise NotFoundError(
            f"run '{run_id}' has no booked orders" + (" (its trades were rejected)" if rejected else ""),
            details={"field": "run_id", "value": run_id},
        )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(ORDER_COLUMNS)
    for h in booked:
        for t in h["trades"]:
            writer.writerow([t["symbol"], t["side"], t["quantity"], f"{t['price']:.4f}",
                             f"{t['estimated_cost']:.2f}"])
    return buffer.getvalue()
