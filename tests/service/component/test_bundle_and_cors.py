"""What a dashboard relies on besides the element's drawing: the committed bundle is what the sources of
clients/typescript build, and the server's CORS lets the configured origin in and no other."""

import subprocess

from heta_core.results.report import ASSETS

from ...helpers import heta_command
from ..conftest import base_env
from .dashboard import AUTH, PACKAGE


def test_the_committed_bundle_is_what_the_sources_build(tmp_path):
    done = subprocess.run(
        ["node", "scripts/bundle.mjs", "--out", str(tmp_path)], cwd=PACKAGE, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    fresh = (tmp_path / "heta-attribution.js").read_bytes()
    committed = (ASSETS / "heta-attribution.js").read_bytes()
    assert fresh == committed, (
        "clients/typescript changed: run `npm run assets` there and commit heta_core/results/assets/heta-attribution.js"
    )


def test_cors_lets_the_configured_origin_in_and_no_other(api, site, tmp_path):
    allowed = api.http.options(
        "/models",
        headers={
            "Origin": site.origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == site.origin
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    other = api.http.options(
        "/models", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    answer = api.http.get("/models", headers={**AUTH, "Origin": site.origin})
    assert (
        answer.headers["access-control-allow-origin"] == site.origin
        and "retry-after" in answer.headers["access-control-expose-headers"].lower()
    )
    # an origin with a path never matches what a browser sends: refused at start, in one line
    env = base_env(None, tmp_path, CORS_ORIGINS="https://dash.example.com/")
    done = subprocess.run(heta_command("serve"), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and done.stderr.strip() == (
        "heta serve: error: HETA_CORS_ORIGINS: 'https://dash.example.com/' is not an origin like "
        "https://dashboards.example.com (or *)"
    )
