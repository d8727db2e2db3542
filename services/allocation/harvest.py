"""Tax-loss harvesting: which holdings to sell at a loss, and what keeps their exposure.

A holding is harvested when its lots at a loss (at the pack's close) lose at least
``min_harvest_loss`` dollars and ``min_harvest_loss_pct`` of their basis. Its replacement is the
policy's ``replacements`` entry, else the security of the same sector in the pack whose daily
returns over the lookback correlate most with it: similar exposure, not the same security (not
"substantially identical"). A name the wash-sale rule keeps from a loss sale is not harvested,
and a name that cannot be bought (restricted, wash-sale blocked, below the quality minimum) is
never a replacement.

The proposal then caps the harvested name at the shares outside its loss lots (so those lots
are sold, least tax first puts them first), never buys it, and holds the replacement at least at
its weight plus the harvested weight (caps permitting).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import numpy as np

from services.data.models import PricingPack
from services.data.policy import Policy
from services.errors import InputError
from services.tax.lots import TaxLot, TaxSettings, sale_order
from services.tax.preview import Harvest

HOLDABLE = ("equity", "etf")


@dataclass(frozen=True)
class HarvestChoice:
    """The harvests of a proposal and the notes on candidates left unharvested."""

    harvests: tuple[Harvest, ...]
    warnings: tuple[str, ...]


def choose_harvests(pack: PricingPack, policy: Policy, settings: TaxSettings, lots: tuple[TaxLot, ...],
                    positions: dict[str, int], tradable: set[str], buyable: set[str], asof: date) -> HarvestChoice:
    """Harvests among ``tradable`` holdings; replacements among ``buyable`` securities.

    Raises:
        InputError: a ``replacements`` entry names a security the pack cannot price or hold.
    """
    prices = pack.last_prices()
    mapping = policy.replacements or {}
    bad = sorted(r for r in mapping.values() if r not in prices or pack.security(r).asset_class not in HOLDABLE)
    if bad:
        raise InputError(
            f"policy.replacements: {', '.join(bad)} cannot be held (not an equity or ETF priced in pack {pack.id})",
            details={"field": "policy.replacements", "invalid": bad},
        )
    harvests: list[Harvest] = []
    warnings: list[str] = []
    for sym in sorted(set(positions) & tradable):
        if sym in settings.no_loss_sales:
            continue
        price = Decimal(repr(prices[sym]))
        order = sale_order(lots, sym, price, asof, settings)
        loss = harvestable_loss(order, price, policy)
        if loss is None:
            continue
        shares = sum(lot.shares for lot in order if lot.basis is not None and lot.basis > price)
        replacement, source, corr = _replacement(pack, policy, sym, mapping, buyable - {sym})
        if replacement is None:
            warnings.append(f"{sym}: a loss of ${loss:,.2f} has no replacement in its sector that can be bought; its "
                            "loss lots are sold only where the tax saved outweighs what selling them costs the objective")
            continue
        harvests.append(Harvest(symbol=sym, shares=shares, loss=loss, replacement=replacement, source=source,
                                correlation=None if corr is None else round(corr, 4)))
    return HarvestChoice(tuple(harvests), tuple(warnings))


def harvestable_loss(order: list[TaxLot] | tuple[TaxLot, ...], price: Decimal, policy: Policy) -> Decimal | None:
    """The loss of the lots at a loss among ``order`` (one name's lots) at ``price``, in money,
    when it reaches the policy's ``min_harvest_loss`` and ``min_harvest_loss_pct``; else None."""
    losing = [lot for lot in order if lot.basis is not None and lot.basis > price]
    if not losing:
        return None
    shares = sum(lot.shares for lot in losing)
    basis = sum((lot.shares * lot.basis for lot in losing), Decimal(0))  # type: ignore[misc]
    loss = (basis - shares * price).quantize(Decimal("0.01"))
    if loss < (policy.min_harvest_loss or Decimal(0)) or loss * 100 < Decimal(repr(policy.min_harvest_loss_pct or 0.0)) * basis:
        return None
    return loss


def _replacement(pack: PricingPack, policy: Policy, symbol: str, mapping: dict[str, str],
                 buyable: set[str]) -> tuple[str | None, str, float | None]:
    if symbol in mapping:
        chosen = mapping[symbol]
        return (chosen if chosen in buyable else None), "replacements", None
    sector = pack.security(symbol).sector
    peers = sorted(s for s in buyable if s != symbol and pack.security(s).sector == sector
                   and pack.security(s).asset_class in HOLDABLE)
    if not peers:
        return None, "correlation", None
    returns = pack.closes[[symbol, *peers]].pct_change().iloc[-policy.lookback_days:].dropna()
    corr = returns.corr()[symbol].drop(symbol)
    best = max(peers, key=lambda s: (float(np.nan_to_num(corr[s], nan=-2.0)), s))
    return best, "correlation", float(corr[best])
