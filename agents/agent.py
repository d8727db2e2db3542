"""``OptimizerAgent``: the plugin an orchestrator loads. It registers the capabilities explicitly,
describes them, and executes them by name through the capability runner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from capabilities.base import RequestContext, Services
from capabilities.catalog import optimizer_capabilities
from capabilities.registry import CapabilityRegistry
from capabilities.runner import CapabilityRunner
from services.seeds import load_benchmarks, load_constraint_defaults, seed
from services.store import Store


class OptimizerAgent:
    """Portfolio-optimizer capabilities over one store.

    ``OptimizerAgent()`` uses the embedded store under ``$OPTIMIZER_HOME`` (seeding demo data into
    an empty one); pass ``store=`` to use another.
    """

    def __init__(self, store: Store | None = None, *, home: Path | None = None):
        if store is None:
            from agents.wiring import open_store

            store = open_store(home)
            if store.is_empty():
                seed(store)
        self.store = store
        self.registry = CapabilityRegistry()
        for capability in optimizer_capabilities():
            self.registry.register(capability)
        services = Services(store=store, constraint_defaults=load_constraint_defaults(),
                            benchmarks=load_benchmarks())
        self.runner = CapabilityRunner(self.registry, services)

    def describe(self) -> list[dict[str, Any]]:
        """Each capability's name, description, input and output JSON Schemas, TTL and source."""
        return [c.describe() for c in self.registry]

    def execute(self, name: str, request: Any, ctx: RequestContext | None = None) -> dict[str, Any]:
        """Run capability ``name`` on ``request``; the result carries ``_metadata``."""
        return self.runner.run(name, request, ctx or RequestContext())
