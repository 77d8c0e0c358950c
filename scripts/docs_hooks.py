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
_LINK = re.compile(r"(\[[^\]]*\])\((?!https?:|#|mailto:)([^)\s]+)\)")


def on_files(files, config):
    for source, page in TOP_LEVEL.items():
        files.append(File.generated(config, page, abs_src_path=str(ROOT / source)))
    return files


def _site_link(text: str, target: str, top_level: bool) -> str:
    """The link as the site needs it: a page's path rewritten, and a repository file the site does not
    serve (``deploy/...``, ``../service/...``) left as its text (the relative-link test keeps the
    repository's links resolving)."""
    path, hash_, anchor = target.partition("#")
    if top_level:
        path = path.removeprefix("docs/") if path.startswith("docs/") else TOP_LEVEL.get(path, "\0" + path)
    elif path.startswith("../"):
        path = TOP_LEVEL.get(path.removeprefix("../"), "\0" + path)
    if path.startswith("\0"):
        return text[1:-1]  # the words, without the brackets
    return f"{text}({path}{hash_}{anchor})"


def on_page_markdown(markdown, page, config, files):
    top_level = page.file.src_uri in TOP_LEVEL.values()
    return _LINK.sub(lambda m: _site_link(m.group(1), m.group(2), top_level), markdown)
