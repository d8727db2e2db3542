"""A registry of capabilities, filled explicitly by whoever builds it (importing registers nothing)."""

from __future__ import annotations

from collections.abc import Iterator

from capabilities.base import Capability
from services.errors import InputError


class CapabilityRegistry:
    def __init__(self) -> None:
        self._by_name: dict[str, Capability] = {}

    def register(self, capability: Capability) -> None:
        if capability.name in self._by_name:
            raise ValueError(f"capability {capability.name} is already registered")
        self._by_name[capability.name] = capability

    def get(self, name: str) -> Capability:
        try:
            return self._by_name[name]
        except KeyError:
            raise InputError(
                f"unknown capability '{name}'; registered: {', '.join(self.names())}",
                code="unknown_capability",
                details={"field": "capability", "value": name, "allowed": self.names()},
            ) from None

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __iter__(self) -> Iterator[Capability]:
        return iter(self._by_name[n] for n in self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._by_name
