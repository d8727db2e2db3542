"""Request pieces shared by capabilities: the portfolio (stored or inline) and the pack id."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from capabilities.base import Services
from capabilities.views import DETAIL_DESCRIPTION, Detail
from services.allocation.rebalance import Holdings
from services.data.bounds import MAX_AMOUNT, MAX_SHARES
from services.data.models import Lot
from services.data.policy import Policy
from services.tax.lots import TaxSettings
from services.tax.wash import BookedBuy, BookedSale, WashHistory, in_window

# Requests are strict: a number must be a JSON number (no "5" or true as 5 or 1 shares). Money
# fields (Decimal) also take decimal strings such as "2500.50", the lossless way to write cents.
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class PositionIn(BaseModel):
    model_config = STRICT

    symbol: str = Field(min_length=1, max_length=64, description="Ticker as it appears in the pricing pack.")
    shares: int = Field(ge=0, le=MAX_SHARES, description="Whole shares held (no short positions).")


class PortfolioIn(BaseModel):
    """An inline portfolio: positions and cash, not stored anywhere."""

    model_config = STRICT

    positions: list[PositionIn] = Field(default_factory=list, description="Holdings, one per symbol.")
    cash: Decimal = Field(
        Decimal("0"), ge=0, le=MAX_AMOUNT, allow_inf_nan=False, strict=False,
        description="Cash in the portfolio currency (a number or a decimal string).",
    )

    @field_validator("positions")
    @classmethod
    def _unique_symbols(cls, positions: list[PositionIn]) -> list[PositionIn]:
        seen: set[str] = set()
        dupes = sorted({p.symbol for p in positions if p.symbol in seen or seen.add(p.symbol)})
        if dupes:
            raise ValueError(f"each symbol may appear once; repeated: {', '.join(dupes)}")
        return positions


class PortfolioRequest(BaseModel):
    """Base of every request about one portfolio priced from one pack."""

    model_config = STRICT

    portfolio_id: str | None = Field(None, description="Id of a stored portfolio (give this or 'portfolio').")
    portfolio: PortfolioIn | None = Field(None, description="An inline portfolio (give this or 'portfolio_id').")
    pricing_pack_id: str = Field(
        min_length=1, description="Pricing pack to price and estimate from, e.g. 'PP_2022-12-28'."
    )
    detail: Detail = Field("full", description=DETAIL_DESCRIPTION)

    @model_validator(mode="after")
    def _one_portfolio(self) -> PortfolioRequest:
        if (self.portfolio_id is None) == (self.portfolio is None):
            raise ValueError("give exactly one of 'portfolio_id' (a stored portfolio) or 'portfolio' (inline)")
        return self


def resolve_holdings(request: PortfolioRequest, services: Services) -> Holdings:
    """The request's portfolio as whole shares per symbol and cash."""
    return resolve_portfolio(request, services)[0]


def resolve_portfolio(request: PortfolioRequest, services: Services) -> tuple[Holdings, tuple[Lot, ...] | None]:
    """The request's portfolio as whole shares per symbol and cash, and its tax lots (a stored
    portfolio's, in lot order; None for an inline portfolio, which has no lots)."""
    if request.portfolio_id is not None:
        stored = services.store.get_portfolio(request.portfolio_id)
        return Holdings(stored.id, stored.positions(), stored.cash), stored.lots
    assert request.portfolio is not None
    positions = {p.symbol: p.shares for p in sorted(request.portfolio.positions, key=lambda p: p.symbol) if p.shares}
    return Holdings(None, positions, request.portfolio.cash), None


def wash_history(services: Services, portfolio_id: str | None, asof: date) -> WashHistory:
    """The booked trades of a stored portfolio in the wash-sale window before ``asof``: each sale
    with the lots held just before it and the policy it was booked under (which chose its lots)."""
    if portfolio_id is None:
        return WashHistory()
    sales, buys = [], []
    for row in services.store.list_rebalances(portfolio_id):
        when = date.fromisoformat(row["asof"])
        if row["status"] != "booked" or not in_window(when, asof):
            continue
        before = services.store.get_portfolio_version(portfolio_id, row["version_before"]).lots
        tax = TaxSettings.from_policy(Policy.model_validate(row["policy"]))
        for t in row["trades"]:
            if t["side"] == "SELL":
                sales.append(BookedSale(t["symbol"], when, t["quantity"], Decimal(repr(t["price"])), before, tax))
            elif t["side"] == "BUY":
                buys.append(BookedBuy(t["symbol"], when))
    return WashHistory(tuple(sales), tuple(buys))
