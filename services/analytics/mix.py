"""A portfolio's mix by asset class and by sector, as % of its value (cash included).

Values are shares × the pack's last close, each rounded to cents once; cash is its own asset
class (``cash``) and its own sector line (``Cash``), so each mix sums to 100% of the portfolio's
value. Lines are sorted by name.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from services.allocation.costs import cents, to_decimal
from services.allocation.proposal import Money, pct
from services.data.models import PricingPack
from services.errors import InputError

CASH_CLASS = "cash"
CASH_SECTOR = "Cash"


class MixLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(description="The asset class (equity, etf, bond, ..., cash) or the sector.")
    value: Money = Field(description="Value at the pack's last closes.")
    weight_pct: float = Field(description="% of the portfolio's value, cash included.")
    symbols: list[str] = Field(description="The holdings in this line, sorted (empty for cash).")


class AllocationMix(BaseModel):
    """What the portfolio page shows beside its holdings."""

    model_config = ConfigDict(frozen=True)

    portfolio_id: str
    pricing_pack_id: str
    asof: str
    portfolio_value: Money
    asset_classes: list[MixLine]
    sectors: list[MixLine]


def allocation_mix(pack: PricingPack, portfolio_id: str, positions: dict[str, int], cash: Decimal) -> AllocationMix:
    """The asset-class and sector mix of ``positions`` + ``cash`` at ``pack``'s last closes.

    Raises:
        InputError: a holding the pack does not list or price (named).
    """
    prices = pack.last_prices()
    listed = set(pack.symbols)
    unpriced = sorted(s for s in positions if s not in listed or s not in prices)
    if unpriced:
        raise InputError(
            f"portfolio {portfolio_id}: pricing pack {pack.id} has no close for {', '.join(unpriced)}",
            details={"field": "pricing_pack_id", "value": pack.id, "unpriced": unpriced},
        )
    values = {s: cents(n * to_decimal(prices[s])) for s, n in positions.items()}
    total = sum(values.values(), Decimal("0.00")) + cents(cash)

    def lines(key: dict[str, str], cash_name: str) -> list[MixLine]:
        groups: dict[str, list[str]] = {}
        for sym in sorted(values):
            groups.setdefault(key[sym], []).append(sym)
        out = {name: (sum((values[s] for s in syms), Decimal("0.00")), syms) for name, syms in groups.items()}
        if cash != 0:
            value, syms = out.get(cash_name, (Decimal("0.00"), []))
            out[cash_name] = (value + cents(cash), syms)
        return [
            MixLine(name=name, value=value, weight_pct=(pct(float(value / total)) or 0.0) if total > 0 else 0.0,
                    symbols=syms)
            for name, (value, syms) in sorted(out.items())
        ]

    return AllocationMix(
        portfolio_id=portfolio_id,
        pricing_pack_id=pack.id,
        asof=pack.asof.isoformat(),
        portfolio_value=total,
        asset_classes=lines({s: pack.security(s).asset_class for s in values}, CASH_CLASS),
        sectors=lines({s: pack.security(s).sector for s in values}, CASH_SECTOR),
    )
