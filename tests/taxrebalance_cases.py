"""The same rebalance posed to ``taxrebalance`` 0.2.0 and to ``optimizer.propose_trades``.

A taxrebalance ``Scenario`` (prices, target weights, an annual covariance, U.S. tax lots with
``days_held``, a tracking-error limit, a gross turnover limit, bps trading costs, two tax rates and
a risk aversion) is turned into our inputs through the public contracts only:

- **A pricing pack** whose sample covariance is the scenario's, to ~1e-10. Our ``hist`` estimator is
  ``np.cov`` (ddof 1) of *simple* daily returns (``pct_change``) over the last ``lookback_days``
  (756) common returns, times 252. So 756 seeded normal draws per name are whitened (zero mean,
  identity sample covariance with ddof 1), coloured with the Cholesky factor of Σ/252 and shifted by
  a small drift (a constant changes no covariance); the closes are built backwards from the
  scenario's price, written with ``repr`` (a float round-trips exactly through the CSV) and
  imported by ``read_pack`` + ``Store.put_pack``, what ``optimizer packs import`` runs. Daily
  moves of a few percent stay far inside the import's 3× jump rule.
- **A portfolio** whose ``positions.csv`` has one row per lot: ``cost_basis`` is per share (our
  ``TaxLot.tax_per_share`` is (price − basis) × rate), ``acquired`` = asof − days_held.
  taxrebalance calls a lot long-term when ``days_held >= 365``; ours when held *more than*
  ``holding_period_days``, so the policy sets ``holding_period_days: 364`` and both agree on every
  lot. Lots are whole shares (ours must be).
- **A policy** for method ``target``: the scenario's targets, the same targets as an explicit
  ``benchmark`` (so ``max_tracking_error_pct`` bounds the tracking error to the target under the
  same covariance), ``covariance_estimator: hist``, the tax rates, ``harvest_losses``, costs in
  the objective at the scenario's bps, no commission, no minimum trade, no cash buffer, no cap,
  ``max_cash_pct: 100`` (taxrebalance keeps whatever cash its trades leave: harvested proceeds
  may stay in cash) and ``avoid_short_term_gains: false`` (taxrebalance has no such rule: the
  same feasible set).

The exchange rate. taxrebalance minimizes, in dollars, ``λ·E·TE² + fees + tax`` (E the equity,
TE a fraction). Divided by E: ``λ·TE² + (fees + tax)/E``. Ours minimizes ``TE%² + a·(tax + costs)%``
with TE in % (TE% = 100·TE) and money in % of value (x% = 100·x/E): multiplying theirs by
10⁴/λ gives ``TE%² + (100/λ)·(fees + tax)%``, so ``tax_aversion`` a = 100/λ (100 for λ = 1).

Turnover. taxrebalance's gross turnover fraction is (buys + sells) / E; ours (``max_turnover_pct``)
is Σ|Δw| in % of value, the same sum of buys and sells (nothing here is a forced sale, which ours
would exempt): ``max_turnover_pct`` = 100 × the fraction.

The evaluator (``realized_tax``, ``tracking_error``, ``gross_turnover``, ``fees``) is numpy only and
uses none of our code: it is the yardstick both proposals are measured with. Its tracking error
weighs the holdings after trading over the equity after trading (cash included, fees paid), as
our report does; taxrebalance's own figure divides by the equity before trading, which differs
by the fees' share (10 bps of the turnover) of the tracking error.

Not modelled on our side: taxrebalance's ``loss_utilization`` and ``future_recapture_fraction``
(its objective values a loss at 0.8 − 0.2 = 0.6 of its rate) and ``prior_30d_replacement`` (a lot
whose loss it treats as unusable); the evaluator counts every realized loss at its full rate, on
both sides alike.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
from tax_rebalancing.models import Scenario, TaxLot
from taxrebalance import Portfolio as TheirPortfolio
from taxrebalance import RebalanceConfig, UnitedStatesLots, rebalance

ANNUALIZATION_DAYS = 252
LOOKBACK_DAYS = 756
# taxrebalance: long-term when days_held >= 365; ours: held more than holding_period_days.
HOLDING_PERIOD_DAYS = 364
ASOF = date(2025, 12, 31)


@dataclass(frozen=True)
class Sale:
    """Shares sold out of one scenario lot (index into ``Scenario.lots``)."""

    lot: int
    shares: float


@dataclass(frozen=True)
class Outcome:
    """A rebalance as the evaluator sees it: shares bought per ticker and sales per lot."""

    buys: np.ndarray
    sales: tuple[Sale, ...]


# --- the pack ----------------------------------------------------------------------------------


def closes_with_covariance(scenario: Scenario, *, seed: int, drift: float = 2e-4) -> np.ndarray:
    """Closes (LOOKBACK_DAYS + 1 rows, one column per ticker) whose simple daily returns have the
    sample covariance (ddof 1) scenario.annual_covariance / 252 and whose last row is the prices."""
    n = len(scenario.tickers)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((LOOKBACK_DAYS, n))
    z -= z.mean(axis=0)
    # Whiten: z L⁻ᵀ has identity sample covariance when L Lᵀ is z's sample covariance.
    whitening = np.linalg.cholesky(np.cov(z, rowvar=False))
    white = np.linalg.solve(whitening, z.T).T
    colour = np.linalg.cholesky(np.asarray(scenario.annual_covariance) / ANNUALIZATION_DAYS)
    returns = white @ colour.T + drift
    closes = np.empty((LOOKBACK_DAYS + 1, n))
    closes[-1] = scenario.prices
    for t in range(LOOKBACK_DAYS - 1, -1, -1):
        closes[t] = closes[t + 1] / (1.0 + returns[t])
    return closes


def trading_days(asof: date, count: int) -> list[date]:
    """The last ``count`` weekdays up to and including ``asof``."""
    days: list[date] = []
    day = asof
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day -= timedelta(days=1)
    return days[::-1]


def pack_csv(scenario: Scenario, *, seed: int, asof: date = ASOF) -> tuple[str, str]:
    """(prices.csv, securities.csv) texts of the scenario's pack: each ticker an ETF in a sector of its own."""
    closes = closes_with_covariance(scenario, seed=seed)
    days = trading_days(asof, len(closes))
    prices = io.StringIO()
    writer = csv.writer(prices, lineterminator="\n")
    writer.writerow(["date", "symbol", "close"])
    for t, day in enumerate(days):
        for i, ticker in enumerate(scenario.tickers):
            writer.writerow([day.isoformat(), ticker, repr(float(closes[t, i]))])
    securities = io.StringIO()
    writer = csv.writer(securities, lineterminator="\n")
    writer.writerow(["symbol", "name", "sector", "asset_class"])
    for ticker in scenario.tickers:
        writer.writerow([ticker, f"{ticker} fund", f"Sector {ticker}", "etf"])
    return prices.getvalue(), securities.getvalue()


