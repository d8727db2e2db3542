"""The HTTP API (FastAPI, served by uvicorn through ``optimizer serve``): a thin adapter over
``OptimizerAgent``."""

from __future__ import annotations
