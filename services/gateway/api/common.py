"""Helpers shared by the routers: enriching registry rows with worker state."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import HTTPException

from services.gateway.deps import GatewayState
from shared import registry
from shared.keys import SERVICES
from shared.worker import processing_enabled


def worker_stats(gw: GatewayState) -> dict[str, dict[str, dict[str, Any]]]:
    """service -> camera_id -> stats JSON (only fresh entries: updated in the last 30 s)."""
    pipe = gw.r.pipeline(transaction=False)
    for svc in SERVICES:
        pipe.hgetall(gw.keys.worker_stats(svc))
    now = time.time()
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for svc, raw in zip(SERVICES, pipe.execute(), strict=True):
        per_cam = {}
        for cam, val in raw.items():
            try:
                st = json.loads(val)
            except ValueError:
                continue
            if isinstance(st, dict) and now - float(st.get("updated", 0)) <= 30:
                per_cam[cam] = st
        out[svc] = per_cam
    return out


def enrich_cameras(
    gw: GatewayState,
    cameras: list[dict[str, Any]],
    client_status: dict[str, str] | None = None,
    stats: dict[str, dict[str, dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """Add processing switches, worker stats and client status to camera rows.  The
    switches and the worker-stats hashes are read once for all ``cameras``; pass
    ``stats`` when the caller has read them already."""
    ids = [c["camera_id"] for c in cameras]
    enabled = {svc: processing_enabled(gw.r, gw.keys, svc, ids, True) for svc in SERVICES}
    if stats is None:
        stats = worker_stats(gw)
    for cam in cameras:
        cid = cam["camera_id"]
        cam["processing"] = {svc: cid in enabled[svc] for svc in SERVICES}
        cam["worker_stats"] = {svc: stats[svc][cid] for svc in SERVICES if cid in stats[svc]}
        if client_status is not None:
            cam["client_status"] = client_status.get(cam.get("client_id", ""), "offline")
    return cameras


def list_clients(
    gw: GatewayState, stats: dict[str, dict[str, dict[str, Any]]] | None = None
) -> list[dict[str, Any]]:
    """Every client with its enriched cameras; worker stats are read once per call,
    not once per client."""
    ing = gw.settings.ingest
    clients = registry.list_clients(
        gw.r, gw.keys, stale_after=ing.stale_after_s, offline_after=ing.offline_after_s
    )
    status = {c["client_id"]: c["status"] for c in clients}
    enrich_cameras(gw, [cam for c in clients for cam in c["cameras"]], status, stats)
    return clients


def client_status(gw: GatewayState, client_id: str) -> str:
    ing = gw.settings.ingest
    return registry.read_client_status(
        gw.r, gw.keys, client_id, ing.stale_after_s, ing.offline_after_s
    )


def camera_or_404(gw: GatewayState, camera_id: str) -> dict[str, Any]:
    cam = registry.get_camera(gw.r, gw.keys, camera_id)
    if cam is None:
        raise HTTPException(404, f"unknown camera {camera_id!r}")
    return cam
