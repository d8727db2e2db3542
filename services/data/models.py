"""Domain objects: securities, pricing packs, lots and portfolios.

These are plain frozen dataclasses, independent of storage and of any LLM machinery.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from services.errors import InputError

# numpy and pandas are imported where frames are handled, so that listing stored objects (which
# imports these models) does not pay for them.
if TYPE_CHECKING:
    import pandas as pd

USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")

ASSET_CLASSES = ("equity", "etf", "index", "bond", "commodity", "cash", "other")


@dataclass(frozen=True)
class Security:
    """One row of a pack's security master.

    ``halted``: trading in it is suspended on the pack's asof (the ``halted`` column of
    securities.csv); it is then neither bought nor sold, like a security with no close that day.
    """

    symbol: str
    name: str
    sector: str
    asset_class: str
    halted: bool = False


@dataclass(frozen=True, eq=False)
class PricingPack:
    """An immutable snapshot of daily closes and the security master they belong to.

    ``closes`` is a wide frame: a sorted ``DatetimeIndex`` of dates, one float column per symbol,
    NaN where a symbol has no close that day. ``asof`` is the last date in the pack; results
    take their date from it, never from the wall clock.
    """

    id: str
    securities: tuple[Security, ...]
    closes: pd.DataFrame
    content_hash: str = ""

    def __post_init__(self) -> None:
        if not self.content_hash:
            object.__setattr__(self, "content_hash", pack_content_hash(self.securities, self.closes))

    @property
    def asof(self) -> date:
        return self.closes.index[-1].date()

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(s.symbol for s in self.securities)

    def security(self, symbol: str) -> Security:
        return self._by_symbol[symbol]

    @functools.cached_property
    def _by_symbol(self) -> dict[str, Security]:
        return {s.symbol: s for s in self.securities}

    @functools.cached_property
    def halted(self) -> dict[str, str]:
        """Symbols that cannot be traded on the asof, each with why: marked halted in the
        security master, or no close on the asof (both may hold; the mark is named)."""
        out = {s.symbol: "marked halted in the pack" for s in self.securities if s.halted}
        last_row = self.closes.iloc[-1]
        for sym, value in last_row.items():
            if value != value and sym not in out:  # NaN: no close that day
                out[str(sym)] = f"no close on {self.asof.isoformat()}"
        return dict(sorted(out.items()))

    def last_prices(self) -> dict[str, float]:
        """Latest close of every symbol that has one (the price used for trades)."""
        return dict(self._last_prices)

    @functools.cached_property
    def _last_prices(self) -> dict[str, float]:
        # Computed once per pack: forward-filling every column costs about 10 ms at 500 symbols,
        # paid twice per proposal, thousands of times in a batch on one pack.
        import pandas as pd

        last = self.closes.ffill().iloc[-1]
        return {sym: float(v) for sym, v in last.items() if pd.notna(v)}


def pack_content_hash(securities: tuple[Security, ...], closes: pd.DataFrame) -> str:
    """SHA-256 over the security master, the dates, the symbols and the closes' float64 bytes.

    Columns are taken in sorted order and every missing close is the same NaN, so the hash
    depends only on the content, not on how the frame was built or on the pandas version. A
    halted security's line ends in ``|halted``; a security not halted hashes exactly as before
    the flag existed, so a pack without halted securities keeps its hash.
    """
    import numpy as np
    import pandas as pd

    h = hashlib.sha256()
    for s in sorted(securities, key=lambda s: s.symbol):
        flag = "|halted" if s.halted else ""
        h.update(f"S|{s.symbol}|{s.name}|{s.sector}|{s.asset_class}{flag}\n".encode())
    frame = closes[sorted(closes.columns)]
    h.update(("D|" + ",".join(pd.DatetimeIndex(frame.index).strftime("%Y-%m-%d")) + "\n").encode())
    h.update(("C|" + ",".join(frame.columns) + "\n").encode())
    values = np.array(frame.to_numpy(dtype="<f8", na_value=np.nan), dtype="<f8", order="C", copy=True)
    values[np.isnan(values)] = np.nan
    h.update(values.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Lot:
    """A tax lot: whole shares bought at one time and price (basis and date may be unknown)."""

    symbol: str
    shares: int
    cost_basis: Decimal | None = None
    acquired: date | None = None

    def to_json(self) -> dict[str, Any]:
        """The lot as JSON: basis as an exact decimal string, date as ISO, unknowns as null."""
        return {
            "symbol": self.symbol,
            "shares": self.shares,
            "cost_basis": None if self.cost_basis is None else str(self.cost_basis),
            "acquired": None if self.acquired is None else self.acquired.isoformat(),
        }

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Lot:
        """The inverse of ``to_json``."""
        return cls(
            symbol=item["symbol"],
            shares=item["shares"],
            cost_basis=None if item["cost_basis"] is None else Decimal(item["cost_basis"]),
            acquired=None if item["acquired"] is None else date.fromisoformat(item["acquired"]),
        )


@dataclass(frozen=True)
class Portfolio:
    """Cash plus lots. ``owner`` decides who may read it; ``None`` means anyone."""

    id: str
    cash: Decimal
    lots: tuple[Lot, ...] = field(default_factory=tuple)
    owner: str | None = None

    def positions(self) -> dict[str, int]:
        """Total shares per symbol, sorted by symbol, zero positions omitted."""
        totals: dict[str, int] = {}
        for lot in self.lots:
            totals[lot.symbol] = totals.get(lot.symbol, 0) + lot.shares
        return {s: n for s, n in sorted(totals.items()) if n != 0}


def check_user_name(name: object, *, field: str = "user") -> str:
    """``name`` if it is a valid user name; otherwise an InputError naming the field and the rule.

    An empty or blank name is never "no user": the local operator is the absence of a name.
    """
    if not isinstance(name, str) or not USER_NAME.fullmatch(name):
        raise InputError(
            f"{field} {name!r} is not a valid user name: 1-128 letters, digits or _ . @ -, "
            "starting with a letter or digit",
            details={"field": field, "value": name if isinstance(name, str) else repr(name)},
        )
    return name
