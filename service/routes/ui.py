"""The attribution explorer at ``/`` and its committed assets (``/static/...``), and the API docs at
``/docs`` (Swagger UI) and ``/redoc`` with their JavaScript and CSS served from this server, not a
CDN: everything works offline. None of these needs an API key; the page asks for one when the API does.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, Response

from heta_core import REPORT_ASSETS as ASSETS

from ..problems import Problem, problem_responses

router = APIRouter(tags=["explorer"])

STATIC = Path(__file__).resolve().parent.parent / "static"
# the page's own files, and <heta-attribution> (heta_core's copy, which the HTML report inlines too)
FILES = {
    path.name: path
    for folder in (STATIC, ASSETS)
    for path in folder.iterdir()
    if path.suffix in (".js", ".css", ".png", ".svg")
}
# the Swagger UI and ReDoc bundles, as the fastapi-offline package ships them
DOCS_FILES = {
    path.name: path for path in (Path(fastapi_offline.__file__).parent / "static").iterdir() if path.is_file()
}
REVALIDATE = {"Cache-Control": "no-cache"}  # revalidate: an upgraded server never runs a stale script
# ReDoc's sidebar shows its logo from its CDN: offline that is a failed request, so it points here instead
REDOC_LOGO = ("https://cdn.redoc.ly/redoc/logo-mini.svg", "/static/docs/favicon.png")


@lru_cache(maxsize=1)
def page_html() -> str:
    return (STATIC / "index.html").read_text(encoding="utf-8")


@router.get(
    "/",
    summary="The attribution explorer (HTML page)",
    response_class=HTMLResponse,
    responses={
        200: {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}},
        **problem_responses(503),
    },
)
async def explorer():
    return HTMLResponse(page_html(), headers=REVALIDATE)


def _file(files: dict[str, Path], name: str) -> FileResponse:
    if name not in files:
        raise Problem(404, "not_found", f"no static file {name!r}")
    return FileResponse(files[name], headers=REVALIDATE)


@router.get("/static/{name}", include_in_schema=False)
async def static_file(name: str):
    return _file(FILES, name)


@lru_cache(maxsize=1)
def _redoc_js() -> bytes:
    return DOCS_FILES["redoc.standalone.js"].read_text(encoding="utf-8").replace(*REDOC_LOGO).encode()


@router.get("/static/docs/{name}", include_in_schema=False)
async def docs_file(name: str):
    if name == "redoc.standalone.js":
        return Response(_redoc_js(), media_type="text/javascript", headers=REVALIDATE)
    return _file(DOCS_FILES, name)


@router.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request):
    app = request.app
    return get_swagger_ui_html(
        openapi_url=app.openapi_url,
        title=f"{app.title} - Swagger UI",
        oauth2_redirect_url="/docs/oauth2-redirect",
        swagger_js_url="/static/docs/swagger-ui-bundle.js",
        swagger_css_url="/static/docs/swagger-ui.css",
        swagger_favicon_url="/static/docs/favicon.png",
        swagger_ui_parameters={"validatorUrl": None},  # the default validator is an external service
    )


@router.get("/docs/oauth2-redirect", include_in_schema=False)
async def swagger_ui_redirect():
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc", include_in_schema=False)
async def redoc(request: Request):
    app = request.app
    return get_redoc_html(
        openapi_url=app.openapi_url,
        title=f"{app.title} - ReDoc",
        redoc_js_url="/static/docs/redoc.standalone.js",
        redoc_favicon_url="/static/docs/favicon.png",
        with_google_fonts=False,
    )
