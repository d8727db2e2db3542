"""One self-contained HTML file showing a proposal: the dashboard's proposal view, offline.

The page inlines the dashboard's stylesheet, its views (``views.js``), Plotly's bundle and the
proposal's JSON, so it opens from a file or a mail attachment without a server or network.
"""

from __future__ import annotations

import html
import json
from typing import Any

from agents.dashboard import STATIC, plotly_bundle

_RENDER = """
document.addEventListener("DOMContentLoaded", () => {
  const p = JSON.parse(document.getElementById("proposal").textContent);
  document.getElementById("main").replaceChildren(
    el("h1", {}, `Proposal for ${p.portfolio_id}`),
    el("p", { class: "muted" }, `Priced on ${p.pricing_pack_id} (as of ${p.asof}); portfolio value ${money(p.portfolio_value)}.`),
    ...proposalView(p, null));
  drawCharts();
});
"""


def _script(text: str) -> str:
    # "</" would end the <script> element early; "<\\/" means the same to JavaScript and JSON.
    return text.replace("</", "<\\/")


def proposal_html(proposal: dict[str, Any], *, title: str) -> str:
    """The proposal view of an ``optimizer.propose_trades`` result as one HTML document."""
    data = json.dumps(proposal, sort_keys=True, ensure_ascii=False)
    style = (STATIC / "style.css").read_text(encoding="utf-8")
    views = (STATIC / "views.js").read_text(encoding="utf-8")
    plotly = plotly_bundle().read_text(encoding="utf-8")
    return (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>\n{style}</style>\n"
        f"<script>{_script(plotly)}</script>\n<script>{_script(views)}</script>\n"
        f"<script type=\"application/json\" id=\"proposal\">{_script(data)}</script>\n"
        f"<script>{_RENDER}</script>\n</head>\n<body>\n"
        "<main id=\"main\"><noscript>This report needs JavaScript for its charts.</noscript></main>\n"
        "</body>\n</html>\n"
    )
