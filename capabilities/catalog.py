"""The optimizer's capabilities, listed once. Callers register them explicitly from here."""

from __future__ import annotations

from capabilities.analyze_impact import ANALYZE_IMPACT
from capabilities.base import Capability
from capabilities.book_trades import BOOK_TRADES
from capabilities.check_drift import CHECK_DRIFT
from capabilities.propose_trades import PROPOSE_TRADES
from capabilities.suggest_deleveraging_hedges import SUGGEST_DELEVERAGING_HEDGES
from capabilities.suggest_hedges import SUGGEST_HEDGES


def optimizer_capabilities() -> tuple[Capability, ...]:
    """Every capability the OptimizerAgent offers, in registration order."""
    return (PROPOSE_TRADES, ANALYZE_IMPACT, SUGGEST_HEDGES, SUGGEST_DELEVERAGING_HEDGES, CHECK_DRIFT,
            BOOK_TRADES)
