"""The service's search page: ``GET /`` and the one script it runs, ``GET /search.js``.

A person picks or drops a photo; the page uploads it as a query job (``POST /jobs``, multipart
field ``image``), follows the job (``GET /jobs/{id}``) with a progress bar, then shows its
results page (``GET /jobs/{id}/result.html``) in a frame. Both files ship in the package
(``landmark/static/``) and are served by the service itself: no other site is needed, so the
page works offline. The page and its script need no token, as they hold nothing; the calls
they make do. With ``LANDMARK_API_TOKEN`` set the page says so (``data-token-required``) and
asks for the token once, keeping it in the tab's ``sessionStorage``.
"""

from __future__ import annotations

import functools
from importlib import resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

from .settings import Settings

SEARCH_PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self' 'unsafe-inline'; frame-src 'self' blob:; base-uri 'none'; form-action 'none'"
)
"""What the search page may load: its own script and calls to this service; the results page it
shows in a frame (which inherits this policy) brings its pictures as ``data:`` URIs and its CSS
inline."""

RESULT_PAGE_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
"""A results page runs nothing and loads nothing but its own embedded pictures."""


@functools.cache
def _static(name: str) -> str:
    return resources.files("landmark").joinpath("static", name).read_text(encoding="utf-8")


def add_search_page(app: FastAPI, settings: Settings) -> None:
    """Serve the search page and its script on ``app``."""
    required = "true" if settings.api_token else "false"

    @app.get("/", include_in_schema=False)
    def search_page() -> HTMLResponse:
        page = _static("search.html").replace("{{token_required}}", required)
        return HTMLResponse(page, headers={"Content-Security-Policy": SEARCH_PAGE_POLICY, "Cache-Control": "no-cache"})

    @app.get("/search.js", include_in_schema=False)
    def search_script() -> Response:
        return Response(_static("search.js"), media_type="text/javascript; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})
