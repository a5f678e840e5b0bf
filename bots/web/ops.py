"""Operations endpoints: `/healthz` (the process answers), `/readyz` (it can take and run work), `/metrics`.

    add_ops_routes(app, service.readiness)   # readiness(): named checks, e.g. {"store": True, "model_loaded": False}

`/readyz` answers 200 when every check passes and 503 otherwise, with the checks as JSON either way, so a load
balancer or Kubernetes probe and a person with curl read the same thing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

Readiness = Callable[[], Awaitable[dict[str, bool]]]
READINESS: web.AppKey[Readiness] = web.AppKey("readiness")


def add_ops_routes(app: web.Application, readiness: Readiness) -> None:
    app[READINESS] = readiness
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


def ops_app(readiness: Readiness) -> web.Application:
    """The probes alone (`imagine worker`, which serves no pages)."""
    app = web.Application()
    add_ops_routes(app, readiness)
    return app


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = await request.app[READINESS]()
    ready = all(checks.values())
    return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    # Rendering the registry takes well under a millisecond for this many series: no executor needed.
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})
