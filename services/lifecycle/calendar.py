"""The pack's trading calendar: which dates trade, and when a rebalancing schedule falls due.

A pack's dates are its trading days: a weekday holiday is simply absent. A schedule's dates are
the first trading date of each period (day, ISO week, month, quarter) on that calendar, so a
monthly schedule after a rebalance on 2022-11-30 falls due on 2022-12-01, and a weekly one after
Friday 2022-07-01 on Tuesday 2022-07-05 (Monday was Independence Day).
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from services.data.models import PricingPack
from services.errors import InputError

Schedule = Literal["daily", "weekly", "monthly", "quarterly"]
SCHEDULES: tuple[str, ...] = ("daily", "weekly", "monthly", "quarterly")


def trading_dates(pack: PricingPack) -> list[date]:
    """The pack's dates in order."""
    return [ts.date() for ts in pack.closes.index]


def check_trading_date(pack: PricingPack, asof: date) -> date:
    """``asof`` if the pack trades on it; otherwise an InputError naming the nearest trading dates."""
    dates = trading_dates(pack)
    if asof in set(dates):
        return asof
    before = [d for d in dates if d < asof]
    after = [d for d in dates if d > asof]
    nearest = [d.isoformat() for d in ([before[-1]] if before else []) + ([after[0]] if after else [])]
    raise InputError(
        f"asof {asof.isoformat()} is not a trading date of pricing pack {pack.id} "
        f"(its dates run {dates[0].isoformat()} to {dates[-1].isoformat()}); nearest trading dates: "
        f"{', '.join(nearest)}",
        details={"field": "asof", "value": asof.isoformat(), "nearest": nearest},
    )


def _period(day: date, schedule: str) -> tuple[int, ...]:
    if schedule == "daily":
        return (day.toordinal(),)
    if schedule == "weekly":
        iso = day.isocalendar()
        return (iso.year, iso.week)
    if schedule == "monthly":
        return (day.year, day.month)
    return (day.year, (day.month - 1) // 3)


def scheduled_date(pack: PricingPack, asof: date, schedule: str) -> date:
    """The latest schedule date on or before ``asof``: the first trading date of ``asof``'s period."""
    period = _period(asof, schedule)
    return next(d for d in trading_dates(pack) if d <= asof and _period(d, schedule) == period)


def schedule_due(
    pack: PricingPack, asof: date, schedule: str, last_rebalance: date | None
) -> tuple[bool, date, str]:
    """Whether ``schedule`` calls for a rebalance on ``asof``, the schedule date and why.

    Due when no rebalance has been booked, or when a schedule date falls after the last booked
    rebalance and on or before ``asof`` (a missed date stays due until a rebalance is booked).
    """
    when = scheduled_date(pack, asof, schedule)
    if last_rebalance is None:
        return True, when, f"{schedule} schedule: no rebalance has been booked yet"
    if when > last_rebalance:
        return True, when, (
            f"{schedule} schedule: rebalance due on {when.isoformat()}, last booked "
            f"{last_rebalance.isoformat()}"
        )
    return False, when, (
        f"{schedule} schedule: last booked {last_rebalance.isoformat()}, on or after this "
        f"period's date {when.isoformat()}"
    )
