"""The self-contained HTML report of one result: ``heta attribute --format html`` writes it and the
service's ``GET /jobs/{id}/report`` (the explorer's "HTML report" export) serves it.

One file, no external assets: the ``<heta-attribution>`` element the explorer page and dashboards
use (``assets/heta-attribution.js``, built from clients/typescript and committed, so nothing here
needs node) is inlined, with the result document as JSON inside it. Opened from disk it draws the
same heatmap as the page, with the same controls (component, view, target row) and numbers.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from string import Template
from typing import Any

from ..methods.registry import REGISTRY
from .schema import AttributionResult

ASSETS = Path(__file__).resolve().parent / "assets"

PAGE = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<link rel="icon" href="data:,">
<style>
body { margin: 0 auto; max-width: 1200px; padding: 1rem 1.25rem 2rem; background: #fafafa; }
.report-meta { color: #4a4a4a; font: 0.85rem/1.4 system-ui, sans-serif; }
</style>
</head>
<body>
<main>
<h1 style="font: 600 1.35rem system-ui, sans-serif">$title</h1>
<heta-attribution id="heatmap" methods="$methods"><script type="application/json" id="heta-result">$result</script><noscript>This report draws its heatmap with JavaScript (inline, nothing is downloaded); the numbers are in the JSON above.</noscript></heta-attribution>
<p class="report-meta">$meta</p>
</main>
<script>
$js
</script>
</body>
</html>
""")  # noqa: E501 - the page's HTML, kept as it is written


def method_details() -> dict[str, dict[str, Any]]:
    """Each method's summary and whether its scores are signed (a diverging colour scale): what the
    element needs besides the document (GET /models serves it as ``method_details``)."""
    return {name: {"signed": entry.signed, "summary": entry.summary} for name, entry in REGISTRY.items()}


def _script_json(value: Any) -> str:
    # "</script" or "<!--" in a string would end or confuse the <script> element; written as \u003c
    # the JSON decodes to the same document
    return json.dumps(value).replace("<", "\\u003c")


def render_report(result: AttributionResult | dict) -> str:
    """The HTML report of a result (the pydantic document or its JSON dict, e.g. the service's, job_id included)."""
    document = result.to_dict() if isinstance(result, AttributionResult) else result
    targets = " ".join(t["text"] or str(t["id"]) for t in document["targets"])
    meta, timings = document["meta"], document["meta"]["timings"]
    details = [
        f"model {meta['model']} ({meta['revision'] or 'unpinned'}, "
        f"{meta['model_type']}, {meta['dtype']} on {meta['device']})",
        f"config {json.dumps(meta['config'])}",
        f"computed in {timings['compute_s']:.3g} s",
        f"heta {meta['versions']['heta']}, torch {meta['versions']['torch']}",
    ]
    if document.get("job_id"):
        details.append(f"job {document['job_id']}")
    return PAGE.substitute(
        title=html.escape(f"{document['method']} attribution of \u201c{targets}\u201d"),
        meta=html.escape(" · ".join(details)),
        js=(ASSETS / "heta-attribution.js").read_text(encoding="utf-8"),
        result=_script_json(document),
        methods=html.escape(json.dumps(method_details())),
    )
