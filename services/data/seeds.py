"""Read the shipped seed files and load them into a store.

Seed files live in the ``seeds`` package under ``optimizer/``. Every function takes an optional
``root`` (a directory laid out the same way) so other seed sets can be used; by default the
packaged one is. Seeding only ever adds what is missing: it never replaces a stored
portfolio, rating or template, and a pack whose content differs from a stored pack of the same
id is refused (packs are frozen).
"""

from __future__ import annotations

import functools
import json
from contextlib import ExitStack
from decimal import Decimal
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from services.data.importers import import_portfolio, read_pack
from services.data.models import PricingPack
from services.data.policy import Policy, parse_overrides
from services.data.store import Store
from services.errors import InputError

M = TypeVar("M", bound=BaseModel)

SEED_PACKAGE = "seeds"
SEED_DIR = "optimizer"


def seed_root() -> Traversable:
    """The packaged seed directory, ``seeds/optimizer``."""
    return resources.files(SEED_PACKAGE) / SEED_DIR


def load_constraint_defaults(root: Traversable | None = None) -> dict[str, Any]:
    """Policy defaults from ``constraint_defaults.json``, money fields as Decimal, no "version".

    The defaults are validated as a Policy here, so a broken seed file fails on load rather
    than on the first request.
    """
    raw = dict(read_seed_json(root or seed_root(), "constraint_defaults.json"))
    raw.pop("version", None)
    money = {name for name, f in Policy.model_fields.items() if f.annotation is Decimal}
    defaults = {k: Decimal(str(v)) if k in money else v for k, v in raw.items()}
    unknown = sorted(set(defaults) - set(Policy.model_fields))
    if unknown:
        raise InputError(
            f"constraint_defaults.json: unknown field(s) {', '.join(unknown)}",
            details={"unknown_fields": unknown},
        )
    Policy.model_validate(defaults)
    return defaults


def load_benchmarks(root: Traversable | None = None) -> dict[str, dict[str, float]]:
    """Named benchmarks from ``benchmarks.json``: {name: {symbol: weight}}, sorted."""
    data = read_seed_json(root or seed_root(), "benchmarks.json")
    return {
        name: {sym: float(w) for sym, w in sorted(spec["weights"].items())}
        for name, spec in sorted(data["benchmarks"].items())
    }


def load_policy_templates(root: Traversable | None = None) -> list[dict[str, Any]]:
    """Policy templates from ``policy_templates.json``, each validated, sorted by id."""
    data = read_seed_json(root or seed_root(), "policy_templates.json")
    templates = sorted(data["templates"], key=lambda t: t["id"])
    for t in templates:
        parse_overrides(t["policy"], where=f"policy_templates.json template {t['id']}")
    return templates


def load_seed_pack(pack_id: str, root: Traversable | None = None) -> PricingPack:
    """Read one seed pack from ``packs/<pack_id>/`` (prices.csv or prices.csv.gz, securities.csv)."""
    return _load_pack(root or seed_root(), pack_id)


def seed_pack_ids(root: Traversable | None = None) -> list[str]:
    """Ids of the seed packs (the directory names under ``packs/``), sorted."""
    packs = (root or seed_root()) / "packs"
    return sorted(p.name for p in packs.iterdir() if p.is_dir()) if packs.is_dir() else []


def seed_ratings_source(root: Traversable | None = None) -> str:
    """Where the seeded quality ratings say they come from (the demo's: ``demo``)."""
    return str(read_seed_json(root or seed_root(), "quality_ratings.json")["source"])


def seed_if_empty(store: Store, root: Traversable | None = None) -> bool:
    """Seed an empty store, under the store's setup lock; True if this call seeded it.

    Several processes starting on a fresh home at once: the first seeds, the others wait for
    the lock, then find the store seeded and leave it alone.
    """
    with store.exclusive():
        if not store.is_empty():
            return False
        seed(store, root)
        return True