def positions_csv(scenario: Scenario, *, asof: date = ASOF) -> str:
    """positions.csv: a row per lot, basis per share, acquired = asof − days_held."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["symbol", "shares", "cost_basis", "acquired"])
    for lot in scenario.lots:
        if lot.shares != int(lot.shares):
            raise ValueError(f"lot {lot.lot_id} holds {lot.shares} shares; the cases keep whole shares")
        writer.writerow([lot.ticker, int(lot.shares), repr(float(lot.basis_per_share)),
                         (asof - timedelta(days=lot.days_held)).isoformat()])
    return out.getvalue()


def import_case(store: Any, scenario: Scenario, directory: Path, *, pack_id: str, portfolio_id: str,
                seed: int) -> None:
    """Write the scenario's files to ``directory`` and import them as ``optimizer packs import`` and
    ``optimizer portfolios import`` do (cash: the scenario's starting cash)."""
    from services.data.importers import import_portfolio, read_pack

    prices, securities = pack_csv(scenario, seed=seed)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "prices.csv").write_text(prices)
    (directory / "securities.csv").write_text(securities)
    (directory / "positions.csv").write_text(positions_csv(scenario))
    pack = read_pack(pack_id, directory / "prices.csv", directory / "securities.csv")
    store.put_pack(pack)
    portfolio = import_portfolio(portfolio_id, directory / "positions.csv",
                                 Decimal(repr(float(scenario.starting_cash))), None, pack)
    store.put_portfolio(portfolio)


