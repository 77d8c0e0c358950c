"""MkDocs hooks: the repository's top-level pages (README, CHANGELOG, CONTRIBUTING) are written for a
reader of the repository, with links relative to its root; the site takes them as they are and
rewrites those links, so each page has one source that reads right in both places."""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
# repository file -> its page in the site
TOP_LEVEL = {"README.md": "index.md", "CHANGELOG.md": "changelog.md", "CONTRIBUTING.md": "contributing.md"}
_LINK = re.compile(r"\]\((?!https?:|#|mailto:)([^)\s]+)\)")


def on_files(files, config):
    for source, page in TOP_LEVEL.items():
        files.append(File.generated(config, page, abs_src_path=str(ROOT / source)))
    return files


def _site_target(target: str, top_level: bool) -> str:
    path, hash_, anchor = target.partition("#")
    if top_level:
        path = path.removeprefix("docs/")
    elif path.startswith("../"):
        path = path.removeprefix("../")
    return TOP_LEVEL.get(path, path) + hash_ + anchor


def on_page_markdown(markdown, page, config, files):
    top_level = page.file.src_uri in TOP_LEVEL.values()
    return _LINK.sub(lambda m: f"]({_site_target(m.group(1), top_level)})", markdown)
