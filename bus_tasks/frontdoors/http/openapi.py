"""``GET /openapi.json``: the OpenAPI description of the HTTP front door (openapi.json beside this
module, checked against the live door by schemathesis in tests/integration/test_openapi.py)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from aiohttp import web

DOCUMENT = Path(__file__).with_name("openapi.json")


@cache
def _document() -> bytes:
    return DOCUMENT.read_bytes()


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=_document(), content_type="application/json")
