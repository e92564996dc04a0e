"""Rules: zones and lines per camera, line counts, and the notifier's dead letters.

Rules are stored in Redis (:class:`shared.rules.RulesStore`); detectors pick up a
change within ``rules.reload_s`` without a restart.  Bodies are validated by the
pydantic models of :mod:`shared.rules`: a polygon with fewer than 3 points, a
self-intersecting one, coordinates outside 0..1 or an unknown camera get a 422 whose
``loc`` names the field.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field, ValidationError

from services.gateway.api.common import camera_or_404
from services.gateway.deps import (
    CameraGuard,
    GatewayState,
    camera_scope,
    get_state,
    require_admin,
    require_user,
)
from services.gateway.models import NOT_FOUND
from services.notifier.config import MIN_SECRET, WebhookConfig
from services.notifier.webhooks import DeadLetters, WebhookStore
from shared import registry
from shared.rules import DIRECTIONS, CameraRules, LineRule, RulesStore, ZoneRule

router = APIRouter(tags=["rules"], dependencies=[Depends(require_user)])

CAM = "/api/cameras/{camera_id:path}"
MAX_RANGE_MS = 366 * 86400 * 1000


class LineCount(BaseModel):
    name: str = Field(description="Line name (or id).")
    a_to_b: int = Field(description="Crossings from side A to side B.")
    b_to_a: int = Field(description="Crossings from side B to side A.")
    total: int = Field(description="Both directions.")
    a_label: str = Field("A", description="Name of side A.")
    b_label: str = Field("B", description="Name of side B.")


class Counts(BaseModel):
    camera_id: str
    since: int = Field(description="Start of the range, unix ms (inclusive, minute resolution).")
    until: int = Field(description="End of the range, unix ms (exclusive).")
    lines: dict[str, LineCount] = Field(description="line_id -> counts in the range.")


class DeadLetter(BaseModel):
    id: str
    webhook: str
    url: str
    event_id: str | None = None
    camera_id: str | None = None
    type: str | None = None
    attempts: int
    error: str
    ts: int = Field(description="When it was given up, unix ms.")
    event: dict[str, Any]


def _store(gw: GatewayState) -> RulesStore:
    return RulesStore(gw.r, gw.keys)


def _known_camera_or_422(gw: GatewayState, camera_id: str) -> None:
    if registry.get_camera(gw.r, gw.keys, camera_id) is None:
        raise HTTPException(
            422,
            [{"loc": ["path", "camera_id"], "msg": f"unknown camera {camera_id!r}",
              "type": "unknown_camera", "input": camera_id}],
        )  # fmt: skip


@router.get("/api/rules", response_model=dict[str, CameraRules])
def all_rules(
    request: Request, guard: CameraGuard = Depends(camera_scope)
) -> dict[str, CameraRules]:
    """Zones and lines of every camera (in the caller's scope) that has any."""
    return {c: v for c, v in _store(get_state(request)).all().items() if guard.allows(c)}


SCOPED = [Depends(camera_scope)]  # 404 out of scope; writes need the operator role


@router.get(f"{CAM}/rules", response_model=CameraRules, responses=NOT_FOUND, dependencies=SCOPED)
def camera_rules(camera_id: str, request: Request) -> CameraRules:
    gw = get_state(request)
    camera_or_404(gw, camera_id)
    return _store(gw).get(camera_id) or CameraRules()


@router.put(f"{CAM}/rules", response_model=CameraRules, responses=NOT_FOUND, dependencies=SCOPED)
def replace_rules(camera_id: str, body: CameraRules, request: Request) -> CameraRules:
    """Replace all zones and lines of a camera (applied by detectors without a restart)."""
    gw = get_state(request)
    _known_camera_or_422(gw, camera_id)
    _store(gw).put(camera_id, body)
    return body


def _upsert(gw: GatewayState, camera_id: str, kind: str, item: ZoneRule | LineRule) -> CameraRules:
    _known_camera_or_422(gw, camera_id)
    store = _store(gw)
    current = store.get(camera_id) or CameraRules()
    items = [x for x in getattr(current, kind) if x.id != item.id] + [item]
    try:  # the camera's limits (at most 32 zones and 32 lines)
        rules = CameraRules.model_validate({**current.model_dump(), kind: items})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise HTTPException(422, [{"loc": ["body", *err["loc"]], "msg": err["msg"],
                                   "type": err["type"]}]) from None  # fmt: skip
    store.put(camera_id, rules)
    return rules


def _remove(gw: GatewayState, camera_id: str, kind: str, item_id: str) -> CameraRules:
    camera_or_404(gw, camera_id)
    store = _store(gw)
    current = store.get(camera_id) or CameraRules()
    items = [x for x in getattr(current, kind) if x.id != item_id]
    if len(items) == len(getattr(current, kind)):
        return current  # already gone: DELETE is idempotent
    rules = current.model_copy(update={kind: items})
    store.put(camera_id, rules)
    return rules


@router.post(f"{CAM}/zones", response_model=CameraRules, responses=NOT_FOUND, dependencies=SCOPED)
def put_zone(camera_id: str, zone: ZoneRule, request: Request) -> CameraRules:
    """Add a zone, or replace the one with the same id."""
    return _upsert(get_state(request), camera_id, "zones", zone)


@router.delete(
    CAM + "/zones/{zone_id}", response_model=CameraRules, responses=NOT_FOUND,
    dependencies=SCOPED,
)  # fmt: skip
def delete_zone(camera_id: str, zone_id: str, request: Request) -> CameraRules:
    return _remove(get_state(request), camera_id, "zones", zone_id)


@router.post(f"{CAM}/lines", response_model=CameraRules, responses=NOT_FOUND, dependencies=SCOPED)
def put_line(camera_id: str, line: LineRule, request: Request) -> CameraRules:
    """Add a line, or replace the one with the same id."""
    return _upsert(get_state(request), camera_id, "lines", line)


@router.delete(
    CAM + "/lines/{line_id}", response_model=CameraRules, responses=NOT_FOUND,
    dependencies=SCOPED,
)  # fmt: skip
def delete_line(camera_id: str, line_id: str, request: Request) -> CameraRules:
    return _remove(get_state(request), camera_id, "lines", line_id)


@router.get(f"{CAM}/counts", response_model=Counts, responses=NOT_FOUND, dependencies=SCOPED)
def line_counts(
    camera_id: str,
    request: Request,
    since: int | None = Query(None, ge=0, description="Unix ms (default: until - 24 h)."),
    until: int | None = Query(None, ge=0, description="Unix ms (default: now)."),
) -> Counts:
    """Line crossings per line and direction in [since, until), minute resolution."""
    gw = get_state(request)
    camera_or_404(gw, camera_id)
    until = int(time.time() * 1000) + 60_000 if until is None else until
    since = until - 86400 * 1000 if since is None else since
    if since > until:
        raise HTTPException(422, [{"loc": ["query", "since"], "msg": "since is after until",
                                   "type": "value_error", "input": since}])  # fmt: skip
    if until - since > MAX_RANGE_MS:
        raise HTTPException(422, [{"loc": ["query", "since"], "msg": "range longer than 366 days",
                                   "type": "value_error", "input": since}])  # fmt: skip
    store = _store(gw)
    rules = store.get(camera_id) or CameraRules()
    counted = store.counts(camera_id, since, until)
    lines: dict[str, LineCount] = {}
    for ln in rules.lines:
        c = counted.get(ln.id, dict.fromkeys(DIRECTIONS, 0))
        lines[ln.id] = LineCount(
            name=ln.name or ln.id, a_to_b=c["a_to_b"], b_to_a=c["b_to_a"],
            total=c["a_to_b"] + c["b_to_a"], a_label=ln.a_label, b_label=ln.b_label,
        )  # fmt: skip
    return Counts(camera_id=camera_id, since=since, until=until, lines=lines)


@router.get("/api/notifier/deadletters", response_model=list[DeadLetter],
            dependencies=[Depends(require_admin)])  # fmt: skip
def dead_letters(
    request: Request, limit: int = Query(100, ge=1, le=1000, description="Newest first.")
) -> list[dict[str, Any]]:
    """Webhook deliveries the notifier gave up on (newest first)."""
    gw = get_state(request)
    return DeadLetters(gw.r, gw.keys).list(limit)


@router.delete("/api/notifier/deadletters", dependencies=[Depends(require_admin)])
def clear_dead_letters(request: Request) -> dict[str, int]:
    gw = get_state(request)
    return {"removed": DeadLetters(gw.r, gw.keys).clear()}


@router.post("/api/notifier/deadletters/{dead_id}/retry", status_code=202,
             dependencies=[Depends(require_admin)], responses=NOT_FOUND)  # fmt: skip
def retry_dead_letter(dead_id: str, request: Request) -> dict[str, str]:
    """Queue a dead letter for delivery again (attempts start over)."""
    gw = get_state(request)
    entry = DeadLetters(gw.r, gw.keys).pop(dead_id)
    if entry is None:
        raise HTTPException(404, f"no dead letter {dead_id!r}")
    WebhookStore(gw.r, gw.keys).requeue(entry)
    return {"queued": dead_id, "webhook": entry["webhook"]}


class WebhookView(BaseModel):
    name: str
    url: str
    secret_set: bool = Field(description="A signing secret is set (it is never shown).")
    filter: dict[str, Any]
    allow_internal: bool
    max_attempts: int
    source: str = Field(description="'dashboard' (editable) or 'config' (YAML, read-only).")


def _view(w: WebhookConfig) -> WebhookView:
    d = w.model_dump(mode="json", exclude={"secret"})
    return WebhookView(
        name=w.name, url=w.url, secret_set=bool(w.secret.get_secret_value()),
        filter=d["filter"], allow_internal=w.allow_internal, max_attempts=w.max_attempts,
        source="dashboard",
    )  # fmt: skip


@router.get("/api/notifier/webhooks", dependencies=[Depends(require_admin)])
def list_webhooks(request: Request) -> dict[str, Any]:
    """Webhooks added here (editable) and the names of the config file's ones."""
    gw = get_state(request)
    store = WebhookStore(gw.r, gw.keys)
    return {"webhooks": [_view(w) for w in store.list()], "configured": store.static()}


@router.post("/api/notifier/webhooks", response_model=WebhookView,
             dependencies=[Depends(require_admin)])  # fmt: skip
def put_webhook(body: WebhookConfig, request: Request) -> WebhookView:
    """Add or replace a webhook (the notifier applies it within a second, no restart).
    Leaving ``secret`` empty keeps the current one."""
    gw = get_state(request)
    store = WebhookStore(gw.r, gw.keys)
    if body.name in store.static():
        raise HTTPException(422, [{"loc": ["body", "name"], "type": "value_error",
                                   "msg": "a webhook of that name is set in the config file",
                                   "input": body.name}])  # fmt: skip
    if not body.secret.get_secret_value():
        old = store.get(body.name)
        if old is None or not old.secret.get_secret_value():
            raise HTTPException(422, [{"loc": ["body", "secret"], "type": "missing",
                                       "msg": "a signing secret is required", "input": ""}])  # fmt: skip
        body = body.model_copy(update={"secret": old.secret})
    elif len(body.secret.get_secret_value()) < MIN_SECRET:
        raise HTTPException(422, [{"loc": ["body", "secret"], "type": "too_short",
                                   "msg": f"at least {MIN_SECRET} characters", "input": ""}])  # fmt: skip
    store.put(body)
    return _view(body)


@router.delete("/api/notifier/webhooks/{name}", dependencies=[Depends(require_admin)],
               responses=NOT_FOUND)  # fmt: skip
def delete_webhook(name: str, request: Request) -> dict[str, str]:
    gw = get_state(request)
    if not WebhookStore(gw.r, gw.keys).delete(name):
        raise HTTPException(404, f"no webhook {name!r}")
    return {"deleted": name}