# --- the policy --------------------------------------------------------------------------------


def tax_aversion(scenario: Scenario) -> float:
    """Our %²-per-% exchange rate equivalent to taxrebalance's risk_aversion λ: 100 / λ."""
    return 100.0 / scenario.risk_aversion


def policy(scenario: Scenario) -> dict[str, Any]:
    """The policy of our proposal for ``scenario`` (see the module docstring for each field)."""
    targets = {t: 100.0 * w for t, w in zip(scenario.tickers, scenario.target_weights, strict=True)}
    out: dict[str, Any] = {
        "method": "target",
        "universe": "holdings",
        "target_weights_pct": targets,
        "benchmark": targets,
        "max_tracking_error_pct": 100.0 * scenario.max_tracking_error,
        "covariance_estimator": "hist",
        "lookback_days": LOOKBACK_DAYS,
        "tax_rates": {"short_term_pct": 100.0 * scenario.short_term_tax_rate,
                      "long_term_pct": 100.0 * scenario.long_term_tax_rate},
        "holding_period_days": HOLDING_PERIOD_DAYS,
        "harvest_losses": True,
        # taxrebalance has no short-term rule; the same feasible set on both sides.
        "avoid_short_term_gains": False,
        "tax_aversion": tax_aversion(scenario),
        "costs_in_objective": True,
        "market_impact_bps": scenario.trading_cost_bps,
        "commission_per_trade": 0,
        "min_trade_value": 0,
        "cash_buffer_pct": 0,
        # taxrebalance keeps any cash its trades leave (post_cash ≥ 0): the same freedom here.
        "max_cash_pct": 100,
        "max_single_position_pct": 100,
    }
    if scenario.max_turnover_fraction is not None:
        out["max_turnover_pct"] = 100.0 * scenario.max_turnover_fraction
    return out


def request(scenario: Scenario, *, pack_id: str, portfolio_id: str) -> dict[str, Any]:
    """The ``optimizer.propose_trades`` request for ``scenario``."""
    return {"portfolio_id": portfolio_id, "pricing_pack_id": pack_id, "policy": policy(scenario)}


# --- taxrebalance's side -----------------------------------------------------------------------


def their_decision(scenario: Scenario) -> dict[str, Any]:
    """taxrebalance's tax-aware decision (``rebalance(..., method="tax_aware")``: its
    ``convex_relaxation_heuristic``) for ``scenario``, through its public API."""
    portfolio = TheirPortfolio.from_tax_lots(scenario.lots, prices=dict(zip(scenario.tickers, scenario.prices,
                                                                            strict=True)),
                                             cash=scenario.starting_cash)
    config = RebalanceConfig(max_tracking_error=scenario.max_tracking_error,
                             trading_cost_bps=scenario.trading_cost_bps,
                             loss_utilization=scenario.loss_utilization,
                             future_recapture_fraction=scenario.future_recapture_fraction,
                             risk_aversion=scenario.risk_aversion,
                             max_turnover_fraction=scenario.max_turnover_fraction)
    result = rebalance(portfolio, target_weights=dict(zip(scenario.tickers, scenario.target_weights, strict=True)),
                       covariance=scenario.annual_covariance,
                       tax_policy=UnitedStatesLots(scenario.short_term_tax_rate, scenario.long_term_tax_rate),
                       config=config, method="tax_aware")
    return result.decision


