"""The metrics port: Prometheus metrics, and /healthz and /readyz for orchestrators."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    make_wsgi_app,
)
from prometheus_client.exposition import ThreadingWSGIServer

# alive: the process runs and holds its broker connection; ready: it does its job
# (consumes every shard it owns, or relays the outbox).
Health = Callable[[], tuple[bool, bool]]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Probes every few seconds are not worth a log line."""


def with_process_metrics(registry: CollectorRegistry) -> CollectorRegistry:
    """Add the process (CPU, memory, open files), Python and GC collectors to a registry."""
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


def serve(port: int, registry: CollectorRegistry, health: Health, addr: str = "") -> None:
    """Serve /metrics (and every other path, as prometheus_client does), /healthz and
    /readyz (200, or 503 with the reason) on a daemon thread."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if path not in ("/healthz", "/readyz"):
            served: Iterable[bytes] = metrics(environ, start_response)
            return served
        alive, ready = health()
        ok = alive if path == "/healthz" else alive and ready
        reason = "ok" if ok else ("not connected" if not alive else "not consuming yet")
        start_response(
            "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")]
        )
        return [f"{reason}\n".encode()]

    server = make_server(addr, port, app, ThreadingWSGIServer, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
