"""The dashboard end to end: a real ``optimizer serve`` on 127.0.0.1, driven by headless Chromium.

Chromium is the OS package (``apt-get install chromium``), launched by Playwright from its path;
browsers are never downloaded. Without it the browser tests skip, except under ``CI=true``,
where a missing browser fails the run. The read endpoints the pages use are tested with httpx.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from serving import Server, add_user, as_json, cli, client

pytestmark = pytest.mark.slow

PACK = "PP_2022-12-28"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
TARGETS = Path(__file__).resolve().parents[1] / "patterns" / "examples" / "targets_demo_diversified.csv"


@dataclass
class Served:
    env: dict[str, str]
    server: Server
    demo_key: str
    mallory_key: str
    shots: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("dashboard")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIMIZER_")}
    env["OPTIMIZER_HOME"] = str(directory / "home")
    assert cli("seed", env=env).returncode == 0
    # No policy: drift_rebalance then trades under the house defaults (quality_focused's 2%
    # tracking-error limit cannot be met by this target).
    done = cli("targets", "set", "demo_diversified", "--weights", str(TARGETS), env=env)
    assert done.returncode == 0, done.stderr
    demo_key, mallory_key = add_user("demo", env), add_user("mallory", env)
    server = Server(env)
    try:
        yield Served(env, server, demo_key, mallory_key, directory / "screenshots")
    finally:
        server.stop()


# --- the read endpoints the pages use ---------------------------------------------------------

def test_portfolio_detail_lists_shares_cash_target_and_restrictions(served: Served) -> None:
    with client(served.server, served.demo_key) as demo:
        detail = as_json(demo.get("/v1/portfolios/demo_diversified"))
    listed = next(p for p in as_json(client(served.server, served.demo_key).get("/v1/portfolios"))
                  if p["id"] == "demo_diversified")
    assert detail["cash"] == float(listed["cash"])
    assert len(detail["positions"]) == listed["n_symbols"]
    assert [p["symbol"] for p in detail["positions"]] == sorted(p["symbol"] for p in detail["positions"])
    assert {"symbol": "AAPL", "shares": 450} in detail["positions"]
    # The target is the CSV just set: same weights, version 1.
    rows = [line.split(",") for line in TARGETS.read_text().splitlines()[1:] if line]
    assert detail["target"]["version"] == 1 and detail["target"]["policy_id"] is None
    assert detail["target"]["weights_pct"] == {s: float(w) for s, w in rows}
    assert detail["restrictions"] == {"restricted": [], "frozen": []}
    assert detail["version"] == 1


def test_another_users_portfolio_and_its_history_answer_like_a_missing_one(served: Served) -> None:
    with client(served.server, served.mallory_key) as mallory:
        for path in ("/v1/portfolios/{}", "/v1/portfolios/{}/history"):
            theirs = mallory.get(path.format("demo_diversified"))
            missing = mallory.get(path.format("no_such_pf"))
            assert theirs.status_code == missing.status_code == 404
            assert as_json(theirs)["message"] == as_json(missing)["message"].replace("no_such_pf", "demo_diversified")
    with client(served.server, None) as anonymous:
        assert anonymous.get("/v1/portfolios/demo_diversified").status_code == 401


def test_the_page_and_plotly_are_served_without_a_key(served: Served) -> None:
    with client(served.server, None) as anonymous:
        page = anonymous.get("/")
        assert page.status_code == 200 and "/dashboard/app.js" in page.text
        bundle = anonymous.get("/dashboard/vendor/plotly.min.js")
        assert bundle.status_code == 200 and bundle.headers["content-type"].startswith("text/javascript")
        assert b"plotly.js" in bundle.content[:2000]


# --- the browser ------------------------------------------------------------------------------

def missing_browser(chromium: Path) -> str | None:
    """Why the browser tests cannot run here (with how to fix it), or None when they can."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed: pip install -e '.[dev]'"
    if not chromium.is_file():
        return f"no Chromium at {chromium}: install it with `apt-get install chromium`"
    return None


def skip_or_fail(missing: str, environ: dict[str, str]) -> None:
    """Under CI (CI=true) a missing browser fails the run; elsewhere the browser tests skip."""
    if environ.get("CI") == "true":
        pytest.fail(f"browser tests need a browser under CI: {missing}")
    pytest.skip(f"browser tests skipped: {missing}")


