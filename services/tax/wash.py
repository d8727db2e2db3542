"""The wash-sale rule as blocks on a rebalance: what may not be bought, and which losses may not be
realized, on the pack's asof.

- A security sold at a loss in the 30 days before the asof may not be bought: buying it back
  would disallow the loss. Blocked through the sale date + 30 days (a sale 30 days before the
  asof blocks; 31 days before does not).
- A security bought in the 30 days before the asof (a lot acquired then, or a booked purchase)
  may not be sold at a loss: the loss would be disallowed. Its loss lots are not sold through the
  purchase date + 30 days; lots at a gain may still be.

The booked history comes from the capability layer as data: each booked sale with the lots the
portfolio held just before it and the policy it was booked under (which decides the lots it
closed, as booking does).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.data.models import Lot
from services.tax.lots import TaxLot, TaxSettings, numbered, sale_order, take

WINDOW_DAYS = 30
FIFO = TaxSettings(short_rate=Decimal(0), long_rate=Decimal(0), lot_selection="fifo", avoid_short_term_gains=False)


@dataclass(frozen=True)
class BookedSale:
    """A sale booked on ``sold_on``: ``quantity`` shares of ``symbol`` at ``price``, closing lots of
    ``lots_before`` as ``tax`` selects them (None: first in, first out, as booking does then)."""

    symbol: str
    sold_on: date
    quantity: int
    price: Decimal
    lots_before: tuple[Lot, ...]
    tax: TaxSettings | None = None


@dataclass(frozen=True)
class BookedBuy:
    symbol: str
    bought_on: date


@dataclass(frozen=True)
class WashHistory:
    """The booked trades of the window before a rebalance (from the portfolio's history)."""

    sales: tuple[BookedSale, ...] = ()
    buys: tuple[BookedBuy, ...] = ()


class WashSaleBlock(BaseModel):
    """One name the wash-sale rule blocks on the asof, and until when."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    rule: Literal["no_purchase", "no_loss_sale"] = Field(
        description="no_purchase: sold at a loss in the last 30 days; no_loss_sale: bought in the last 30 days.")
    since: str = Field(description="ISO date of the loss sale or the purchase that started the block.")
    until: str = Field(description="Last blocked day (that date + 30 days), ISO.")


def in_window(event: date, asof: date) -> bool:
    """``event`` lies in the 30 days up to ``asof`` (day 30 in, day 31 out)."""
    return 0 <= (asof - event).days <= WINDOW_DAYS


def sold_at_loss(sale: BookedSale) -> bool:
    """The booked sale closed at least one lot below its basis."""
    settings = sale.tax or FIFO
    closed = take(sale_order(numbered(sale.lots_before), sale.symbol, sale.price, sale.sold_on, settings),
                  sale.quantity, sale.symbol, settings)
    return any(lot.basis is not None and lot.basis > sale.price for lot, _ in closed)


def wash_sale_blocks(asof: date, lots: tuple[TaxLot, ...], sales: tuple[BookedSale, ...],
                     buys: tuple[BookedBuy, ...]) -> list[WashSaleBlock]:
    """The blocks on ``asof``, one per symbol and rule (the latest event), sorted by symbol and rule."""
    latest: dict[tuple[str, str], date] = {}

    def note(symbol: str, rule: str, when: date) -> None:
        if in_window(when, asof) and when > latest.get((symbol, rule), date.min):
            latest[(symbol, rule)] = when

    for sale in sales:
        if in_window(sale.sold_on, asof) and sold_at_loss(sale):
            note(sale.symbol, "no_purchase", sale.sold_on)
    for lot in lots:
        if lot.acquired is not None:
            note(lot.symbol, "no_loss_sale", lot.acquired)
    for buy in buys:
        note(buy.symbol, "no_loss_sale", buy.bought_on)
    return [WashSaleBlock(symbol=s, rule=r, since=d.isoformat(),  # type: ignore[arg-type]
                          until=(d + timedelta(days=WINDOW_DAYS)).isoformat())
            for (s, r), d in sorted(latest.items())]
