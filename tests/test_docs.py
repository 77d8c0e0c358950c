"""The documentation: the site builds strictly offline, every relative link resolves, and the README
is a front page (the two commands on its first screen, at most 200 lines)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from .helpers import ROOT

PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def build(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


def test_the_site_builds_strictly_with_every_page_and_the_reference(tmp_path):
    done = build(tmp_path / "site")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "WARNING" not in done.stderr, done.stderr[-3000:]
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    pages = [next(iter(entry.values())) for entry in nav]
    for page in pages:
        assert (tmp_path / "site" / page.replace(".md", ".html")).is_file(), page
    # every page of docs/ is in the navigation (a page outside it is hard to find)
    assert {p.name for p in (ROOT / "docs").glob("*.md")} <= set(pages)
    # the Python reference is generated from the docstrings of heta_core's public API
    reference = (tmp_path / "site" / "reference.html").read_text()
    for name in (
        "Attributor",
        "Attributor.from_pretrained",
        "Attributor.attribute",
        "Attributor.estimate",
        "HetaConfig",
        "AttributionRequest",
        "AttributionResult",
    ):
        assert f'id="heta_core.{name}"' in reference, name
    # the README is the home page, its links rewritten from docs/x.md to x.md
    home = (tmp_path / "site" / "index.html").read_text()
    assert 'href="api.html"' in home and 'href="docs/' not in home
    # nothing is fetched from elsewhere: no web fonts, no CDN scripts or styles
    for html in (tmp_path / "site").glob("*.html"):
        text = html.read_text()
        assert not re.search(r'<(?:script|link)[^>]+(?:src|href)="https?://', text), html.name


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        text = FENCE.sub("", page.read_text())
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = target.split("#")[0]
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken
    assert sum(len(LINK.findall(p.read_text())) for p in PAGES) > 40  # the check has links to check


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, len(lines)
    first_screen = "\n".join(lines[:40])
    assert "heta serve" in first_screen and "scripts/test" in first_screen
    for page in ("docs/api.md", "docs/python.md", "docs/benchmarks.md", "CHANGELOG.md", "CONTRIBUTING.md"):
        assert f"]({page})" in "\n".join(lines), page
