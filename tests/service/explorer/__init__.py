"""The explorer page (GET /) in a real Chromium against one live `heta serve` of heta-demo, shared by
the package's modules (package-scoped fixtures in its conftest: one server, one browser, as when they
were one module)."""
