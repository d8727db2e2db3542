"""The rebalancing dashboard: static pages served by ``optimizer serve`` at ``/``.

The pages are plain HTML, CSS and JavaScript (no build step) that call the JSON API with the
user's API key; this module only mounts them. Charts use Plotly's bundled ``plotly.min.js``,
served from the installed ``plotly`` package (located without importing it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from services.errors import NotFoundError

STATIC = Path(__file__).resolve().parent / "static"


def plotly_bundle() -> Path:
    """The path of the installed ``plotly`` package's ``plotly.min.js``.

    Raises:
        NotFoundError: the plotly package (a dependency) is not installed.
    """
    spec = importlib.util.find_spec("plotly")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        bundle = Path(location) / "package_data" / "plotly.min.js"
        if bundle.is_file():
            return bundle
    raise NotFoundError(
        "the dashboard's charting library is missing: install the `plotly` package "
        "(`pip install plotly`)",
        details={"package": "plotly"},
    )


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard: ``/`` is the page, ``/dashboard/`` its files and Plotly."""

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        """The dashboard's single page (it signs in with an API key kept in sessionStorage)."""
        return FileResponse(STATIC / "index.html", headers=_NO_STORE)

    @app.get("/dashboard/vendor/plotly.min.js", include_in_schema=False)
    def plotly() -> FileResponse:
        """Plotly's own minified bundle, as the plotly package ships it."""
        return FileResponse(plotly_bundle(), media_type="text/javascript")

    app.mount("/dashboard", StaticFiles(directory=STATIC), name="dashboard")


# The page is tiny; never cached, so an upgrade shows at once.
_NO_STORE = {"Cache-Control": "no-store"}
