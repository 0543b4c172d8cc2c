"""A deterministic Instagram Graph API simulator (aiohttp) for tests, demos and benchmarks."""

from __future__ import annotations
