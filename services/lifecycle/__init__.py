"""The rebalancing lifecycle: targets, drift and schedules, booking approved trades, history.

Imports every room below it; nothing below imports it.
"""
