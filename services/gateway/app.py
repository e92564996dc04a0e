"""The gateway app factory: wires config, Redis, live frames, the hub and routers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import redis
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import start_http_server

from services.gateway.api import (
    agents,
    bootstrap,
    cameras,
    clients,
    events,
    faces,
    recordings,
    rules,
    system,
    users,
)
from services.gateway.api import auth as auth_api
from services.gateway.api import storage as storage_api
from services.gateway.auth import AuthStore, PasswordChecks, admin_password_banner
from services.gateway.config import GatewaySettings
from services.gateway.deps import GatewayState, allowed_host_names
from services.gateway.hub import Hub
from services.gateway.live import LiveFrames
from services.gateway.models import COMMON_RESPONSES
from services.gateway.security import BodyLimit, RequestMetrics, SecurityHeaders
from services.gateway.ws import router as ws_router
from shared.fanout import FanoutKeys
from shared.keys import Keys
from shared.redisutil import connect, connect_async

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"


def start_metrics_listener(settings: GatewaySettings) -> WSGIServer | None:
    """prometheus_client's plain /metrics on ``general.metrics_port`` (0 = off), for
    scrapers on the internal network: no credentials, nothing but metrics."""
    port = settings.general.metrics_port
    if not port:
        return None
    host = settings.gateway.metrics_host or settings.gateway.host
    try:
        server, _ = start_http_server(port, addr=host)
    except OSError as exc:
        log.error("cannot serve metrics", extra={"host": host, "port": port, "error": str(exc)})
        raise
    log.info("metrics listener started", extra={"host": host, "port": port})
    return server


def create_app(settings: GatewaySettings) -> FastAPI:
    """Build the gateway.  Nothing global: every piece of state hangs off ``app.state.gw``."""
    if not settings.redis.url:
        raise ValueError("redis.url is required (set REDIS_URL or --redis-url)")
    cfg = settings.gateway
    keys = Keys(settings.redis.prefix)
    r = connect(settings.redis.url)
    rb = connect(settings.redis.url, decode=False)
    auth = AuthStore(
        r, keys, time_cost=cfg.password_hash_time_cost, memory_kib=cfg.password_hash_memory_kib
    )
    auth.configure_rate_limit(cfg.login_max_failures, cfg.login_window_s)
    live = LiveFrames(
        cfg.ingest_pub, linger_s=cfg.live_linger_s, max_jpeg_bytes=cfg.live_max_frame_bytes,
        fanout_keys=FanoutKeys(r, keys, name="gateway-live"),
    )  # fmt: skip
    checks = PasswordChecks(cfg.login_check_workers, cfg.login_max_pending_checks)
    gw = GatewayState(
        settings=settings, keys=keys, r=r, rb=rb, auth=auth, live=live, password_checks=checks
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state_dir = settings.general.state_dir
        admin_pw = cfg.admin_password.get_secret_value() if cfg.admin_password else None
        generated = await asyncio.to_thread(auth.ensure_admin, cfg.admin_user, admin_pw, state_dir)
        if generated:
            path = str(Path(state_dir) / "admin-password.txt")
            # Printed once, to stdout only (never through the log pipeline).
            print(admin_password_banner(cfg.admin_user, generated, path), flush=True)
            log.warning("admin account created; password printed above", extra={"file": path})
        log.info(
            "dashboard host names (cookie requests)",
            extra={"allowed_hosts": sorted(allowed_host_names(settings))},
        )
        metrics_server = start_metrics_listener(settings)
        ar = connect_async(settings.redis.url)  # bounded: no call hangs forever
        hub = Hub(keys, live, ar)
        gw.hub = hub
        live.start(asyncio.get_running_loop())
        hub.start()
        try:
            yield
        finally:
            await hub.stop()
            await asyncio.to_thread(live.stop)
            try:
                await asyncio.wait_for(ar.aclose(), 3)
            except (TimeoutError, redis.RedisError, OSError):
                log.warning("async redis close timed out")
            checks.shutdown()
            r.close()
            rb.close()
            if metrics_server is not None:
                await asyncio.to_thread(metrics_server.shutdown)
                metrics_server.server_close()

    app = FastAPI(
        title="Sentri gateway",
        version="1.0",
        summary="REST API, websockets and dashboard of the Sentri surveillance system.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served behind authentication by the system router
    )
    app.state.gw = gw

    @app.exception_handler(redis.RedisError)
    async def redis_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("redis error", extra={"error": type(exc).__name__})
        return JSONResponse({"detail": "storage unavailable"}, status_code=503)

    app.include_router(system.router)
    app.include_router(bootstrap.router)  # anonymous: public facts only, rate-limited
    for router in (
        auth_api.router,
        rules.router,  # before cameras: its /api/cameras/{id:path} would swallow /rules
        clients.router,
        cameras.router,
        events.router,
        faces.router,
        agents.router,
        recordings.router,
        storage_api.router,
        users.router,
    ):
        app.include_router(router, responses=COMMON_RESPONSES)
    app.include_router(ws_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # Outermost last: metrics see the final status; the body limit runs before parsing.
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    if cfg.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cfg.cors_origins,
            allow_credentials=True,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestMetrics)
    return app
