"""Capability declarations, their registry and the runner that calls them."""
