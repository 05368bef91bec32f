"""The worker's HTTP endpoints: ``/metrics`` (Prometheus), ``/healthz`` (alive), ``/readyz`` (can take work).

Served by aiohttp on the worker's own event loop, so a scrape sees the state of the loop that does the work.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from moderation.observability.metrics import Metrics


def build_app(metrics: Metrics, ready: Callable[[], bool]) -> web.Application:
    """The three routes; ``ready`` answers whether the worker joined its group with its model loaded."""

    async def scrape(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        is_ready = ready()
        return web.json_response({"ready": is_ready}, status=200 if is_ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_server(metrics: Metrics, ready: Callable[[], bool], port: int) -> tuple[web.AppRunner, int]:
    """Serve the worker's routes on all interfaces at ``port`` (0: a free port); returns the runner (to clean up)
    and the port."""
    return await serve(build_app(metrics, ready), port)


async def serve(app: web.Application, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on all interfaces at ``port`` (0: a free port); returns the runner (to clean up) and the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "0.0.0.0", port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = int(sockets[0].getsockname()[1]) if sockets else port
    return runner, bound


def free_port(above: int = 0) -> int:
    """A port free on the loopback interface now, with the ``above`` ports just above it free too (for a supervisor
    whose worker processes serve there); another process may take them before they are bound."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if all(_port_free(port) for port in range(base + 1, base + 1 + above)):
            return base


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
