"""<heta-attribution> in a real Chromium: embedded in host pages of their own — plain HTML and a
minimal React build (bundled here by esbuild from the npm packages) — served from another origin than
the live `heta serve` (HETA_CORS_ORIGINS lets them in), each following a live job; the drawn spans equal
the result's tokens and numbers; a malformed document shows a readable error in place; and the
explorer, the HTML report and the bare element draw the same pixels for one result. The host site, the
server and the browser are shared by the package's modules (package-scoped fixtures in its conftest,
as when they were one module).

The committed bundle (heta_core/results/assets/heta-attribution.js, which the explorer and the report
load without node) must be what clients/typescript builds. Screenshots go to $HETA_TEST_ARTEFACTS."""