def seed(store: Store, root: Traversable | None = None) -> dict[str, dict[str, list[str]]]:
    """Add every seed object the store lacks; report what was added and what was already there.

    Everything is read and validated before anything is written, so a broken seed file writes
    nothing. Portfolios are validated against the seed pack with the latest asof. Each object
    is then written in its own transaction, packs first, so a re-run completes an interrupted
    seeding.
    """
    base = root or seed_root()
    packs = [load_seed_pack(pack_id, base) for pack_id in seed_pack_ids(base)]
    latest = max(packs, key=lambda p: (p.asof, p.id)) if packs else None
    ratings_file = read_seed_json(base, "quality_ratings.json")
    templates = load_policy_templates(base)
    stored_portfolios = {p["id"] for p in store.list_portfolios()}
    new_portfolios = []
    for spec in sorted(read_seed_json(base, "portfolios.json")["portfolios"], key=lambda s: s["id"]):
        if spec["id"] not in stored_portfolios:
            with resources.as_file(base / spec["positions"]) as positions:
                portfolio = import_portfolio(
                    spec["id"], positions, Decimal(spec["cash"]), spec.get("owner"), latest
                )
            new_portfolios.append((portfolio, spec.get("description", "")))

    summary = {"packs": _split([(p.id, store.put_pack(p)) for p in packs])}
    stored_ratings = store.get_ratings()
    new_ratings = {
        s: float(v) for s, v in ratings_file["ratings"].items() if s not in stored_ratings
    }
    store.put_ratings(new_ratings, source=ratings_file["source"])
    summary["ratings"] = _split([(s, s in new_ratings) for s in ratings_file["ratings"]])
    stored_policies = {p["id"] for p in store.list_policies()}
    for t in templates:
        if t["id"] not in stored_policies:
            store.put_policy_template(t["id"], t["method_version"], t["description"], t["policy"])
    summary["policies"] = _split([(t["id"], t["id"] not in stored_policies) for t in templates])
    for portfolio, description in new_portfolios:
        store.put_portfolio(portfolio, description=description)
    summary["portfolios"] = _split(
        [
            (p["id"], p["id"] not in stored_portfolios)
            for p in read_seed_json(base, "portfolios.json")["portfolios"]
        ]
    )
    return summary


def _split(outcomes: list[tuple[str, bool]]) -> dict[str, list[str]]:
    return {
        "added": sorted(k for k, new in outcomes if new),
        "present": sorted(k for k, new in outcomes if not new),
    }


# Seed files do not change while a process runs; caching spares re-parsing the demo pack (the
# slow part) each time a store is seeded, e.g. once per test.
@functools.lru_cache(maxsize=32)
def read_seed_json(root: Traversable, name: str) -> Any:
    """Seed file ``name`` under ``root`` as JSON; a missing or malformed file is an input error naming it."""
    path = root / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"seed file {path} not found", details={"file": str(path)}) from exc
    except json.JSONDecodeError as exc:
        raise InputError(
            f"seed file {path} is not valid JSON: {exc}",
            details={"file": str(path), "line": exc.lineno},
        ) from exc


# Seed files do not change while a process runs; parsing them once per root is enough.
@functools.lru_cache(maxsize=16)
def load_seed_model(root: Traversable, name: str, model: type[M]) -> M:
    """Seed file ``name`` under ``root`` parsed into ``model``; any problem is an input error naming it."""
    raw = read_seed_json(root, name)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()]
        raise InputError(f"seed file {name} is invalid: " + "; ".join(problems[:6]),
                         details={"file": str(root / name), "problems": problems}) from exc


@functools.lru_cache(maxsize=8)
def _load_pack(root: Traversable, pack_id: str) -> PricingPack:
    directory = root / "packs" / pack_id
    prices = directory / "prices.csv"
    if not prices.is_file():
        prices = directory / "prices.csv.gz"
    with ExitStack() as stack:
        prices_path = stack.enter_context(resources.as_file(prices))
        securities_path = stack.enter_context(resources.as_file(directory / "securities.csv"))
        return read_pack(pack_id, prices_path, securities_path)
