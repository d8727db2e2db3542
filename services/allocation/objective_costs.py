"""Trading costs and taxes as convex terms of the allocation problem.

A taxable sale's tax, as a function of the weight ``s`` of a symbol sold, is piecewise linear:
lots are taken in the sale order (``services.tax.lots.sale_order``), each at its own tax per
unit of weight. Taken in ascending order of tax (lot selection ``optimal``) the function is
convex, and minimizing it *is* choosing the cheapest lots. A fixed order (fifo, hifo, specific)
may not be convex; the problem then uses its convex envelope (the greatest convex function below
it), a relaxation, and the exact tax of the rounded trades is what the preview reports.

Losses count as zero unless the policy harvests them: a loss is negative tax only for a name that
is not also bought (a loss lot sold and the name bought back is a wash sale, the loss disallowed),
and that either-or is not convex. With ``harvest_losses`` each harvestable name gets a ``mode``:
``SELL_ONLY`` (not bought; its losses count, exact), ``MAY_BUY`` (its losses count as zero, exact
when it is bought) or ``RELAXED`` (the convex envelope of the two, ``harvest_hull``: a lower
bound); ``services.allocation.harvest_search`` branches over them. ``max_realized_gain`` is
enforced on gains only (losses are not counted as offsets), which can only make it stricter.

Costs: a linear term (market impact in bps of the trade) and an optional 3/2-power term
η|Δw|^{3/2} (impact growing with trade size), both convex, so small trades whose gain does not
cover their cost lose to doing nothing. The fixed commission per trade is not convex and stays out.

In the Charnes–Cooper problems (max Sharpe, Sortino, information ratio) with v = κw, each term
enters as its perspective κ·f(v/κ): linear pieces keep their slopes and scale their intercepts
by κ; the power term becomes |Δv|^{3/2}/κ^{1/2}, a power cone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import cvxpy as cp

# A harvestable name's treatment in one solve (``ObjectiveCosts.modes``).
MAY_BUY, RELAXED, SELL_ONLY = 0, 1, 2


@dataclass(frozen=True, eq=False)
class Pieces:
    """A convex, nondecreasing piecewise-linear function of weight sold, as max_k(a_k + b_k·s)
    over the assets ``asset[k]``: one row per piece, several per asset."""

    asset: np.ndarray
    intercept: np.ndarray
    slope: np.ndarray

    @property
    def empty(self) -> bool:
        return len(self.asset) == 0


@dataclass(frozen=True, eq=False)
class ObjectiveCosts:
    """Costs and taxes of trading the decision assets, in fractions of portfolio value.

    Attributes:
        linear: per asset, cost per unit of weight traded (e.g. impact bps / 10⁴), or None.
        power: per asset, η of the η|Δw|^{3/2} impact term, or None.
        tax: the envelope of each asset's tax of selling, or None.
        gain: the envelope of each asset's realized gain of selling (for ``max_gain``), or None.
        max_gain: cap on realized gains, as a fraction of value, or None.
        loss: the harvestable assets' tax of selling with losses as negative tax (convex, starting
            downward), or None: a SELL_ONLY asset's tax.
        hull: the harvestable assets' ``harvest_hull`` pieces, in the net trade: a RELAXED asset's tax.
        modes: per asset, MAY_BUY, RELAXED or SELL_ONLY (None: no harvesting).
    """

    linear: np.ndarray | None = None
    power: np.ndarray | None = None
    tax: Pieces | None = None
    gain: Pieces | None = None
    max_gain: float | None = None
    loss: Pieces | None = None
    hull: Pieces | None = None
    modes: np.ndarray | None = None

    def charged(self) -> bool:
        """Anything to charge in an objective."""
        return self.linear is not None or self.power is not None or (self.tax is not None and not self.tax.empty)


def envelope(sizes: list[float], slopes: list[float], *, losses: bool = False) -> list[tuple[float, float]]:
    """The convex envelope of the function that sells ``sizes`` in order at ``slopes`` (each
    clamped at 0 unless ``losses``), as (intercept, slope) pieces; [] when it is zero everywhere.

    The lower convex hull of the breakpoints (0, 0), (q₁, f₁), …: its consecutive points give
    the pieces. For ascending slopes it is the function itself.
    """
    points = _breakpoints(sizes, slopes if losses else [max(slope, 0.0) for slope in slopes])
    return [(a, b) for a, b in _lower_hull(points) if b > 0 or losses]


def harvest_hull(sizes: list[float], slopes: list[float], headroom: float) -> list[tuple[float, float]]:
    """The convex envelope of a harvestable name's tax as a function of its net trade Δ = w − w₀,
    as (intercept, slope) pieces in Δ: the tax of selling −Δ with losses negative for Δ < 0 (lots
    in order at ``slopes``), zero for a purchase (Δ ≥ 0, no lot sold), over Δ ≤ ``headroom`` (the
    most it can be bought). The tightest convex bound below both ways of trading the name.
    """
    points = [(-q, f) for q, f in reversed(_breakpoints(sizes, slopes))]
    return _lower_hull(points + ([(headroom, 0.0)] if headroom > 0 else []))


def _breakpoints(sizes: list[float], slopes: list[float]) -> list[tuple[float, float]]:
    """(weight sold, tax) after each lot sold in order: (0, 0), (q₁, f₁), …"""
    points = [(0.0, 0.0)]
    q = f = 0.0
    for size, slope in zip(sizes, slopes, strict=True):
        q, f = q + size, f + size * slope
        points.append((q, f))
    return points


def _lower_hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The lower convex hull of ``points`` (ascending in x) as (intercept, slope) pieces, one per
    pair of its consecutive points."""
    hull: list[tuple[float, float]] = []
    for pt in points:
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], pt) <= 0:
            hull.pop()
        hull.append(pt)
    out = []
    for (x0, y0), (x1, y1) in zip(hull, hull[1:], strict=False):
        if x1 - x0 <= 0:
            continue
        b = (y1 - y0) / (x1 - x0)
        out.append((y0 - b * x0, b))
    return out


