"""Booking approved trades: the portfolio's next version, to the cent, with FIFO tax lots.

Trades are priced at the pack's closes on its asof (the prices the proposal used) and costed
with the policy's commission and market impact, each rounded to cents once. Cash after =
cash before + cash flow − buys + sells − costs, exactly. A buy opens a lot acquired on the pack's asof whose
per-share basis is (value + cost) / shares to 1/10000; a sale closes lots first in, first out
(lots without an acquisition date count as oldest, then lot order), or, for a taxable account
(the policy names tax_rates), the lots its ``lot_selection`` takes: those the tax preview showed.
Nothing is written here: the store books the result in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.allocation.costs import cents, to_decimal, trade_cost
from services.allocation.proposal import Money, pct
from services.data.models import Lot, Portfolio, PricingPack
from services.data.policy import Policy
from services.errors import InputError
from services.tax.lots import TaxSettings, numbered, sale_order
from services.tax.lots import take as take_lots

BASIS_QUANTUM = Decimal("0.0001")


@dataclass(frozen=True)
class Order:
    """One order to book: BUY or SELL whole shares."""

    symbol: str
    side: str
    quantity: int


class BookedTrade(BaseModel):
    model_config = ConfigDict(frozen=True)

    symbol: str
    side: str = Field(description="BUY or SELL.")
    quantity: int
    price: float = Field(description="The pack's close on its asof: the order's limit price.")
    trade_value: Money = Field(description="quantity × price, to the cent.")
    estimated_cost: Money = Field(description="Commission + market impact, to the cent.")


@dataclass(frozen=True)
class Booking:
    """The portfolio after the orders, and the figures the history keeps."""

    after: Portfolio
    trades: list[BookedTrade]
    cash_before: Decimal
    cash_flow: Decimal
    cash_after: Decimal
    total_trade_value: Decimal
    estimated_costs: Decimal
    weights_before: dict[str, float]
    weights_after: dict[str, float]

    def details(self, policy: Policy) -> dict[str, Any]:
        """The JSON-ready record kept in the rebalance history."""
        return {
            "trades": [t.model_dump(mode="json") for t in self.trades],
            "cash_before": float(self.cash_before),
            "cash_flow": float(self.cash_flow),
            "cash_after": float(self.cash_after),
            "total_trade_value": float(self.total_trade_value),
            "estimated_costs": float(self.estimated_costs),
            "weights_before_pct": self.weights_before,
            "weights_after_pct": self.weights_after,
            "positions_after": self.after.positions(),
            "policy": policy.model_dump(mode="json"),
        }


def book(
    pack: PricingPack,
    before: Portfolio,
    orders: list[Order],
    policy: Policy,
    cash_flow: Decimal = Decimal("0"),
    *,
    restricted: frozenset[str] = frozenset(),
    frozen: frozenset[str] = frozenset(),
) -> Booking:
    """The booking of ``orders`` against ``before`` at the pack's closes, after a deposit
    (positive ``cash_flow``) or withdrawal (negative) that the trades invest or raise.

    The trading rules are checked again here, not only when the trades were proposed: a
    proposal may predate a new restriction (or come from elsewhere), and what is booked is
    what must obey them. ``restricted`` and ``frozen`` add to the policy's own lists.

    Raises:
        InputError: an order names a symbol the pack does not price, sells more than is held,
            repeats a symbol, buys a restricted symbol, trades a frozen or halted one, or the
            buys and costs need more cash than there is (the error names the shortfall).
    """
    prices = pack.last_prices()
    held = before.positions()
    halted = pack.halted
    restricted = restricted | set(policy.restricted_symbols)
    frozen = frozen | set(policy.frozen_symbols)
    problems: list[str] = []
    seen: set[str] = set()
    for o in orders:
        if o.symbol in seen:
            problems.append(f"{o.symbol}: more than one order")
        seen.add(o.symbol)
        if o.symbol not in prices:
            problems.append(f"{o.symbol}: no close in pricing pack {pack.id}")
        if o.symbol in frozen:
            problems.append(f"{o.symbol}: frozen (never traded)")
        elif o.symbol in halted:
            problems.append(f"{o.symbol}: halted ({halted[o.symbol]})")
        elif o.side == "BUY" and o.symbol in restricted:
            problems.append(f"{o.symbol}: restricted (never bought)")
        if o.side == "SELL" and o.quantity > held.get(o.symbol, 0):
            problems.append(f"{o.symbol}: sell {o.quantity} but {held.get(o.symbol, 0)} held (the ledger holds long "
                            "lots only: a short position cannot be booked)")
    if problems:
        raise InputError("trades cannot be booked: " + "; ".join(problems),
                         details={"field": "trades", "problems": problems})

    trades = []
    for o in sorted(orders, key=lambda o: (o.symbol, o.side)):
        value = cents(o.quantity * to_decimal(prices[o.symbol]))
        trades.append(BookedTrade(
            symbol=o.symbol, side=o.side, quantity=o.quantity, price=prices[o.symbol], trade_value=value,
            estimated_cost=trade_cost(value, policy.commission_per_trade, policy.market_impact_bps),
        ))
    buys = sum((t.trade_value for t in trades if t.side == "BUY"), Decimal("0.00"))
    sells = sum((t.trade_value for t in trades if t.side == "SELL"), Decimal("0.00"))
    costs = sum((t.estimated_cost for t in trades), Decimal("0.00"))
    flow = cents(cash_flow)
    cash_after = before.cash + flow - buys + sells - costs
    if cash_after < 0:
        raise InputError(
            f"trades cannot be booked: buys ${buys:,.2f}, costs ${costs:,.2f}"
            + (f" and the withdrawal ${-flow:,.2f}" if flow < 0 else "")
            + f" exceed cash ${before.cash:,.2f}" + (f" plus the deposit ${flow:,.2f}" if flow > 0 else "")
            + f" plus sales ${sells:,.2f} by ${-cash_after:,.2f}",
            details={"field": "trades", "shortfall": float(-cash_after)},
        )
    after = Portfolio(id=before.id, cash=cash_after, owner=before.owner,
                      lots=_lots_after(before.lots, trades, pack.asof, TaxSettings.from_policy(policy)))
    return Booking(
        after=after, trades=trades, cash_before=before.cash, cash_flow=flow, cash_after=cash_after,
        total_trade_value=buys + sells, estimated_costs=costs,
        weights_before=weights_pct(before, prices), weights_after=weights_pct(after, prices),
    )


def weights_pct(portfolio: Portfolio, prices: dict[str, float]) -> dict[str, float]:
    """Each position's weight (and CASH's) in % of value at ``prices``, sorted by symbol."""
    values = {s: cents(n * to_decimal(prices[s])) for s, n in portfolio.positions().items()}
    total = sum(values.values(), Decimal("0.00")) + portfolio.cash
    if total <= 0:
        return {}
    out = {s: pct(float(v / total)) for s, v in values.items()}
    out["CASH"] = pct(float(portfolio.cash / total))
    return {s: w for s, w in sorted(out.items()) if w is not None}


def _lots_after(lots: tuple[Lot, ...], trades: list[BookedTrade], asof: date,
                tax: TaxSettings | None) -> tuple[Lot, ...]:
    remaining = [lot.shares for lot in lots]
    for t in (t for t in trades if t.side == "SELL"):
        if tax is not None:
            order_taken = take_lots(sale_order(numbered(lots), t.symbol, to_decimal(t.price), asof, tax),
                                    t.quantity, t.symbol, tax)
            for lot, n in order_taken:
                remaining[lot.lot_no - 1] -= n
            continue
        order = sorted(
            (i for i, lot in enumerate(lots) if lot.symbol == t.symbol and lot.shares > 0),
            key=lambda i: (lots[i].acquired is not None, lots[i].acquired or date.min, i),
        )
        left = t.quantity
        for i in order:
            take = min(left, remaining[i])
            remaining[i] -= take
            left -= take
            if left == 0:
                break
    kept = [
        Lot(symbol=lot.symbol, shares=n, cost_basis=lot.cost_basis, acquired=lot.acquired)
        for lot, n in zip(lots, remaining, strict=True) if n > 0
    ]
    opened = [
        Lot(symbol=t.symbol, shares=t.quantity, acquired=asof,
            cost_basis=((t.trade_value + t.estimated_cost) / t.quantity).quantize(BASIS_QUANTUM))
        for t in trades if t.side == "BUY" and t.quantity > 0
    ]
    return tuple(kept + opened)
