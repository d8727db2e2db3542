"""The deterministic core: domain models, stores, importers, estimation and optimization."""