def test_a_missing_browser_skips_with_advice_and_fails_under_ci(tmp_path: Path) -> None:
    missing = missing_browser(tmp_path / "chromium")
    assert missing is not None and "apt-get install chromium" in missing
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        skip_or_fail(missing, {})
    with pytest.raises(pytest.fail.Exception, match="under CI"):
        skip_or_fail(missing, {"CI": "true"})


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = missing_browser(CHROMIUM)
    if missing:
        skip_or_fail(missing, dict(os.environ))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _page(browser: Any, viewport: dict[str, int]) -> Any:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(120_000)  # a cold optimization on a shared 2-core machine
    return page


def _sign_in(page: Any, served: Served, key: str) -> None:
    page.goto(served.server.url + "/")
    page.fill("#api-key", key)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Your portfolios')")
    assert key not in page.url
    assert page.evaluate("sessionStorage.getItem('optimizer.apiKey')") == key


def _fits(page: Any, name: str, shots: Path) -> None:
    """A screenshot, and nothing wider than the viewport (wide tables scroll inside their box)."""
    shots.mkdir(exist_ok=True)
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    width, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= inner, f"{name}: page is {width}px wide in a {inner}px viewport"


def test_a_manager_reviews_optimizes_approves_and_finds_it_in_the_history(
    served: Served, browser: Any
) -> None:
    page = _page(browser, DESKTOP)
    _sign_in(page, served, served.demo_key)
    listed = page.locator("table tbody tr td:first-child a").all_inner_texts()
    assert listed == ["demo_concentrated", "demo_diversified", "demo_quality"]

    page.click("text=demo_diversified")
    page.wait_for_selector("#drift-chart .main-svg")  # Plotly drew the chart
    assert page.inner_text("#verdict") == "Rebalance due"
    drift_rows = page.locator("#drift table tbody tr")
    assert drift_rows.count() == 21  # 20 targeted symbols and CASH, as numbers beside the chart
    xom = page.locator("#drift table tbody tr", has_text="XOM").inner_text()
    assert "6.93%" in xom  # the target weight of the file
    page.wait_for_selector("#sector-chart .main-svg")
    _fits(page, "desktop-portfolio", served.shots)

    page.click("a:has-text('Optimize this portfolio')")
    page.wait_for_selector("#optimize-form")
    page.select_option("#policy_id", "quality_focused")
    page.fill("#max_turnover_pct", "30")
    page.click("#optimize-form button[type=submit]")
    page.wait_for_selector("#trades table tbody tr")
    assert page.locator("#trades table tbody tr").count() >= 1
    page.wait_for_selector("#risk-return-chart .main-svg")
    assert "Turnover" in page.inner_text("#summary")
    turnover = float(page.inner_text("#summary dd >> nth=4").rstrip("%"))
    assert turnover <= 30 + 1e-6
    # The page asks for 15 frontier points: drawn, and as numbers beside the chart with both portfolios.
    page.wait_for_selector("#frontier-chart .main-svg")
    assert page.locator("#frontier-chart .scatterlayer .trace").count() == 3  # frontier, current, proposed
    rows = page.locator("#frontier table tbody tr").all_inner_texts()
    assert len(rows) == 17 and rows[0].startswith("Frontier 1") and rows[-1].startswith("Proposed")
    after = page.locator("#risk-return table tbody tr", has_text="Expected return").inner_text().split("\t")[-1]
    assert after in rows[-1]  # the proposed portfolio on the frontier is the proposal's "after"
    assert "max_turnover_pct 30%" in page.inner_text("#frontier")
    _fits(page, "desktop-proposal", served.shots)

    # Rebalancing back to the target waits for approval; approving books it.
    page.goto(served.server.url + "/#/portfolio/demo_diversified")
    page.click("#rebalance")
    page.wait_for_selector("#rebalance-status :text('waiting for approval')")
    page.click("#rebalance-status a:has-text('Go to approvals')")
    card = page.locator("section.approval", has_text="drift_rebalance")
    card.locator("textarea").fill("back to target, checked by PM")
    card.locator("button:has-text('Approve')").click()
    page.wait_for_selector("section.approval .result :text('completed')")
    assert "booked as version 2" in page.inner_text("section.approval .result")

    page.goto(served.server.url + "/#/portfolio/demo_diversified")
    page.wait_for_selector("#history h3")
    history = page.inner_text("#history")
    assert "booked" in history and "back to target, checked by PM" in history
    assert page.inner_text("#verdict") == "No rebalance due"  # the portfolio is the booked version
    with client(served.server, served.demo_key) as demo:
        assert as_json(demo.get("/v1/portfolios/demo_diversified"))["version"] == 2


