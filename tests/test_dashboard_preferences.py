"""The dashboard's preferences page and asset-class mix, in headless Chromium against a real
``optimizer serve`` on 127.0.0.1 (the browser set-up, skip rule and layout check are
test_dashboard's)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from serving import Server, add_user, as_json, cli, client
from test_dashboard import DESKTOP, PHONE, TARGETS, _fits, _page, _sign_in, browser  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

PID = "demo_diversified"


@dataclass
class Served:
    env: dict[str, str]
    server: Server
    demo_key: str
    mallory_key: str
    shots: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("dashboard-preferences")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIMIZER_")}
    env["OPTIMIZER_HOME"] = str(directory / "home")
    assert cli("seed", env=env).returncode == 0
    done = cli("targets", "set", PID, "--weights", str(TARGETS), env=env)
    assert done.returncode == 0, done.stderr
    demo_key, mallory_key = add_user("demo", env), add_user("mallory", env)
    server = Server(env)
    try:
        yield Served(env, server, demo_key, mallory_key, directory / "screenshots")
    finally:
        server.stop()


def _stored(served: Served) -> dict[str, Any]:
    with client(served.server, served.demo_key) as demo:
        return as_json(demo.get(f"/v1/portfolios/{PID}/preferences"))


def test_edit_save_reload_and_the_portfolio_page_uses_them(served: Served, browser: Any) -> None:  # noqa: F811
    page = _page(browser, DESKTOP)
    _sign_in(page, served, served.demo_key)
    page.click(f"tr:has-text('{PID}') a:has-text('Preferences')")
    page.wait_for_selector("#preferences-form")
    assert page.input_value("#band_pct") == "5" and page.input_value("#schedule") == "none"
    page.fill("#band_pct", "7.5")
    page.select_option("#schedule", "monthly")
    page.fill("#approval_threshold", "25000")
    page.fill("#restricted_symbols", "XOM, CVX")
    page.click("#preferences-form button[type=submit]")
    page.wait_for_selector("#preferences-status :text('Saved as version 1.')")
    assert "monthly" in page.inner_text("#preferences-current")
    stored = _stored(served)
    assert stored["version"] == 1 and stored["changed_by"] == "demo"
    assert stored["preferences"] == {"band_pct": 7.5, "relative_band_pct": None, "schedule": "monthly",
                                     "approval_threshold": 25000.0, "restricted_symbols": ["CVX", "XOM"],
                                     "frozen_symbols": []}
    _fits(page, "desktop-preferences", served.shots)

    page.reload()  # the key is in sessionStorage: the same tab stays signed in
    page.wait_for_selector("#preferences-form")
    assert page.input_value("#band_pct") == "7.5" and page.input_value("#schedule") == "monthly"
    assert page.input_value("#approval_threshold") == "25000"
    assert page.input_value("#restricted_symbols") == "CVX, XOM"
    assert page.locator("#preferences-history tbody tr").count() == 1

    page.click("a:has-text('Back to the portfolio')")
    page.wait_for_selector("#drift-chart .main-svg")
    prefs = page.inner_text("#preferences")
    assert "±7.50 pp" in prefs and "monthly" in prefs and "$25,000.00" in prefs and "CVX, XOM" in prefs
    # The drift check now uses the stored band and schedule: XOM's 6.93 points are inside 7.5,
    # but no rebalance has ever been booked, so the monthly schedule makes one due.
    explanation = page.inner_text("#drift")
    assert "monthly schedule: no rebalance has been booked yet" in explanation
    assert "outside the band" not in explanation
    with client(served.server, served.demo_key) as demo:
        demo.put(f"/v1/portfolios/{PID}/preferences", json={})


def test_a_bad_value_shows_the_apis_message_and_saves_nothing(served: Served, browser: Any) -> None:  # noqa: F811
    before = _stored(served)
    page = _page(browser, DESKTOP)
    _sign_in(page, served, served.demo_key)
    page.goto(f"{served.server.url}/#/preferences/{PID}")
    page.wait_for_selector("#preferences-form")
    page.fill("#band_pct", "0")
    page.fill("#frozen_symbols", "NOPE1")
    page.click("#preferences-form button[type=submit]")
    alert = page.wait_for_selector("#preferences-status [role=alert]")
    with client(served.server, served.demo_key) as demo:
        answer = demo.put(f"/v1/portfolios/{PID}/preferences", json={
            "band_pct": 0, "relative_band_pct": None, "schedule": "none", "approval_threshold": None,
            "restricted_symbols": [], "frozen_symbols": ["NOPE1"]})
    assert answer.status_code == 422
    assert alert.inner_text() == as_json(answer)["message"]
    assert "band_pct 0" in alert.inner_text()
    assert _stored(served) == before


def test_another_users_preferences_are_not_reachable_by_url(served: Served, browser: Any) -> None:  # noqa: F811
    page = _page(browser, DESKTOP)
    _sign_in(page, served, served.mallory_key)
    page.goto(f"{served.server.url}/#/preferences/{PID}")
    alert = page.wait_for_selector("[role=alert]")
    assert "not found" in alert.inner_text()
    assert page.locator("#preferences-form").count() == 0


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_asset_class_mix_beside_the_sector_mix_and_layout_fits(
    served: Served, browser: Any, viewport: dict[str, int]  # noqa: F811
) -> None:
    page = _page(browser, viewport)
    _sign_in(page, served, served.demo_key)
    page.goto(f"{served.server.url}/#/portfolio/{PID}")
    page.wait_for_selector("#asset-class-chart .main-svg")
    page.wait_for_selector("#sector-chart .main-svg")
    with client(served.server, served.demo_key) as demo:
        mix = as_json(demo.get(f"/v1/portfolios/{PID}/mix"))
    rows = page.locator("#asset-mix table tbody tr").all_inner_texts()
    assert [r.split("\t")[0] for r in rows] == [line["name"] for line in mix["asset_classes"]]
    cash = next(r for r in rows if r.startswith("cash"))
    assert f"{next(c for c in mix['asset_classes'] if c['name'] == 'cash')['weight_pct']:.2f}%" in cash
    sector_box = page.locator("#mix").bounding_box()
    class_box = page.locator("#asset-mix").bounding_box()
    if viewport is DESKTOP:  # side by side
        assert abs(sector_box["y"] - class_box["y"]) < 1 and class_box["x"] > sector_box["x"]
    else:  # one column
        assert class_box["y"] > sector_box["y"] and abs(class_box["x"] - sector_box["x"]) < 1
    name = "desktop" if viewport is DESKTOP else "phone"
    _fits(page, f"{name}-portfolio-mix", served.shots)
    page.goto(f"{served.server.url}/#/preferences/{PID}")
    page.wait_for_selector("#preferences-form")
    _fits(page, f"{name}-preferences-page", served.shots)
