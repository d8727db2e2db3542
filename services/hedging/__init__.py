"""Hedging: the stress-scenario library and hedge instrument catalogue (``scenarios``),
per-holding factor exposures (``exposures``), scenario P&L and hedge sizing (``hedge_sizing``)
and regime playbooks applied to a portfolio (``regimes``). May import every room below it
(``data`` to ``analytics``).
"""
