"""The HTML report: one self-contained file (no external assets) holding the result document, written
by `heta attribute --format html` and served by GET /jobs/{id}/report (tests/service/explorer/test_offline.py
opens it in a browser)."""

import json
import re
import subprocess
import sys

from heta_core import Attributor, HetaConfig
from heta_core.cli.attribute import render_table
from heta_core.results.report import ASSETS, render_report

PROMPT = "c=6 e=6 b=3 h=3 m=6 ? h"


def embedded_result(html: str) -> dict:
    found = re.search(r'<script type="application/json" id="heta-result">(.*?)</script>', html, re.S)
    return json.loads(found.group(1))


def test_the_report_embeds_the_document_and_loads_nothing(make_attributor):
    attributor = make_attributor("gpt2", num_hvp_samples=2)
    result = attributor.attribute("the cat </script><!-- sat", granularity="word")
    html = render_report(result)
    assert embedded_result(html) == result.to_dict()  # "</" in the text cannot end the script early
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"(?!data:)", html)  # every script and style is inline
    # the document inside the element, then the element's committed bundle, inlined as is
    assert html.count("<script") == 2 and '<heta-attribution id="heatmap"' in html
    assert (ASSETS / "heta-attribution.js").read_text(encoding="utf-8") in html


def test_cli_writes_the_report_and_prints_the_diagnostics_in_words():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "heta_core.cli",
            "attribute",
            "--text",
            PROMPT,
            "--target-text",
            " 3",
            "--diagnostics",
            "--format",
            "html",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    document = embedded_result(done.stdout)
    expected = Attributor.from_pretrained("heta-demo").attribute(
        PROMPT, target_text=" 3", config=HetaConfig(diagnostics=True)
    )
    assert document["diagnostics"] == expected.to_dict()["diagnostics"]
    assert [t["score"] for t in document["tokens"]] == [t.score for t in expected.tokens]
    table = render_table(expected)
    assert table.splitlines()[-1] == (
        f'faithfulness: removing the 3 top tokens changes p("3") from {expected.diagnostics.rows[0].probability:.3g} '
        f"to {expected.diagnostics.rows[0].points[1].removed:.3g}; keeping only them gives "
        f"{expected.diagnostics.rows[0].points[1].kept:.3g}"
    )
