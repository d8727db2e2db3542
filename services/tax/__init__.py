"""Taxes of a taxable account: lots and their holding terms, which lots a sale takes, the tax
of selling shares (as figures for a preview and as piecewise-linear costs for the optimizer).

An account is taxable when its resolved policy names ``tax_rates``; otherwise nothing here runs
and results are exactly those of a tax-exempt account. Every figure is an estimate from the lots'
recorded cost basis at the pack's closes, never tax advice. This room reads only ``data``: the
capability layer hands it the lots (and booked history) it needs.
"""
