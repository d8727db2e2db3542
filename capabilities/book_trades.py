"""``optimizer.book_trades``: book approved trades into a stored portfolio, or record their rejection."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from capabilities.analyze_impact import ProposedTradeIn
from capabilities.base import Capability, RequestContext, Services
from capabilities.views import DETAIL_DESCRIPTION, Detail, Summary
from services.allocation.proposal import Money
from services.data.bounds import MAX_AMOUNT
from services.data.policy import PolicyOverrides, resolve_policy
from services.errors import InputError
from services.lifecycle import preferences
from services.lifecycle.booking import BookedTrade, Order, book


class Decision(BaseModel):
    """An approval gate's record, as a pattern passes it (``approvals.<gate id>``)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["approved", "rejected", "not_required"] = Field(
        description="approved or not_required books the trades; rejected records the rejection only."
    )
    reason: str | None = Field(None, description="Why the gate asked (or did not).")
    by: str | None = Field(None, description="Who decided (null: the local operator).")
    note: str | None = Field(None, description="The approver's note.")


class BookTradesInput(BaseModel):
    """Apply trades to a stored portfolio as its next version, with history."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    portfolio_id: str = Field(min_length=1, description="The stored portfolio to book into.")
    pricing_pack_id: str = Field(min_length=1, description="The pack whose closes price the trades.")
    trades: list[ProposedTradeIn] = Field(  # type: ignore[valid-type]
        description="The trades: a propose_trades result's 'trades' as they are, or {symbol, action, quantity}."
    )
    policy_id: str | None = Field(
        None, description="Policy template (its costs price the trades; it is recorded). The approval threshold "
        "is the request policy's, else the portfolio's preference, else the template's, else 10000."
    )
    policy: PolicyOverrides | None = Field(None, description="Policy fields overriding the template.")
    cash_flow: Decimal = Field(
        Decimal("0"), allow_inf_nan=False, ge=-MAX_AMOUNT, le=MAX_AMOUNT, strict=False,
        description="The deposit (positive) or withdrawal (negative) the trades invest or raise; booked with them.",
    )
    detail: Detail = Field("full", description=DETAIL_DESCRIPTION)
    decision: Decision = Field(
        default_factory=lambda: Decision(status="not_required"),
        description="The approval decision; default not_required (book).",
    )


class BookingResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    portfolio_id: str
    pricing_pack_id: str
    asof: str
    status: Literal["booked", "rejected"]
    rebalance_id: int = Field(description="The history row (`optimizer history PORTFOLIO`).")
    version_before: int
    version_after: int | None = Field(description="The portfolio's new version; null when rejected.")
    trades: list[BookedTrade]
    total_trade_value: Money
    estimated_costs: Money
    cash_before: Money
    cash_flow: Money = Field(description="Deposit (+) or withdrawal (−) booked with the trades (0 when rejected).")
    cash_after: Money = Field(
        description="cash before + cash flow − buys + sells − costs (unchanged when rejected)."
    )
    weights_before_pct: dict[str, float]
    weights_after_pct: dict[str, float]
    approved_by: str | None
    note: str | None


def handle(request: BookTradesInput, ctx: RequestContext, services: Services) -> BookingResult:
    pack = services.store.get_pack(request.pricing_pack_id)
    before = services.store.get_portfolio(request.portfolio_id)
    template = services.store.get_policy_template(request.policy_id)[0] if request.policy_id else None
    policy = resolve_policy(services.constraint_defaults, template, request.policy, policy_id=request.policy_id)
    prefs = preferences.current(services.store, before.id)
    policy = preferences.with_approval_threshold(policy, prefs, request.policy)
    orders = [Order(t.symbol, t.action, t.quantity) for t in request.trades if t.action != "HOLD" and t.quantity > 0]
    booking = book(pack, before, orders, policy, request.cash_flow,
                   restricted=frozenset(prefs.restricted_symbols), frozen=frozenset(prefs.frozen_symbols))
    rejected = request.decision.status == "rejected"
    if request.decision.status == "not_required" and booking.total_trade_value > policy.approval_threshold:
        raise InputError(
            f"trades worth {booking.total_trade_value} exceed the approval threshold "
            f"{policy.approval_threshold}: they need a person's approval at a pattern's gate "
            "(e.g. `optimizer run drift_rebalance`), not decision 'not_required'",
            details={"field": "decision", "value": "not_required",
                     "total_trade_value": str(booking.total_trade_value),
                     "approval_threshold": str(policy.approval_threshold)},
        )
    details = booking.details(policy)
    if rejected:
        details["weights_after_pct"] = details["weights_before_pct"]
        details["positions_after"] = before.positions()
    row = services.store.book_rebalance(
        before,
        None if rejected else booking.after,
        {
            "status": "rejected" if rejected else "booked",
            # A pattern's steps run under the run id as trace id: `optimizer orders RUN_ID` finds it.
            "run_id": ctx.trace_id,
            "pricing_pack_id": pack.id,
            "asof": pack.asof,
            "approved_by": request.decision.by,
            "note": request.decision.note,
            "details": details,
        },
    )
    return BookingResult(
        portfolio_id=before.id, pricing_pack_id=pack.id, asof=pack.asof.isoformat(),
        status=row["status"], rebalance_id=row["id"], version_before=row["version_before"],
        version_after=row["version_after"], trades=booking.trades,
        total_trade_value=booking.total_trade_value, estimated_costs=booking.estimated_costs,
        cash_before=booking.cash_before, cash_flow=Decimal("0.00") if rejected else booking.cash_flow,
        cash_after=before.cash if rejected else booking.cash_after,
        weights_before_pct=booking.weights_before,
        weights_after_pct=booking.weights_before if rejected else booking.weights_after,
        approved_by=request.decision.by, note=request.decision.note,
    )


class BookingSummary(Summary):
    """What was booked (or rejected): the version, the totals and who decided."""

    portfolio_id: str
    pricing_pack_id: str
    asof: str
    status: str
    rebalance_id: int
    version_before: int
    version_after: int | None
    total_trade_value: float
    estimated_costs: float
    cash_before: float
    cash_flow: float
    cash_after: float
    approved_by: str | None
    note: str | None


BOOK_TRADES = Capability(
    name="optimizer.book_trades",
    description=(
        "Book approved trades into a stored portfolio as its next version (positions, cash after costs, "
        "FIFO tax lots) with a history record, or record a rejection and book nothing."
    ),
    input_model=BookTradesInput,
    output_model=BookingResult,
    summary_model=BookingSummary,
    handler=handle,
    # A write: never served from the cache, and it empties the cache of results it may invalidate.
    ttl_seconds=0,
    writes=True,
)