def their_outcome(scenario: Scenario, decision: dict[str, Any]) -> Outcome:
    """taxrebalance's trades as buys per ticker and sales per lot."""
    buys = np.zeros(len(scenario.tickers))
    lot_index = {lot.lot_id: j for j, lot in enumerate(scenario.lots)}
    sales = []
    for trade in decision["trades"]:
        if trade["side"] == "BUY":
            buys[scenario.tickers.index(trade["ticker"])] += trade["shares"]
        else:
            sales.append(Sale(lot_index[trade["lot_id"]], float(trade["shares"])))
    return Outcome(buys, tuple(sales))


# --- our side ----------------------------------------------------------------------------------


def our_outcome(scenario: Scenario, result: dict[str, Any]) -> Outcome:
    """Our proposal's trades as buys per ticker and, from ``tax.lots_sold``, sales per lot.

    ``lot_no`` numbers the portfolio's lots 1.. in the order of positions.csv, which is the
    scenario's order of lots.
    """
    buys = np.zeros(len(scenario.tickers))
    for trade in result["trades"]:
        if trade["action"] == "BUY":
            buys[scenario.tickers.index(trade["symbol"])] += trade["quantity"]
    sales = tuple(Sale(row["lot_no"] - 1, float(row["shares"])) for row in result["tax"]["lots_sold"])
    return Outcome(buys, sales)


# --- the independent evaluator (numpy only) ----------------------------------------------------


def _rate(scenario: Scenario, lot: TaxLot) -> float:
    return scenario.long_term_tax_rate if lot.days_held >= 365 else scenario.short_term_tax_rate


def realized_tax(scenario: Scenario, outcome: Outcome) -> float:
    """Σ over lots sold of shares × (price − basis) × the lot's rate (long-term at days_held ≥ 365);
    a loss is a negative tax."""
    total = 0.0
    for sale in outcome.sales:
        lot = scenario.lots[sale.lot]
        price = scenario.prices[scenario.tickers.index(lot.ticker)]
        total += sale.shares * (price - lot.basis_per_share) * _rate(scenario, lot)
    return total


def post_shares(scenario: Scenario, outcome: Outcome) -> np.ndarray:
    """Shares per ticker after the trades."""
    shares = np.array([sum(lot.shares for lot in scenario.lots if lot.ticker == t) for t in scenario.tickers],
                      dtype=float) + outcome.buys
    for sale in outcome.sales:
        shares[scenario.tickers.index(scenario.lots[sale.lot].ticker)] -= sale.shares
    return shares


def equity(scenario: Scenario) -> float:
    """Cash plus holdings at the scenario's prices, before trading."""
    prices = np.asarray(scenario.prices)
    held = np.array([sum(lot.shares for lot in scenario.lots if lot.ticker == t) for t in scenario.tickers])
    return float(scenario.starting_cash + prices @ held)


def fees(scenario: Scenario, outcome: Outcome) -> float:
    """Trading costs: the scenario's bps of the value traded (both sides use no fixed commission)."""
    return gross_turnover(scenario, outcome) * equity(scenario) * scenario.trading_cost_bps / 1e4


def tracking_error(scenario: Scenario, outcome: Outcome, *, net_of_fees: bool = True) -> float:
    """sqrt((w − t)ᵀ Σ (w − t)): w the holdings after trading at the prices over the equity after
    trading (cash included, so net of the fees), t the targets, Σ the scenario's annual covariance.

    ``net_of_fees=False`` divides by the equity before trading instead, as taxrebalance reports it.
    """
    base = equity(scenario) - (fees(scenario, outcome) if net_of_fees else 0.0)
    w = post_shares(scenario, outcome) * np.asarray(scenario.prices) / base
    d = w - np.asarray(scenario.target_weights)
    return float(np.sqrt(max(0.0, d @ np.asarray(scenario.annual_covariance) @ d)))


