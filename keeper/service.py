"""The daemon's HTTP face: /health (JSON of component statuses; 503 when unhealthy) and /metrics
(Prometheus text format)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from keeper.daemon import Daemon


def build_app(daemon: Daemon) -> web.Application:
    async def health(_request: web.Request) -> web.Response:
        ok, components = daemon.health()
        return web.json_response({"status": "ok" if ok else "unhealthy", "components": components}, status=200 if ok else 503)

    async def metrics(_request: web.Request) -> web.Response:
        daemon.health()  # refresh keeper_healthy
        return web.Response(body=daemon.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app


async def start_http(daemon: Daemon, listen: str) -> web.AppRunner:
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(build_app(daemon), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host or "127.0.0.1", int(port))
    await site.start()
    return runner
