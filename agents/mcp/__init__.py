"""The Model Context Protocol adapter: ``server`` (transports, the call handler) and ``tools`` (what it offers)."""
