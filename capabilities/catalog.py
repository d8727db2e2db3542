"""The optimizer's capabilities, listed once. Callers register them explicitly from here."""

from __future__ import annotations

from capabilities.base import Capability
from capabilities.propose_trades import PROPOSE_TRADES


def optimizer_capabilities() -> tuple[Capability, ...]:
    """Every capability the OptimizerAgent offers, in registration order."""
    return (PROPOSE_TRADES,)
