"""Drift from a target: per-symbol current vs target weight and whether a rebalance is due.

A rebalance is due for any of three reasons, all reported: a weight outside its band (absolute
points, default 5; optionally also relative to the target weight), a schedule date passed since
the last booked rebalance, or a cash flow to invest or raise. Weights are of the portfolio's
value at the pack's closes on ``asof`` (holdings plus cash); the cash left of 100% of the target
is the cash target. Nothing here reads the clock: "today" is ``asof``, a trading date of the pack.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from services.allocation.costs import cents, to_decimal
from services.allocation.proposal import Money, pct
from services.data.models import PricingPack
from services.errors import InputError
from services.lifecycle.calendar import check_trading_date, schedule_due

DEFAULT_BAND_PCT = 5.0
CASH = "CASH"


class SymbolDrift(BaseModel):
    model_config = ConfigDict(frozen=True)

    symbol: str = Field(description="Ticker, or CASH for the cash line.")
    shares: int | None = Field(description="Shares held (null for the cash line).")
    price: float | None = Field(description="Close on asof (the last close before it if none that day).")
    value: Money = Field(description="Value on asof.")
    current_weight_pct: float
    target_weight_pct: float
    drift_pct: float = Field(description="current − target, in percentage points.")
    relative_drift_pct: float | None = Field(
        description="drift as % of the target weight; null when the target is 0."
    )
    breached: bool = Field(description="Outside the absolute band, or the relative band if set.")


class DriftReport(BaseModel):
    """The answer of ``optimizer.check_drift``."""

    model_config = ConfigDict(frozen=True)

    portfolio_id: str
    pricing_pack_id: str
    asof: str
    target_version: int
    target_policy_id: str | None
    portfolio_value: Money
    cash_flow: Money = Field(description="Deposit (+) or withdrawal (−) to invest or raise.")
    band_pct: float = Field(description="Absolute band in percentage points.")
    relative_band_pct: float | None = Field(description="Relative band, % of each target weight.")
    schedule: str | None
    last_rebalance: str | None = Field(description="asof of the last booked rebalance.")
    schedule_date: str | None = Field(description="This period's schedule date on the pack's calendar.")
    drifts: list[SymbolDrift] = Field(description="Every held or targeted symbol, then CASH.")
    largest_drift: SymbolDrift | None = Field(description="The line with the largest |drift_pct|.")
    rebalance_due: bool
    reasons: list[str] = Field(description="Why a rebalance is due (empty when it is not).")
    explanation: str = Field(description="One sentence: the verdict and why.")
    approval_threshold: Money = Field(
        description="The policy's approval threshold: trades worth more need a person's approval."
    )


def check_drift(
    pack: PricingPack,
    *,
    portfolio_id: str,
    positions: dict[str, int],
    cash: Decimal,
    target: dict[str, object],
    asof: date | None = None,
    band_pct: float = DEFAULT_BAND_PCT,
    relative_band_pct: float | None = None,
    schedule: str | None = None,
    last_rebalance: date | None = None,
    cash_flow: Decimal = Decimal("0"),
    approval_threshold: Decimal = Decimal("10000"),
) -> DriftReport:
    """Drift of ``positions`` + ``cash`` from ``target`` (a stored target's dict) on ``asof``."""
    day = check_trading_date(pack, asof or pack.asof)
    closes = pack.closes.loc[: day.isoformat()].ffill().iloc[-1]
    weights_pct: dict[str, float] = dict(target["weights_pct"])  # type: ignore[call-overload]
    unpriced = sorted(s for s in positions if s not in closes.index or closes[s] != closes[s])
    if unpriced:
        raise InputError(
            f"portfolio {portfolio_id}: no close on or before {day.isoformat()} in pack {pack.id} for "
            f"{', '.join(unpriced)}",
            details={"field": "portfolio", "unpriced": unpriced},
        )
    values = {s: cents(n * to_decimal(float(closes[s]))) for s, n in positions.items()}
    total = sum(values.values(), Decimal("0.00")) + cents(cash)
    rows: list[SymbolDrift] = []
    for sym in sorted(set(positions) | set(weights_pct)):
        price = float(closes[sym]) if sym in closes.index and closes[sym] == closes[sym] else None
        value = values.get(sym, Decimal("0.00"))
        rows.append(_row(sym, positions.get(sym, 0), price, value, total, weights_pct.get(sym, 0.0),
                         band_pct, relative_band_pct))
    cash_target = max(0.0, 100.0 - sum(weights_pct.values()))
    rows.append(_row(CASH, None, None, cents(cash), total, cash_target, band_pct, relative_band_pct))

    reasons: list[str] = []
    breached = [r for r in rows if r.breached]
    if breached:
        worst = max(breached, key=lambda r: (abs(r.drift_pct), r.symbol))
        reasons.append(
            f"threshold: {len(breached)} line(s) outside the band, largest {worst.symbol} at "
            f"{worst.current_weight_pct:.2f}% vs target {worst.target_weight_pct:.2f}% "
            f"({worst.drift_pct:+.2f} points; band {band_pct:g} points"
            + (f", {relative_band_pct:g}% relative" if relative_band_pct is not None else "") + ")"
        )
    when = None
    if schedule is not None:
        due, when, why = schedule_due(pack, day, schedule, last_rebalance)
        if due:
            reasons.append(why)
    if cash_flow > 0:
        reasons.append(f"cash flow: deposit of ${cents(cash_flow):,.2f} to invest")
    elif cash_flow < 0:
        reasons.append(f"cash flow: withdrawal of ${cents(-cash_flow):,.2f} to raise")
    largest = max(rows, key=lambda r: (abs(r.drift_pct), r.symbol)) if rows else None
    if reasons:
        explanation = "rebalance due: " + "; ".join(reasons)
    else:
        explanation = (
            f"no rebalance due: every line is within {band_pct:g} points of its target"
            + (f" and {relative_band_pct:g}% of it" if relative_band_pct is not None else "")
            + (f" (largest {largest.symbol} {largest.drift_pct:+.2f} points)" if largest else "")
            + (f"; the {schedule} schedule date {when.isoformat()} is not after the last rebalance"
               if schedule is not None and when is not None else "; no schedule")
            + "; no cash flow"
        )
    return DriftReport(
        portfolio_id=portfolio_id,
        pricing_pack_id=pack.id,
        asof=day.isoformat(),
        target_version=int(target["version"]),  # type: ignore[call-overload]
        target_policy_id=target.get("policy_id"),  # type: ignore[arg-type]
        portfolio_value=total,
        cash_flow=cents(cash_flow),
        band_pct=band_pct,
        relative_band_pct=relative_band_pct,
        schedule=schedule,
        last_rebalance=None if last_rebalance is None else last_rebalance.isoformat(),
        schedule_date=None if when is None else when.isoformat(),
        drifts=rows,
        largest_drift=largest,
        rebalance_due=bool(reasons),
        reasons=reasons,
        explanation=explanation,
        approval_threshold=cents(approval_threshold),
    )


def _row(sym: str, shares: int | None, price: float | None, value: Decimal, total: Decimal,
         target_pct: float, band: float, relative_band: float | None) -> SymbolDrift:
    current = pct(float(value / total)) if total > 0 else 0.0
    assert current is not None
    # Compared at the reported precision, so exactly 5.0000 points is on the band, not over it.
    drift = round(current - target_pct, 4) + 0.0
    relative = round(drift / target_pct * 100, 4) + 0.0 if target_pct > 0 else None
    breached = abs(drift) > band or (
        relative_band is not None and relative is not None and abs(relative) > relative_band
    )
    return SymbolDrift(
        symbol=sym, shares=shares, price=price, value=value, current_weight_pct=current,
        target_weight_pct=round(target_pct, 4) + 0.0, drift_pct=drift, relative_drift_pct=relative,
        breached=breached,
    )
