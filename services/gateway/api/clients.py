"""/api/distributed: clients, overall stats, processing switches, cleanup."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, HTTPException, Request

from services.gateway import audit
from services.gateway.api.common import camera_or_404, enrich_cameras, list_clients, worker_stats
from services.gateway.auth import Principal
from services.gateway.deps import (
    CameraGuard,
    GatewayState,
    camera_scope,
    get_state,
    require_admin,
    require_user,
)
from services.gateway.models import (
    NOT_FOUND,
    CleanupResult,
    Client,
    ClientList,
    ProcessingRequest,
    ProcessingState,
    ServiceStats,
    Stats,
)
from shared import registry
from shared.keys import SERVICES
from shared.redisutil import parse_entry
from shared.worker import live_members, processing_enabled, set_processing

router = APIRouter(
    prefix="/api/distributed", tags=["distributed"], dependencies=[Depends(require_user)]
)

SCAN_CAP = 5000  # most stream entries read to compute per-minute rates


def scoped_clients(gw: GatewayState, guard: CameraGuard, stats=None) -> list[dict]:
    """The clients this request may see, each with only its in-scope cameras."""
    clients = list_clients(gw, stats)
    if guard.everything:
        return clients
    out = []
    for c in clients:
        if guard.allows_client(c["client_id"]):
            c["cameras"] = guard.cameras(c["cameras"])
            out.append(c)
    return out


@router.get("/clients", response_model=ClientList)
def get_clients(request: Request, guard: CameraGuard = Depends(camera_scope)) -> ClientList:
    clients = scoped_clients(get_state(request), guard)
    return ClientList(clients=clients, count=len(clients))


@router.get("/clients/{client_id}", response_model=Client, responses=NOT_FOUND)
def get_client(
    client_id: str, request: Request, guard: CameraGuard = Depends(camera_scope)
) -> Client:
    gw = get_state(request)
    ing = gw.settings.ingest
    client = registry.get_client(
        gw.r, gw.keys, client_id, stale_after=ing.stale_after_s, offline_after=ing.offline_after_s
    )
    if client is None:
        raise HTTPException(404, f"unknown client {client_id!r}")
    client["cameras"] = guard.cameras(client["cameras"])
    enrich_cameras(gw, client["cameras"], {client_id: client["status"]})
    return client


def _per_minute(gw: GatewayState, stream: str, now_ms: int, guard: CameraGuard) -> tuple[int, int]:
    """(entries, detected objects) of a stream in the last minute (capped scan), counting
    only the cameras in scope."""
    entries = gw.r.xrevrange(gw.keys.stream(stream), "+", f"{now_ms - 60_000}-0", count=SCAN_CAP)
    if not guard.everything:
        entries = [(i, f) for i, f in entries if guard.allows(str(f.get("camera_id", "")))]
    if stream != "detections":
        return len(entries), 0
    objects = 0
    for entry_id, fields in entries:
        rec = parse_entry(entry_id, fields)
        objs = rec.get("objects")
        objects += len(objs) if isinstance(objs, list) else 0
    return len(entries), objects


@router.get("/stats", response_model=Stats)
def get_stats(request: Request, guard: CameraGuard = Depends(camera_scope)) -> Stats:
    """Totals over the cameras in the caller's scope."""
    gw = get_state(request)
    stats = worker_stats(gw)
    if not guard.everything:
        stats = {
            svc: {c: st for c, st in per.items() if guard.allows(c)} for svc, per in stats.items()
        }
    clients = scoped_clients(gw, guard, stats)
    by_status = {"online": 0, "stale": 0, "offline": 0}
    for c in clients:
        by_status[c["status"]] += 1
    cameras = [cam for c in clients for cam in c["cameras"]]
    now = time.time()
    services = {}
    for svc in SERVICES:
        per_cam = stats[svc]
        replicas = len(live_members(gw.r, gw.keys, svc, gw.settings.worker.member_ttl_s))
        lat = [float(s.get("latency_ms", 0)) for s in per_cam.values() if s.get("processed")]
        services[svc] = ServiceStats(
            replicas=replicas,
            cameras=len(per_cam),
            fps=round(sum(float(s.get("fps", 0)) for s in per_cam.values()), 2),
            skipped=sum(int(s.get("skipped", 0)) for s in per_cam.values()),
            processed=sum(int(s.get("processed", 0)) for s in per_cam.values()),
            latency_ms=round(sum(lat) / len(lat), 1) if lat else None,
        )
    now_ms = int(now * 1000)
    det, objs = _per_minute(gw, "detections", now_ms, guard)
    events, _ = _per_minute(gw, "events", now_ms, guard)
    return Stats(
        clients=by_status,
        clients_total=len(clients),
        cameras=len(cameras),
        streaming=sum(1 for c in cameras if c.get("streaming")),
        live_viewed=len(guard.ids(gw.live.subscribed)),
        services=services,
        detections_per_min=det,
        objects_per_min=objs,
        events_per_min=events,
    )


def _switch(
    request: Request, body: ProcessingRequest, on: bool, guard: CameraGuard
) -> ProcessingState:
    gw = get_state(request)
    guard.camera(body.camera_id, write=True)
    camera_or_404(gw, body.camera_id)
    set_processing(gw.r, gw.keys, body.service, body.camera_id, on)
    audit.record(
        request,
        "processing_started" if on else "processing_stopped",
        principal=guard.principal,
        target=body.camera_id,
        service=body.service,
    )
    return ProcessingState(camera_id=body.camera_id, service=body.service, enabled=on)


@router.post("/start_processing", response_model=ProcessingState, responses=NOT_FOUND)
def start_processing(
    body: ProcessingRequest, request: Request, guard: CameraGuard = Depends(camera_scope)
) -> ProcessingState:
    """Turn a worker service on for one camera (the worker picks it up within ~1 s)."""
    return _switch(request, body, True, guard)


@router.post("/stop_processing", response_model=ProcessingState, responses=NOT_FOUND)
def stop_processing(
    body: ProcessingRequest, request: Request, guard: CameraGuard = Depends(camera_scope)
) -> ProcessingState:
    return _switch(request, body, False, guard)


@router.get("/processing", response_model=dict[str, dict[str, bool]])
def get_processing(
    request: Request, guard: CameraGuard = Depends(camera_scope)
) -> dict[str, dict[str, bool]]:
    """camera_id -> service -> enabled (an unset switch means on, every service's default)."""
    gw = get_state(request)
    cams = guard.ids(sorted(gw.r.smembers(gw.keys.cameras)))
    enabled = {svc: processing_enabled(gw.r, gw.keys, svc, cams, True) for svc in SERVICES}
    return {cam: {svc: cam in enabled[svc] for svc in SERVICES} for cam in cams}


@router.post("/cleanup", response_model=CleanupResult, dependencies=[Depends(require_admin)])
def cleanup(request: Request, principal: Principal = Depends(require_admin)) -> CleanupResult:
    """Remove clients not heard from for ingest.cleanup_after_s (administrators only:
    it touches every client)."""
    gw = get_state(request)
    removed = registry.cleanup_inactive(gw.r, gw.keys, gw.settings.ingest.cleanup_after_s)
    if removed:
        audit.record(request, "clients_cleaned_up", principal=principal, removed=removed)
    return CleanupResult(removed=removed)
