"""The HETA attribution service: FastAPI API, Redis Streams queue, worker processes.

Depends on :mod:`heta_core` only through its public API.
"""
