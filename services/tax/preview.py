"""The tax preview of a list of sales: the lots each sale takes, their gains, and the totals.

Gains are proceeds (shares × the pack's close) less cost basis (shares × basis per share), each
rounded to cents, before trading costs. A lot's estimated tax is its gain × its term's rate, a
loss giving a negative tax (what it saves against other gains); the totals are sums of the
reported per-lot figures, so they add up on paper. Everything is an estimate, not tax advice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from services.tax.lots import TaxLot, TaxSettings, sale_order, take
from services.tax.wash import WashSaleBlock

# The money convention of results (allocation.proposal.Money), declared again because this room
# comes before allocation and may not import it.
Money = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]
CENT = Decimal("0.01")
DISCLAIMER = ("Estimated from the lots' recorded cost basis at the pricing pack's closes, before trading "
              "costs; an estimate for discussion, not tax advice.")


def _cents(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_HALF_UP)


class LotSale(BaseModel):
    """Shares of one lot sold by a proposal or trade list."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    lot_no: int = Field(description="The lot's number in the portfolio (portfolios show ID --json).")
    shares: int
    acquired: str | None = Field(description="ISO date the lot was bought; null if not recorded.")
    term: Literal["short", "long"] = Field(description="long: held more than holding_period_days on the pack's asof.")
    basis_per_share: float | None = Field(description="Recorded cost basis per share; null if not recorded.")
    cost_basis: Money | None = Field(description="shares × basis per share, to the cent.")
    proceeds: Money = Field(description="shares × the pack's close, to the cent.")
    gain: Money | None = Field(description="proceeds − cost_basis (negative: a loss); null without a basis.")
    estimated_tax: Money | None = Field(description="gain × the term's rate; a loss gives a negative tax.")
    forced: bool = Field(description="The sale was forced (quality exclusion, universe, withdrawal).")


class TaxTotals(BaseModel):
    model_config = ConfigDict(frozen=True)

    short_term_gains: Money
    short_term_losses: Money = Field(description="As a positive amount.")
    long_term_gains: Money
    long_term_losses: Money = Field(description="As a positive amount.")
    net_short_term: Money
    net_long_term: Money
    net_realized_gain: Money = Field(description="net_short_term + net_long_term.")
    estimated_tax: Money = Field(description="Σ lots' estimated tax (losses offset gains at their term's rate).")
    tax_saved_by_losses: Money = Field(description="The tax the realized losses offset, as a positive amount.")


class TaxComparison(BaseModel):
    """Tax-aware against tax-blind: the same policy solved without taxes, both at the optimizer's
    continuous weights (before whole shares), so the difference is the optimizer's alone."""

    model_config = ConfigDict(frozen=True)

    objective: str = Field(description="The objective compared (max_sharpe: Sharpe ratio; mean_variance: utility; "
                           "track: distance to the target ‖G(w − target)‖, annualized, as a fraction; min_variance: "
                           "volatility, as a fraction).")
    tax_aware_estimated_tax: Money
    tax_blind_estimated_tax: Money
    tax_saved: Money = Field(description="tax_blind_estimated_tax − tax_aware_estimated_tax.")
    tax_aware_objective: float | None
    tax_blind_objective: float | None
    objective_loss: float | None = Field(
        description="How much worse the tax-aware objective is, before taxes: tax_blind_objective − tax_aware_objective "
        "for a ratio or utility, tax_aware_objective − tax_blind_objective for a distance or volatility.")


class Harvest(BaseModel):
    """A loss harvested: the loss lots of ``symbol`` sold, the exposure kept with ``replacement``."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    shares: int = Field(description="Shares in the lots at a loss, all sold.")
    loss: Money = Field(description="Their loss at the pack's close, as a positive amount.")
    replacement: str
    source: Literal["replacements", "correlation"] = Field(
        description="replacements: the policy's map; correlation: the most correlated security of the same sector.")
    correlation: float | None = Field(description="Correlation of daily returns over the lookback.")


class TaxPreview(BaseModel):
    """The tax consequences of the sales, lot by lot: an estimate."""

    model_config = ConfigDict(frozen=True)

    basis: Literal["estimate"] = "estimate"
    disclaimer: str = DISCLAIMER
    lot_selection: str
    holding_period_days: int
    short_term_rate_pct: float
    long_term_rate_pct: float
    lots_sold: list[LotSale] = Field(description="Sorted by symbol, then lot_no.")
    totals: TaxTotals
    short_term_gains_forced: list[str] = Field(
        description="Symbols whose forced sale realized a short-term gain (avoid_short_term_gains yields to it).")
    wash_sale_blocks: list[WashSaleBlock] = Field(
        description="Names the wash-sale rule blocks on the asof (no purchase / no sale at a loss) and until when.")
    harvests: list[Harvest] = Field(default_factory=list, description="harvest_losses only: the losses harvested.")
    comparison: TaxComparison | None = Field(
        None, exclude_if=lambda v: v is None,
        description="propose_trades with a return objective: the tax and objective of the same policy without taxes.")
    warnings: list[str]


@dataclass(frozen=True)
class Sale:
    """A sale to preview: whole shares of a symbol at the pack's close, and why if forced."""

    symbol: str
    quantity: int
    price: Decimal
    forced_reason: str | None = None


