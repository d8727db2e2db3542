"""A portfolio's rebalancing preferences: drift bands, schedule, approval threshold, restrictions.

They are the defaults of the lifecycle for that portfolio. Each setting is resolved, first that
applies wins:

1. the request (``optimizer.check_drift``'s ``band_pct``/``relative_band_pct``/``schedule``, a
   request's ``policy.approval_threshold``, a pattern input);
2. the portfolio's preferences (this module);
3. the policy template (only ``approval_threshold`` is a policy field);
4. the built-in default: band 5 points, no relative band, no schedule, $10,000.

Restricted and frozen symbols are the portfolio's restrictions (``Store.set_restrictions``); a
request's own restricted/frozen symbols are added to them, never remove them. Every change is a
new version: the old ones stay readable (``history``). Access follows the portfolio: its owner
(or the local operator) reads and writes them; to anyone else they do not exist.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from services.data.bounds import MAX_AMOUNT
from services.data.policy import Policy, PolicyOverrides
from services.errors import InputError
from services.lifecycle.calendar import SCHEDULES
from services.lifecycle.drift import DEFAULT_BAND_PCT

if TYPE_CHECKING:
    from services.data.store import Store

NO_SCHEDULE = "none"
SCHEDULE_CHOICES: tuple[str, ...] = (NO_SCHEDULE, *SCHEDULES)
MAX_RELATIVE_BAND_PCT = 1000.0
SYMBOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/^=-]{0,63}$")

FIELD_RULES: dict[str, str] = {
    "band_pct": "a number of percentage points greater than 0 and at most 100",
    "relative_band_pct": f"null (no relative band) or a % of the target weight greater than 0 and at most "
                         f"{MAX_RELATIVE_BAND_PCT:g}",
    "schedule": "one of " + ", ".join(SCHEDULE_CHOICES),
    "approval_threshold": f"null (the policy's threshold) or an amount from 0 to {MAX_AMOUNT}",
    "restricted_symbols": "a list of ticker symbols (letters, digits, . _ - : / ^ =; at most 64 characters)",
    "frozen_symbols": "a list of ticker symbols (letters, digits, . _ - : / ^ =; at most 64 characters)",
}


class RebalancingPreferences(BaseModel):
    """How one portfolio is rebalanced unless a request says otherwise."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    band_pct: float = Field(
        DEFAULT_BAND_PCT, gt=0, le=100,
        description="Drift threshold in percentage points: a weight further than this from its target "
        "makes a rebalance due (default 5).",
    )
    relative_band_pct: float | None = Field(
        None, gt=0, le=MAX_RELATIVE_BAND_PCT,
        description="Optional relative band, % of each target weight (25 = ±25% of the target); null: none.",
    )
    schedule: Literal["none", "daily", "weekly", "monthly", "quarterly"] = Field(
        NO_SCHEDULE,
        description="Calendar schedule on the pack's trading dates: none (bands only), daily, weekly, "
        "monthly or quarterly.",
    )
    approval_threshold: Decimal | None = Field(
        None, ge=0, le=MAX_AMOUNT,
        description="Total trade value above which a person must approve before booking; null: the "
        "policy template's, else $10,000.",
    )
    restricted_symbols: list[str] = Field(
        default_factory=list, description="Never bought (a holding may be kept or sold)."
    )
    frozen_symbols: list[str] = Field(
        default_factory=list, description="Never traded: neither bought nor sold."
    )

    @field_validator("restricted_symbols", "frozen_symbols", mode="before")
    @classmethod
    def _symbols(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        cleaned = [s.strip() if isinstance(s, str) else s for s in value]
        bad = [s for s in cleaned if not isinstance(s, str) or not SYMBOL.match(s)]
        if bad:
            raise ValueError(f"not ticker symbols: {', '.join(repr(s) for s in bad)}")
        return sorted(set(cleaned))

    @model_validator(mode="after")
    def _not_both(self) -> RebalancingPreferences:
        both = sorted(set(self.restricted_symbols) & set(self.frozen_symbols))
        if both:
            raise ValueError(
                f"{', '.join(both)} cannot be both restricted and frozen (frozen already means never traded)"
            )
        return self

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, keys sorted; the threshold as a number with cents (null when inherited)."""
        data = self.model_dump(mode="json")
        data["approval_threshold"] = None if self.approval_threshold is None else float(self.approval_threshold)
        return dict(sorted(data.items()))


def parse_preferences(data: Any) -> RebalancingPreferences:
    """Validated preferences from JSON-like ``data``.

    Raises:
        InputError: one message listing every bad field with its value and what is allowed;
            ``details.errors`` has ``field``, ``value``, ``allowed`` and ``message`` for each.
    """
    if not isinstance(data, dict):
        raise InputError(
            f"preferences must be a JSON object with the fields {', '.join(FIELD_RULES)}; got {type(data).__name__}",
            details={"field": "preferences", "allowed": sorted(FIELD_RULES)},
        )
    try:
        return RebalancingPreferences.model_validate(data)
    except ValidationError as exc:
        errors = [_error(e, data) for e in exc.errors()]
        raise InputError(
            "preferences: " + "; ".join(
                f"{e['field']} {e['value']!r}: {e['message']} (allowed: {e['allowed']})" for e in errors
            ),
            details={"errors": errors},
        ) from exc


def _error(e: Any, data: dict[str, Any]) -> dict[str, Any]:
    # A model-level error (a symbol both restricted and frozen) has no location: it is the frozen list's.
    field = str(e["loc"][0]) if e["loc"] else "frozen_symbols"
    if e["type"] == "extra_forbidden":
        return {"field": field, "value": _plain(data.get(field)), "message": "unknown field",
                "allowed": "only the fields " + ", ".join(FIELD_RULES)}
    allowed = FIELD_RULES[field] if e["loc"] else "no symbol both in restricted_symbols and in frozen_symbols"
    return {"field": field, "value": _plain(data.get(field)),
            "message": str(e["msg"]).removeprefix("Value error, "), "allowed": allowed}


def _plain(value: Any) -> Any:
    """``value`` as it can be shown in JSON (a non-finite number or an odd object as text)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return repr(value)


def current(store: Store, portfolio_id: str) -> RebalancingPreferences:
    """The portfolio's preferences now (built-in defaults where never set); no access check.

    The restrictions are read from the store's restriction table, which is what proposals use.
    """
    latest = store.get_preferences(portfolio_id)
    stored = dict(latest["preferences"]) if latest else {}
    stored.update({f"{kind}_symbols": symbols for kind, symbols in store.get_restrictions(portfolio_id).items()})
    return RebalancingPreferences.model_validate(stored)


def read(store: Store, portfolio_id: str, *, user: str | None) -> dict[str, Any]:
    """What ``preferences show`` and ``GET .../preferences`` return for a portfolio ``user`` may use.

    ``version`` is 0 while nothing was ever set (every value is then the built-in default).

    Raises:
        NotFoundError: no such portfolio, or (to a named user) someone else's.
    """
    store.check_portfolio_access(portfolio_id, user=user)
    latest = store.get_preferences(portfolio_id)
    return {
        "portfolio_id": portfolio_id,
        "version": latest["version"] if latest else 0,
        "changed_by": latest["changed_by"] if latest else None,
        "changed_at": latest["changed_at"] if latest else None,
        "preferences": current(store, portfolio_id).to_json(),
        "defaults": RebalancingPreferences().to_json(),
    }


def history(store: Store, portfolio_id: str, *, user: str | None) -> list[dict[str, Any]]:
    """Every version of a portfolio's preferences, oldest first (who, when, the values).

    Raises:
        NotFoundError: no such portfolio, or (to a named user) someone else's.
    """
    store.check_portfolio_access(portfolio_id, user=user)
    return [
        {"version": v["version"], "changed_by": v["changed_by"], "changed_at": v["changed_at"],
         "preferences": RebalancingPreferences.model_validate(v["preferences"]).to_json()}
        for v in store.list_preferences(portfolio_id)
    ]


def write(
    store: Store, portfolio_id: str, values: Any, *, user: str | None, merge: bool = False
) -> dict[str, Any]:
    """Store new preferences as the next version and return them as ``read`` does.

    With ``merge`` the fields given change and the others keep their current values (the CLI's
    ``set``); without it ``values`` is the whole set and an omitted field takes its default (HTTP
    ``PUT``). Nothing is written when a value is invalid.

    Raises:
        NotFoundError: no such portfolio, or (to a named user) someone else's.
        InputError: a bad field (named, with its value and what is allowed).
    """
    store.check_portfolio_access(portfolio_id, user=user)
    if merge:
        if not isinstance(values, dict):
            raise InputError("preferences must be a JSON object", details={"field": "preferences"})
        values = {**current(store, portfolio_id).model_dump(mode="json"), **values}
    prefs = parse_preferences(values)
    errors = [
        {"field": field, "value": unknown, "message": "not in any stored pricing pack",
         "allowed": "symbols of a stored pricing pack (symbols are case-sensitive)"}
        for field in ("restricted_symbols", "frozen_symbols")
        if (unknown := store.unknown_symbols(getattr(prefs, field)))
    ]
    if errors:
        # A mistyped symbol would silently restrict nothing: refused rather than stored.
        raise InputError(
            "preferences: " + "; ".join(
                f"{e['field']} {', '.join(e['value'])}: not in any stored pricing pack (symbols are case-sensitive)"
                for e in errors
            ),
            details={"errors": errors},
        )
    store.put_preferences(portfolio_id, prefs.model_dump(mode="json"), changed_by=user)
    return read(store, portfolio_id, user=user)


def with_approval_threshold(
    policy: Policy, prefs: RebalancingPreferences, overrides: PolicyOverrides | None
) -> Policy:
    """``policy`` with the portfolio's approval threshold, unless the request set its own.

    ``policy`` is already resolved from the template and the request; the portfolio's threshold
    sits between them: it beats the template's (and the built-in default), not the request's.
    """
    if prefs.approval_threshold is None or (
        overrides is not None and "approval_threshold" in overrides.model_fields_set
        and overrides.approval_threshold is not None
    ):
        return policy
    return policy.model_copy(update={"approval_threshold": prefs.approval_threshold})


def drift_settings(
    prefs: RebalancingPreferences, *, band_pct: float | None, relative_band_pct: float | None,
    schedule: str | None,
) -> tuple[float, float | None, str | None]:
    """The band, relative band and schedule a drift check uses: the request's where given, else
    the portfolio's. A request's ``schedule`` of ``"none"`` turns the portfolio's schedule off."""
    chosen = schedule if schedule is not None else prefs.schedule
    return (
        band_pct if band_pct is not None else prefs.band_pct,
        relative_band_pct if relative_band_pct is not None else prefs.relative_band_pct,
        None if chosen == NO_SCHEDULE else chosen,
    )
