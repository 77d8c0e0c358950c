"""One module per group of routes; :mod:`heta_service.app` includes each router."""