def _cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def pieces(per_asset: list[list[tuple[float, float]]]) -> Pieces:
    """Stack per-asset (intercept, slope) lists into one ``Pieces``."""
    rows = [(i, a, b) for i, ps in enumerate(per_asset) for a, b in ps]
    return Pieces(np.array([r[0] for r in rows], dtype=int), np.array([r[1] for r in rows], dtype=float),
                  np.array([r[2] for r in rows], dtype=float))


def cost_terms(c: ObjectiveCosts, w: cp.Expression, current: np.ndarray, k: Any, *,
               charge: bool) -> tuple[cp.Expression | None, list]:
    """The cost and tax (or their perspective, with ``k`` = κ) of moving from ``current`` to ``w``
    when ``charge`` (objectives with a return term), and the constraints defining them; the gain
    cap's constraints are returned whether or not anything is charged. ``k`` is 1 or κ."""
    import cvxpy as cp

    n = len(current)
    cons: list = []
    terms = []
    need_sells = (charge and c.tax is not None and (not c.tax.empty or c.modes is not None)) or (
        c.gain is not None and not c.gain.empty and c.max_gain is not None)
    sells = None
    if need_sells:
        sells = cp.Variable(n, nonneg=True)
        cons.append(sells >= k * current - w)
    if charge and c.modes is not None:
        assert sells is not None
        terms.append(_harvest_tax(c, sells, w, current, k, cons))
    elif charge and c.tax is not None and not c.tax.empty:
        assert sells is not None
        tax = cp.Variable(n, nonneg=True)
        cons.append(tax[c.tax.asset] >= k * c.tax.intercept + cp.multiply(c.tax.slope, sells[c.tax.asset]))
        terms.append(cp.sum(tax))
    if c.gain is not None and not c.gain.empty and c.max_gain is not None:
        assert sells is not None
        gain = cp.Variable(n, nonneg=True)
        cons += [gain[c.gain.asset] >= k * c.gain.intercept + cp.multiply(c.gain.slope, sells[c.gain.asset]),
                 cp.sum(gain) <= k * c.max_gain]
    if charge and (c.linear is not None or c.power is not None):
        traded = cp.Variable(n, nonneg=True)
        cons += [traded >= w - k * current, traded >= k * current - w]
        if c.linear is not None:
            terms.append(c.linear @ traded)
        active = np.flatnonzero(c.power > 0) if c.power is not None else np.zeros(0, dtype=int)
        if len(active):
            assert c.power is not None
            impact = cp.Variable(len(active), nonneg=True)
            if isinstance(k, (int, float)):
                cons.append(impact >= cp.power(traded[active], 1.5))
            else:
                # Perspective of t^{3/2}: impact^{2/3} κ^{1/3} ≥ traded, i.e. impact ≥ traded^{3/2} / κ^{1/2}.
                cons.append(cp.PowCone3D(impact, cp.hstack([k] * len(active)), traded[active], 2.0 / 3.0))
            terms.append(c.power[active] @ impact)
    return (cp.sum(cp.hstack(terms)) if terms else None), cons


def _harvest_tax(c: ObjectiveCosts, sells: cp.Variable, w: cp.Expression, current: np.ndarray, k: Any,
                 cons: list) -> cp.Expression:
    """The tax with the harvestable assets' losses counted as their modes say (see the module's
    docstring); appends its constraints to ``cons``. A SELL_ONLY asset is not bought and sells
    exactly its net sale; a RELAXED asset's tax is the hull, in its net trade."""
    import cvxpy as cp

    assert c.loss is not None and c.hull is not None and c.tax is not None and c.modes is not None
    tax = cp.Variable(len(current))
    plain = np.flatnonzero(c.modes == MAY_BUY)
    if len(plain):
        cons.append(tax[plain] >= 0)
    for pieces_, mode in ((c.tax, MAY_BUY), (c.loss, SELL_ONLY)):
        rows = c.modes[pieces_.asset] == mode
        if rows.any():
            a = pieces_.asset[rows]
            cons.append(tax[a] >= k * pieces_.intercept[rows] + cp.multiply(pieces_.slope[rows], sells[a]))
    only = np.flatnonzero(c.modes == SELL_ONLY)
    if len(only):
        cons.append(sells[only] == k * current[only] - w[only])
    rows = c.modes[c.hull.asset] == RELAXED
    if rows.any():
        a = c.hull.asset[rows]
        cons.append(tax[a] >= k * c.hull.intercept[rows] + cp.multiply(c.hull.slope[rows], w[a] - k * current[a]))
    return cp.sum(tax)
