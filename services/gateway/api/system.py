"""/healthz, /metrics, the OpenAPI schema, the API reference page and the dashboard pages."""

from __future__ import annotations

from pathlib import Path

import redis
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.gateway.deps import authenticate, get_state, is_loopback, require_user
from services.gateway.models import HealthReport, error_response

STATIC = Path(__file__).resolve().parents[1] / "static"

router = APIRouter()


@router.get(
    "/healthz",
    response_model=HealthReport,
    tags=["system"],
    responses={503: {"model": HealthReport, "description": "Redis unreachable."}},
)
def healthz(request: Request) -> JSONResponse:
    """Liveness + Redis check; no authentication (for load balancers and `sentri up`)."""
    try:
        ok = bool(get_state(request).r.ping())
    except (redis.RedisError, OSError):
        ok = False
    body = HealthReport(status="ok" if ok else "degraded", redis=ok)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get(
    "/metrics",
    tags=["system"],
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}},
        401: error_response("Not from loopback and no credentials."),
        403: error_response("Not from loopback and not an administrator."),
    },
)
def prometheus_metrics(request: Request) -> Response:
    """Prometheus text format. Loopback clients need no credentials (when
    gateway.metrics_allow_loopback); others need an administrator's session or token
    (the figures are process-wide, not limited to a camera scope)."""
    allow = get_state(request).settings.gateway.metrics_allow_loopback and is_loopback(request)
    if not allow:
        principal = authenticate(request)
        if principal is None:
            raise HTTPException(
                401, "authentication required", headers={"WWW-Authenticate": "Bearer"}
            )
        if principal.role != "admin":  # process-wide figures, not scoped to cameras
            raise HTTPException(403, "administrator role required")
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_user)])
def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs", include_in_schema=False)
def docs(request: Request) -> Response:
    """A self-contained API reference rendered from /openapi.json (no CDN: works offline)."""
    return _page(request, "docs.html")


# ---------------------------------------------------------------- dashboard pages
def _page(request: Request, name: str) -> Response:
    if authenticate(request) is None:
        return RedirectResponse("/login", status_code=303)
    return FileResponse(STATIC / name, headers={"Cache-Control": "no-store"})


@router.get("/", include_in_schema=False)
def index(request: Request) -> Response:
    return _page(request, "index.html")


@router.get("/distributed", include_in_schema=False)
def distributed(request: Request) -> Response:
    return _page(request, "index.html")


@router.get("/login", include_in_schema=False)
def login_page() -> Response:
    return FileResponse(STATIC / "login.html", headers={"Cache-Control": "no-store"})
