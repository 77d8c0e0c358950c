"""The documentation site (``mkdocs build``: README, docs/, the Python reference) at ``/guide/``.

Public like ``/docs``: it describes the service and holds no data. Starlette's ``StaticFiles`` serves
it (directory index, content types, path traversal refused). The site is looked up per request, so a
site built while the server runs is served at once; until then ``/guide/`` answers a problem that says
how to build it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from ..problems import Problem

PREFIX = "/guide"
# a checkout: the service package sits beside pyproject.toml, and `mkdocs build` writes site/ there
CHECKOUT_SITE = Path(__file__).resolve().parents[2] / "site"


class Site(StaticFiles):
    async def check_config(self) -> None:
        pass  # a missing directory is a problem per request (below), not a crash on the first one

    async def get_response(self, path: str, scope):
        if not (Path(self.directory) / "index.html").is_file():
            raise Problem(
                404,
                "guide_not_built",
                f"the documentation site is not built in {self.directory}: run `mkdocs build --site-dir "
                f"{self.directory}` (scripts/setup does), or set HETA_GUIDE_DIR",
            )
        return await super().get_response(path, scope)


def mount(app: FastAPI, configured: Path | None) -> None:
    directory = configured if configured is not None else CHECKOUT_SITE
    app.mount(PREFIX, Site(directory=directory, html=True, check_dir=False), name="guide")
