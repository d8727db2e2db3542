"""Trading costs: a fixed commission per trade plus market impact in basis points of value.

Money is ``Decimal``. Each trade's impact is rounded to cents once (half up), where it is
reported; totals are sums of those reported figures so they add up on paper.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
BPS = Decimal(10000)


def to_decimal(x: float | int | str | Decimal) -> Decimal:
    """Exact decimal of a float's shortest repr (232.5 → Decimal('232.5'), not its binary expansion)."""
    return x if isinstance(x, Decimal) else Decimal(repr(x) if isinstance(x, float) else str(x))


def cents(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_HALF_UP)


def trade_cost(trade_value: Decimal, commission: Decimal, impact_bps: float) -> Decimal:
    """Cost of one trade of ``trade_value`` (sign ignored); zero for no trade.

    >>> trade_cost(Decimal("23250.00"), Decimal("5.00"), 15)
    Decimal('39.88')
    """
    if trade_value == 0:
        return Decimal("0.00")
    impact = cents(abs(trade_value) * to_decimal(float(impact_bps)) / BPS)
    return cents(commission + impact)
