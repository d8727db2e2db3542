"""``optimizer.check_drift``: how far a stored portfolio has drifted from its target, and whether to rebalance."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from capabilities.base import Capability, RequestContext, Services
from capabilities.views import DETAIL_DESCRIPTION, Detail, Summary
from services.data.bounds import MAX_AMOUNT
from services.data.policy import PolicyOverrides, omit_if_null, resolve_policy
from services.lifecycle import preferences
from services.lifecycle.calendar import Schedule
from services.lifecycle.drift import DEFAULT_BAND_PCT, DriftReport, SymbolDrift, check_drift


class CheckDriftInput(BaseModel):
    """Compare a stored portfolio with its stored target on a trading date of a pack."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    portfolio_id: str = Field(min_length=1, description="A stored portfolio that has a target (`optimizer targets set`).")
    pricing_pack_id: str = Field(min_length=1, description="Pricing pack to value the holdings from, e.g. 'PP_2022-12-28'.")
    asof: dt.date | None = Field(
        None, description="A trading date of the pack to judge on ('today'); default the pack's asof."
    )
    band_pct: float | None = Field(
        None, gt=0, le=100, exclude_if=omit_if_null,
        description="Absolute band in percentage points: a weight more than this from its target is a breach. "
        f"Default: the portfolio's preference (`optimizer preferences set`), else {DEFAULT_BAND_PCT:g}.",
    )
    relative_band_pct: float | None = Field(
        None, gt=0, description="Optional relative band, % of each target weight (25 = ±25% of the target). "
        "Default: the portfolio's preference, else none."
    )
    schedule: Schedule | Literal["none"] | None = Field(
        None, description="Calendar schedule: daily, weekly, monthly or quarterly (first trading date of each "
        "period on the pack's calendar, judged against the last booked rebalance); 'none' for bands only. "
        "Default: the portfolio's preference, else none."
    )
    cash_flow: Decimal = Field(
        Decimal("0"), allow_inf_nan=False, ge=-MAX_AMOUNT, le=MAX_AMOUNT, strict=False, description="Deposit (positive) or withdrawal (negative) to invest or raise."
    )
    policy_id: str | None = Field(
        None, description="Policy template whose approval_threshold is reported when neither the request's policy "
        "nor the portfolio's preferences set one."
    )
    policy: PolicyOverrides | None = Field(None, description="Policy fields overriding the template.")
    detail: Detail = Field("full", description=DETAIL_DESCRIPTION)


def handle(request: CheckDriftInput, ctx: RequestContext, services: Services) -> DriftReport:
    pack = services.store.get_pack(request.pricing_pack_id)
    portfolio = services.store.get_portfolio(request.portfolio_id)
    target = services.store.get_target(request.portfolio_id)
    template = services.store.get_policy_template(request.policy_id)[0] if request.policy_id else None
    policy = resolve_policy(services.constraint_defaults, template, request.policy, policy_id=request.policy_id)
    prefs = preferences.current(services.store, portfolio.id)
    policy = preferences.with_approval_threshold(policy, prefs, request.policy)
    band_pct, relative_band_pct, schedule = preferences.drift_settings(
        prefs, band_pct=request.band_pct, relative_band_pct=request.relative_band_pct, schedule=request.schedule
    )
    return check_drift(
        pack,
        portfolio_id=portfolio.id,
        positions=portfolio.positions(),
        cash=portfolio.cash,
        target=target,
        asof=request.asof,
        band_pct=band_pct,
        relative_band_pct=relative_band_pct,
        schedule=schedule,
        last_rebalance=services.store.last_booked_asof(portfolio.id),
        cash_flow=request.cash_flow,
        approval_threshold=policy.approval_threshold,
    )


class DriftSummary(Summary):
    """The verdict, why, and the lines outside their band (the full view lists every symbol)."""

    portfolio_id: str
    pricing_pack_id: str
    asof: str
    target_version: int
    portfolio_value: float
    rebalance_due: bool
    reasons: list[str]
    explanation: str
    largest_drift: SymbolDrift | None
    breached: list[SymbolDrift] = Field(description="Lines outside their band, largest |drift_pct| first.")
    approval_threshold: float

    @model_validator(mode="before")
    @classmethod
    def _breached_lines(cls, full: Any) -> Any:
        if isinstance(full, dict) and "drifts" in full:
            lines = [d for d in full["drifts"] if d["breached"]]
            full = {**full, "breached": sorted(lines, key=lambda d: (-abs(d["drift_pct"]), d["symbol"]))}
        return full


CHECK_DRIFT = Capability(
    name="optimizer.check_drift",
    description=(
        "Check how far a stored portfolio has drifted from its target weights on a trading date of a "
        "pricing pack, and whether a rebalance is due (band breached, schedule date passed, or a cash flow)."
    ),
    input_model=CheckDriftInput,
    output_model=DriftReport,
    summary_model=DriftSummary,
    handler=handle,
    # Booking changes the answer; a cached verdict could miss a rebalance just booked.
    ttl_seconds=0,
)
