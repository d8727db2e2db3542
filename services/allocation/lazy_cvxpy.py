"""cvxpy, imported when something is solved and without the part of SciPy it never uses here.

``import cvxpy`` loads every atom, and one of them (``quantum_rel_entr``, which no problem here
builds) runs ``from scipy.stats import entropy`` at import: the whole of ``scipy.stats``,
0.25-0.3 s of CPU, about 40% of cvxpy's import and a sixth of a cold ``optimizer call``. While
``import_cvxpy`` imports cvxpy, ``scipy.stats`` is a stand-in module whose attributes are
forwarders: each loads the real ``scipy.stats`` the first time it is called or read, and then
behaves as the real attribute. The stand-in is removed as soon as cvxpy is imported, so any later
``import scipy.stats`` (riskfolio, a test, the host application) gets the real module.

If ``scipy.stats`` is already loaded, cvxpy is imported as usual. Nothing here changes what
cvxpy computes: no problem we build touches the forwarded attribute.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

STATS = "scipy.stats"
# Marks the stand-in, so that only it is ever removed from sys.modules.
STAND_IN_FLAG = "__optimizer_stand_in__"


class DeferredStatsAttribute:
    """An attribute of ``scipy.stats`` that loads the real module the first time it is used."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _target(self) -> Any:
        return getattr(real_scipy_stats(), self._name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._target(), attr)

    def __repr__(self) -> str:
        return f"<scipy.stats.{self._name}, loaded on first use>"


def _stand_in_attribute(name: str) -> DeferredStatsAttribute:
    """The stand-in's module ``__getattr__`` (PEP 562): a forwarder for any public name."""
    if name.startswith("__"):
        # The import system probes dunders (__path__, ...): the stand-in is a plain module.
        raise AttributeError(name)
    return DeferredStatsAttribute(name)


def real_scipy_stats() -> ModuleType:
    """The real ``scipy.stats``, importing it (and dropping a stand-in still in place) if needed."""
    current = sys.modules.get(STATS)
    if current is not None and getattr(current, STAND_IN_FLAG, False):
        del sys.modules[STATS]
    return importlib.import_module(STATS)


def import_cvxpy() -> ModuleType:
    """The ``cvxpy`` module, imported on first use with ``scipy.stats`` deferred (module docstring)."""
    if "cvxpy" in sys.modules or STATS in sys.modules:
        # Already imported (or being imported by another thread, which the import lock waits for),
        # or scipy.stats is already paid for.
        import cvxpy

        return cvxpy
    stand_in = ModuleType(STATS, "A stand-in for scipy.stats while cvxpy is imported.")
    setattr(stand_in, STAND_IN_FLAG, True)
    stand_in.__getattr__ = _stand_in_attribute  # type: ignore[method-assign]
    sys.modules[STATS] = stand_in
    try:
        import cvxpy
    finally:
        if sys.modules.get(STATS) is stand_in:
            del sys.modules[STATS]
    return cvxpy
