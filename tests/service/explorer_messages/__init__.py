"""The explorer page (GET /) in a real Chromium against live `heta serve` processes, for what
tests/service/explorer leaves open: chat input and the message view, the bar chart of the HETA
components' shares, the colour contrast of the heatmap, and the 429 / 504 / 503 problems shown in
words. Its two servers and its browser are shared by the package's modules (package-scoped fixtures in
its conftest, as when they were one module).

Screenshots of each state go to $HETA_TEST_ARTEFACTS (default: a temporary folder; never committed),
named msg-*.png."""
