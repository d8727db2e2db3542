"""Deprecated alias of ``services.allocation.rebalance``, kept for one release (0.2).

``services.rebalance.propose_trades`` was named in the 0.1 README; import it from
``services.allocation.rebalance`` instead.
"""

from __future__ import annotations

import warnings
from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("__"):  # the import system probes __path__ and friends
        raise AttributeError(name)
    from services.allocation import rebalance

    warnings.warn(
        f"services.rebalance.{name} is deprecated; import it from services.allocation.rebalance",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(rebalance, name)