def gross_turnover(scenario: Scenario, outcome: Outcome) -> float:
    """(value bought + value sold) / equity before trading."""
    prices = np.asarray(scenario.prices)
    sold = sum(s.shares * prices[scenario.tickers.index(scenario.lots[s.lot].ticker)] for s in outcome.sales)
    return float((prices @ outcome.buys + sold) / equity(scenario))


def one_share_tax(scenario: Scenario) -> float:
    """Rounding allowance on tax: per ticker, the largest |tax| of one share of any of its lots, summed.

    A whole-share proposal differs from a continuous one by less than one share per ticker; each
    share sold (or not) moves the realized tax by at most its lot's |price − basis| × rate.
    """
    worst: dict[str, float] = {}
    for lot in scenario.lots:
        price = scenario.prices[scenario.tickers.index(lot.ticker)]
        worst[lot.ticker] = max(worst.get(lot.ticker, 0.0), abs(price - lot.basis_per_share) * _rate(scenario, lot))
    return sum(worst.values())


def one_share_tracking_error(scenario: Scenario) -> float:
    """Rounding allowance on tracking error: Σ over tickers of price / equity × its volatility, the
    most one share per ticker can move ‖w − t‖_Σ (triangle inequality)."""
    vol = np.sqrt(np.diag(np.asarray(scenario.annual_covariance)))
    return float(np.asarray(scenario.prices) @ vol / equity(scenario))


# --- the synthetic case ------------------------------------------------------------------------


def synthetic(*, seed: int = 2026, n: int = 50, lots_per_name: int = 3, factors: int = 4,
              max_tracking_error: float = 0.006, max_turnover_fraction: float = 0.20) -> Scenario:
    """A seeded taxable portfolio: ``n`` ETFs, ``lots_per_name`` whole-share lots each (gains and
    losses, short and long term), a ``factors``-factor annual covariance (B F Bᵀ + D), targets
    drifted from the holdings, a tracking-error and a gross turnover limit; 35%/20% rates, 10 bps."""
    rng = np.random.default_rng(seed)
    tickers = tuple(f"E{i:02d}" for i in range(n))
    prices = np.round(rng.uniform(20.0, 300.0, n), 2)
    loadings = rng.normal(0.0, 1.0, (n, factors)) * np.array([0.16, 0.08, 0.06, 0.05])[:factors]
    loadings[:, 0] = np.abs(loadings[:, 0]) + 0.08  # a market factor every name loads on
    specific = rng.uniform(0.08, 0.22, n) ** 2
    cov = loadings @ loadings.T + np.diag(specific)
    cov = (cov + cov.T) / 2
    lots = []
    for i, ticker in enumerate(tickers):
        for k in range(lots_per_name):
            shares = int(rng.integers(20, 400))
            basis = float(np.round(prices[i] * rng.uniform(0.55, 1.45), 2))
            days = int(rng.choice([int(rng.integers(5, 360)), int(rng.integers(370, 2000))]))
            lots.append(TaxLot(f"{ticker}-{k + 1}", ticker, float(shares), basis, days))
    held = np.array([sum(z.shares for z in lots if z.ticker == t) for t in tickers]) * prices
    weights = held / held.sum()
    drifted = weights * np.exp(rng.normal(0.0, 0.35, n))
    targets = drifted / drifted.sum()
    # Exactly 1 in floating point (taxrebalance checks |Σ − 1| ≤ 1e-8; ours sums the percentages).
    targets[-1] = 1.0 - targets[:-1].sum()
    return Scenario(name=f"synthetic-{n}x{n * lots_per_name}", tickers=tickers,
                    prices=tuple(float(p) for p in prices), target_weights=tuple(float(t) for t in targets),
                    lots=tuple(lots), annual_covariance=tuple(tuple(float(v) for v in row) for row in cov),
                    starting_cash=0.0, max_tracking_error=max_tracking_error, trading_cost_bps=10.0,
                    short_term_tax_rate=0.35, long_term_tax_rate=0.20, risk_aversion=1.0,
                    max_turnover_fraction=max_turnover_fraction)
