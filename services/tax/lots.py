"""Tax lots on a pack's asof: holding term, tax per share, and which lots a sale of a symbol takes.

A lot held more than ``holding_period_days`` on the asof is long-term (365: a lot bought on
2021-12-28 is short-term on 2022-12-28, one bought on 2021-12-27 long-term). The tax of selling
one share of a lot is (price − basis) × its term's rate, negative for a loss: the tax a loss
saves against other gains of the same term. Lots without a recorded acquisition date are taxed
as short-term (the higher rate, so never understated); lots without a basis have no estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Literal

from services.data.models import Lot
from services.data.policy import Policy
from services.errors import InputError

Term = Literal["short", "long"]


@dataclass(frozen=True)
class TaxSettings:
    """The tax fields of a taxable account's policy, rates as fractions."""

    short_rate: Decimal
    long_rate: Decimal
    holding_period_days: int = 365
    lot_selection: str = "optimal"
    specific_lots: tuple[int, ...] = ()
    avoid_short_term_gains: bool = True
    max_realized_gain: Decimal | None = None
    # Symbols whose loss lots the wash-sale rule keeps from being sold (bought in the last 30 days).
    no_loss_sales: frozenset[str] = frozenset()

    @classmethod
    def from_policy(cls, policy: Policy) -> TaxSettings | None:
        """The settings of ``policy``; None for a tax-exempt account (no ``tax_rates``)."""
        if policy.tax_rates is None:
            return None
        return cls(
            short_rate=Decimal(repr(policy.tax_rates.short_term_pct)) / 100,
            long_rate=Decimal(repr(policy.tax_rates.long_term_pct)) / 100,
            holding_period_days=policy.holding_period_days or 365,
            lot_selection=policy.lot_selection or "optimal",
            specific_lots=tuple(policy.specific_lots or ()),
            avoid_short_term_gains=True if policy.avoid_short_term_gains is None else policy.avoid_short_term_gains,
            max_realized_gain=policy.max_realized_gain,
        )

    def rate(self, term: Term) -> Decimal:
        return self.long_rate if term == "long" else self.short_rate


@dataclass(frozen=True)
class TaxLot:
    """A lot with its number in the portfolio (``lot_no``, 1-based, as ``portfolios show --json`` lists it)."""

    lot_no: int
    symbol: str
    shares: int
    basis: Decimal | None
    acquired: date | None

    def term(self, asof: date, holding_period_days: int) -> Term:
        """long when held more than ``holding_period_days`` days on ``asof``; short otherwise or undated."""
        if self.acquired is not None and (asof - self.acquired).days > holding_period_days:
            return "long"
        return "short"

    def tax_per_share(self, price: Decimal, asof: date, settings: TaxSettings) -> Decimal | None:
        """(price − basis) × the term's rate; None without a basis."""
        if self.basis is None:
            return None
        return (price - self.basis) * settings.rate(self.term(asof, settings.holding_period_days))

    def short_term_gain(self, price: Decimal, asof: date, settings: TaxSettings) -> bool:
        """Selling this lot at ``price`` realizes a short-term gain (an unknown basis counts as one:
        the gain cannot be ruled out)."""
        return self.term(asof, settings.holding_period_days) == "short" and (
            self.basis is None or price > self.basis)


def numbered(lots: tuple[Lot, ...]) -> tuple[TaxLot, ...]:
    """The portfolio's lots numbered 1.. in order, as the store numbers them."""
    return tuple(TaxLot(i, lot.symbol, lot.shares, lot.cost_basis, lot.acquired)
                 for i, lot in enumerate(lots, start=1))


def sale_order(lots: tuple[TaxLot, ...], symbol: str, price: Decimal, asof: date,
               settings: TaxSettings) -> list[TaxLot]:
    """The lots of ``symbol`` in the order a sale takes them under ``settings.lot_selection``.

    - optimal: least tax per share first (largest loss first), so any number of shares sold
      costs the least tax a choice of lots allows; with ``avoid_short_term_gains`` lots with a
      short-term gain come after all others. Lots without a basis come last.
    - hifo: highest basis first; fifo: oldest first (undated lots count as oldest, as booking
      does); specific: only the named lots, in the order named.
    Ties keep lot order. A symbol in ``settings.no_loss_sales`` offers only its lots not at a loss.
    """
    mine = [lot for lot in lots if lot.symbol == symbol and lot.shares > 0
            and not (symbol in settings.no_loss_sales and lot.basis is not None and lot.basis > price)]
    method = settings.lot_selection
    if method == "specific":
        position = {no: i for i, no in enumerate(settings.specific_lots)}
        return sorted((lot for lot in mine if lot.lot_no in position), key=lambda lot: position[lot.lot_no])
    if method == "fifo":
        return sorted(mine, key=lambda lot: (lot.acquired is not None, lot.acquired or date.min, lot.lot_no))
    if method == "hifo":
        return sorted(mine, key=lambda lot: (lot.basis is None, -(lot.basis or Decimal(0)), lot.lot_no))

    def optimal_key(lot: TaxLot) -> tuple[bool, bool, Decimal, int]:
        tax = lot.tax_per_share(price, asof, settings)
        avoided = settings.avoid_short_term_gains and lot.short_term_gain(price, asof, settings)
        return tax is None, avoided, tax if tax is not None else Decimal(0), lot.lot_no

    return sorted(mine, key=optimal_key)


def take(order: list[TaxLot], quantity: int, symbol: str, settings: TaxSettings) -> list[tuple[TaxLot, int]]:
    """The (lot, shares) a sale of ``quantity`` shares takes from lots in ``order``.

    Raises:
        InputError: the lots do not hold ``quantity`` shares (with ``specific``: the named lots).
    """
    out = []
    left = quantity
    for lot in order:
        if left == 0:
            break
        n = min(left, lot.shares)
        out.append((lot, n))
        left -= n
    if left:
        held = quantity - left
        if settings.lot_selection == "specific":
            raise InputError(
                f"policy.specific_lots: a sale of {quantity} {symbol} needs lots holding that many shares; "
                f"the named lots of {symbol} hold {held}. Name more lots of {symbol} (see "
                "`optimizer portfolios show ID --json`) or choose another lot_selection",
                details={"field": "policy.specific_lots", "value": list(settings.specific_lots),
                         "symbol": symbol, "needed": quantity, "named_shares": held},
            )
        if symbol in settings.no_loss_sales:
            raise InputError(
                f"a sale of {quantity} {symbol} needs lots at a loss, which the wash-sale rule blocks ({symbol} was "
                f"bought in the last 30 days); {held} shares are in lots without a loss",
                details={"field": "trades", "symbol": symbol, "needed": quantity, "sellable": held},
            )
        raise InputError(
            f"a sale of {quantity} {symbol} exceeds the {held} shares held in its lots",
            details={"field": "trades", "symbol": symbol, "needed": quantity, "held": held},
        )
    return out