def test_another_users_portfolio_is_not_reachable_by_url(served: Served, browser: Any) -> None:
    page = _page(browser, DESKTOP)
    _sign_in(page, served, served.mallory_key)
    assert page.locator("text=You own no portfolios yet.").count() == 1
    page.goto(served.server.url + "/#/portfolio/demo_diversified")
    alert = page.wait_for_selector("[role=alert]")
    assert "not found" in alert.inner_text()
    assert page.locator("#holdings").count() == 0


def test_phone_layout_fits_and_tables_scroll(served: Served, browser: Any) -> None:
    page = _page(browser, PHONE)
    _sign_in(page, served, served.demo_key)
    _fits(page, "phone-portfolios", served.shots)
    page.goto(served.server.url + "/#/portfolio/demo_diversified")
    page.wait_for_selector("#drift-chart .main-svg")
    _fits(page, "phone-portfolio", served.shots)
    wrap = page.locator("#drift .table-wrap").first
    assert wrap.evaluate("e => getComputedStyle(e).overflowX") == "auto"

    page.goto(served.server.url + "/#/optimize/demo_diversified")
    page.wait_for_selector("#optimize-form")
    page.select_option("#policy_id", "quality_focused")
    page.fill("#max_turnover_pct", "30")
    page.click("#optimize-form button[type=submit]")
    page.wait_for_selector("#risk-return-chart .main-svg")
    trades = page.locator("#trades .table-wrap")
    # The trades table is wider than a phone: it scrolls inside its box, the page does not.
    assert trades.evaluate("e => e.scrollWidth > e.clientWidth")
    _fits(page, "phone-proposal", served.shots)


def test_an_infeasible_policy_shows_the_apis_message(served: Served, browser: Any) -> None:
    page = _page(browser, DESKTOP)
    _sign_in(page, served, served.demo_key)
    page.goto(served.server.url + "/#/optimize/demo_quality")
    page.wait_for_selector("#optimize-form")
    page.select_option("#policy_id", "quality_focused")
    page.click("#optimize-form button[type=submit]")
    alert = page.wait_for_selector("#result [role=alert]")
    with client(served.server, served.demo_key) as demo:
        answer = demo.post("/v1/execute", json={"capability": "optimizer.propose_trades", "request": {
            "portfolio_id": "demo_quality", "pricing_pack_id": PACK, "policy_id": "quality_focused",
            "policy": {}}})
    assert answer.status_code == 422
    assert alert.inner_text() == as_json(answer)["message"]


def test_a_bad_key_shows_the_apis_message(served: Served, browser: Any) -> None:
    page = _page(browser, PHONE)
    page.goto(served.server.url + "/")
    page.fill("#api-key", "opt_not-a-key")
    page.click("button[type=submit]")
    alert = page.wait_for_selector("[role=alert]")
    assert "a valid API key is required" in alert.inner_text()


# --- optimizer report PROPOSAL_ID --html FILE ---------------------------------------------------

@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], dict[str, Any], Path]:
    """A fresh home with one recorded proposal (id 1, the spec's quality example) and its report."""
    directory = tmp_path_factory.mktemp("report")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIMIZER_")}
    env["OPTIMIZER_HOME"] = str(directory / "home")
    assert cli("seed", env=env).returncode == 0
    add_user("demo", env)
    add_user("eve", env)
    case = Path(__file__).resolve().parent / "golden" / "optimizer" / "quality_xom_sold" / "case.json"
    request = directory / "request.json"
    # The report shows the binding limits' costs when the proposal was asked to explain them.
    request.write_text(json.dumps({**json.loads(case.read_text())["request"], "explain_limits": True}),
                       encoding="utf-8")
    called = cli("call", "optimizer.propose_trades", "--input", str(request), "--user", "demo", env=env)
    assert called.returncode == 0, called.stderr
    page = directory / "proposal-1.html"
    done = cli("report", "1", "--html", str(page), "--user", "demo", env=env)
    assert done.returncode == 0, done.stderr
    return env, json.loads(called.stdout), page


def test_report_embeds_the_recorded_proposal_and_nothing_from_outside(
    reported: tuple[dict[str, str], dict[str, Any], Path],
) -> None:
    _, proposal, page = reported
    text = page.read_text(encoding="utf-8")
    embedded = text.split('<script type="application/json" id="proposal">', 1)[1].split("</script>", 1)[0]
    assert json.loads(embedded.replace("<\\/", "</")) == proposal
    assert "<script src=" not in text and "<link" not in text