def preview(lots: tuple[TaxLot, ...], sales: list[Sale], settings: TaxSettings, asof: date,
            blocks: list[WashSaleBlock] | None = None) -> TaxPreview:
    """The lots ``sales`` take under ``settings`` and what they realize on ``asof``, with the
    wash-sale ``blocks`` listed (a forced sale is not held back by them: its loss is named instead).

    Raises:
        InputError: a sale exceeds the shares of its lots (or of the named lots with ``specific``).
    """
    rows: list[LotSale] = []
    warnings: list[str] = []
    forced_st: list[str] = []
    for sale in sorted(sales, key=lambda s: s.symbol):
        if sale.quantity <= 0:
            continue
        rules = settings
        if sale.forced_reason is not None and sale.symbol in settings.no_loss_sales:
            rules = replace(settings, no_loss_sales=frozenset())
        taken = take(sale_order(lots, sale.symbol, sale.price, asof, rules), sale.quantity, sale.symbol, rules)
        for lot, n in taken:
            rows.append(_lot_sale(lot, n, sale, settings, asof))
            if rules is not settings and lot.basis is not None and lot.basis > sale.price:
                warnings.append(f"{sale.symbol} lot {lot.lot_no}: the forced sale realizes a loss the wash-sale rule "
                                f"may disallow ({sale.symbol} was bought in the last 30 days)")
            if lot.acquired is None:
                warnings.append(f"{sale.symbol} lot {lot.lot_no} has no acquisition date: taxed as short-term")
            if lot.basis is None:
                warnings.append(f"{sale.symbol} lot {lot.lot_no} has no cost basis: its gain and tax are not estimated")
        if any(r.term == "short" and (r.gain is None or r.gain > 0) for r in rows if r.symbol == sale.symbol):
            if sale.forced_reason is not None:
                forced_st.append(sale.symbol)
                warnings.append(f"{sale.symbol}: the forced sale ({sale.forced_reason}) realizes a short-term gain")
            elif settings.avoid_short_term_gains:
                warnings.append(f"{sale.symbol}: the sale realizes a short-term gain although "
                                "avoid_short_term_gains is set")
    rows.sort(key=lambda r: (r.symbol, r.lot_no))
    return TaxPreview(
        lot_selection=settings.lot_selection,
        holding_period_days=settings.holding_period_days,
        short_term_rate_pct=float(settings.short_rate * 100),
        long_term_rate_pct=float(settings.long_rate * 100),
        lots_sold=rows,
        totals=totals(rows),
        short_term_gains_forced=forced_st,
        wash_sale_blocks=list(blocks or []),
        warnings=warnings,
    )


def _lot_sale(lot: TaxLot, shares: int, sale: Sale, settings: TaxSettings, asof: date) -> LotSale:
    term = lot.term(asof, settings.holding_period_days)
    proceeds = _cents(shares * sale.price)
    basis = None if lot.basis is None else _cents(shares * lot.basis)
    gain = None if basis is None else proceeds - basis
    return LotSale(
        symbol=lot.symbol, lot_no=lot.lot_no, shares=shares,
        acquired=None if lot.acquired is None else lot.acquired.isoformat(), term=term,
        basis_per_share=None if lot.basis is None else float(lot.basis), cost_basis=basis, proceeds=proceeds,
        gain=gain, estimated_tax=None if gain is None else _cents(gain * settings.rate(term)),
        forced=sale.forced_reason is not None,
    )


def totals(rows: list[LotSale]) -> TaxTotals:
    """Gains and losses by term, and the estimated tax, summed from the rows' reported figures."""
    zero = Decimal("0.00")
    known = [r for r in rows if r.gain is not None]

    def total(term: str, sign: int) -> Decimal:
        return sum((abs(r.gain) for r in known if r.term == term and sign * r.gain > 0), zero)  # type: ignore[arg-type]

    st_g, st_l, lt_g, lt_l = total("short", 1), total("short", -1), total("long", 1), total("long", -1)
    tax = sum((r.estimated_tax for r in known if r.estimated_tax is not None), zero)
    saved = -sum((r.estimated_tax for r in known if r.estimated_tax is not None and r.estimated_tax < 0), zero)
    return TaxTotals(
        short_term_gains=st_g, short_term_losses=st_l, long_term_gains=lt_g, long_term_losses=lt_l,
        net_short_term=st_g - st_l, net_long_term=lt_g - lt_l, net_realized_gain=st_g - st_l + lt_g - lt_l,
        estimated_tax=tax, tax_saved_by_losses=saved,
    )
