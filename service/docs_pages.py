"""`/docs` (Swagger UI) and `/redoc` from assets shipped in a Python package, not from a CDN.

FastAPI's default pages load their JavaScript and CSS from jsdelivr, so on a host without internet
(or behind a strict proxy) they are blank. The `fastapi-offline` package ships the same Swagger UI
and ReDoc bundles; they are served here under `/docs-assets/`, and the pages are FastAPI's own
templates pointed at them. Whether the docs need an API key is the middleware's business
(`GAN_DOCS_REQUIRE_KEY`).
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: Where the assets are mounted (service.middleware.DOCS_PREFIX).
ASSETS_URL = "/docs-assets"
ASSETS_DIR = Path(fastapi_offline.__file__).with_name("static")


def install_docs(app: FastAPI) -> None:
    """Mount the packaged assets and add `/docs`, its OAuth2 redirect and `/redoc`."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    def urls(request: Request, **assets: str) -> dict[str, str]:
        """A page's URLs under the app's root path (behind a proxy): the OpenAPI document and `assets`."""
        root = request.scope.get("root_path", "")
        located = {argument: f"{root}{ASSETS_URL}/{file}" for argument, file in assets.items()}
        return {"openapi_url": f"{root}{app.openapi_url}", **located}

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{request.scope.get('root_path', '')}{redirect_url}",
            **urls(request, swagger_js_url="swagger-ui-bundle.js", swagger_css_url="swagger-ui.css",
                   swagger_favicon_url="favicon.png"),
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            title=f"{app.title} - ReDoc",
            with_google_fonts=False,
            **urls(request, redoc_js_url="redoc.standalone.js", redoc_favicon_url="favicon.png"),
        )