def test_report_of_someone_elses_proposal_is_not_found(
    reported: tuple[dict[str, str], dict[str, Any], Path], tmp_path: Path,
) -> None:
    env = reported[0]
    theirs = cli("report", "1", "--html", str(tmp_path / "a.html"), "--user", "eve", env=env)
    missing = cli("report", "99", "--html", str(tmp_path / "b.html"), env=env)
    assert theirs.returncode == missing.returncode == 3
    assert json.loads(theirs.stderr)["message"] == "proposal 1 not found"
    assert json.loads(missing.stderr)["message"] == "proposal 99 not found"
    assert not (tmp_path / "a.html").exists()


def test_report_opens_offline_with_its_chart_and_trades(
    reported: tuple[dict[str, str], dict[str, Any], Path], browser: Any, tmp_path: Path,
) -> None:
    _, proposal, page_file = reported
    context = browser.new_context(viewport=PHONE)
    requested: list[str] = []
    context.route("http*://**", lambda route: (requested.append(route.request.url), route.abort()))
    page = context.new_page()
    page.goto(page_file.as_uri())
    page.wait_for_selector("#risk-return-chart .main-svg")
    assert page.locator("#trades tbody tr").count() == proposal["trade_count"] == 3
    assert "Binding (at their limit): max single position pct for AAPL; sector limit for Information Technology." \
        in page.inner_text("#constraints")
    costs = page.locator("#binding-costs li").all_inner_texts()
    assert costs == [e["explanation"] for e in proposal["binding_explanations"]] and len(costs) == 2
    assert requested == []
    _fits(page, "phone-report", tmp_path)


def test_report_includes_the_frontier_when_the_proposal_has_one(
    reported: tuple[dict[str, str], dict[str, Any], Path], browser: Any, tmp_path: Path,
) -> None:
    env = reported[0]
    request = tmp_path / "frontier.json"
    request.write_text(json.dumps({"portfolio_id": "demo_diversified", "pricing_pack_id": "PP_2022-12-28",
                                   "policy_id": "quality_focused", "frontier_points": 6}), encoding="utf-8")
    called = cli("call", "optimizer.propose_trades", "--input", str(request), "--user", "demo", env=env)
    assert called.returncode == 0, called.stderr
    frontier = json.loads(called.stdout)["efficient_frontier"]
    html_file = tmp_path / "frontier.html"
    done = cli("report", "2", "--html", str(html_file), "--user", "demo", env=env)
    assert done.returncode == 0, done.stderr
    page = browser.new_context(viewport=DESKTOP).new_page()
    page.goto(html_file.as_uri())
    page.wait_for_selector("#frontier-chart .main-svg")
    rows = page.locator("#frontier table tbody tr").all_inner_texts()
    assert len(rows) == 8
    first = frontier["points"][0]
    assert f"{first['expected_return_pct']:.2f}%" in rows[0] and f"{first['volatility_pct']:.2f}%" in rows[0]


def test_a_taxable_proposals_report_shows_the_tax_preview(browser: Any, tmp_path: Path) -> None:
    """The tax golden case recorded and reported: totals, one row per lot sold, the disclaimer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIMIZER_")}
    env["OPTIMIZER_HOME"] = str(tmp_path / "home")
    assert cli("seed", env=env).returncode == 0
    case = Path(__file__).resolve().parent / "golden" / "optimizer" / "tax_short_term_gain_avoided" / "case.json"
    request = tmp_path / "request.json"
    request.write_text(json.dumps(json.loads(case.read_text())["request"]), encoding="utf-8")
    called = cli("call", "optimizer.propose_trades", "--input", str(request), env=env)
    assert called.returncode == 0, called.stderr
    tax = json.loads(called.stdout)["tax"]
    page_file = tmp_path / "taxable.html"
    assert cli("report", "1", "--html", str(page_file), env=env).returncode == 0
    page = browser.new_context(viewport=DESKTOP).new_page()
    page.goto(page_file.as_uri())
    page.wait_for_selector("#tax")
    text = page.inner_text("#tax")
    assert "not tax advice" in text
    assert f"${tax['totals']['estimated_tax']:,.2f}" in text
    assert page.locator("#tax table").first.locator("tbody tr").count() == len(tax["lots_sold"]) == 3
    assert "Tax-blind" in text


def test_a_tax_exempt_report_has_no_tax_section(
    reported: tuple[dict[str, str], dict[str, Any], Path], browser: Any,
) -> None:
    page = browser.new_context(viewport=DESKTOP).new_page()
    page.goto(reported[2].as_uri())
    page.wait_for_selector("#trades")
    assert page.locator("#tax").count() == 0
