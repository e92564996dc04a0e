"""Zones, lines and loitering: rule config models and the per-camera rule engine.

Rules live per camera (``CameraRules``: ``zones`` and ``lines``) in Redis, hash
``<prefix>rules`` camera_id -> JSON, with a version counter ``<prefix>rules:version``
bumped on every change so detectors reload without a restart.  The YAML section
``rules:`` seeds cameras that have no rules in Redis yet (see :class:`RulesStore`).

:class:`RuleEngine` (one per camera) takes the tracked objects of one frame and
returns rule events (records for the ``events`` stream):

* ``zone_entered`` — an object's bottom-centre point entered a zone;
* ``zone_left`` — it left (``dwell_s``; ``reason`` ``exited`` or ``lost``);
* ``loitering`` — it stayed longer than the zone's ``loiter_s`` (once per visit);
* ``line_crossed`` — it crossed a line; ``direction`` ``a_to_b`` or ``b_to_a``.

Jitter: an object leaves a zone only once it is more than ``margin`` outside, and
changes side of a line only once it is more than ``margin`` away from the line, so
a box wobbling on a boundary produces one event, not one per frame.

:class:`RulesRuntime` is what a detector calls per ``detections`` record: it tags each
object with the zones it is in, publishes the rule events and counts crossings.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import redis
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared import geometry
from shared.config import Section, load_section
from shared.keys import Keys
from shared.logs import BurstLimiter

log = logging.getLogger(__name__)

Coord = Annotated[float, Field(ge=0.0, le=1.0)]
RuleId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")]
ClassName = Annotated[str, Field(min_length=1, max_length=64)]

DIRECTIONS = ("a_to_b", "b_to_a")
RULE_EVENT_TYPES = ("zone_entered", "zone_left", "loitering", "line_crossed")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ZoneRule(_Model):
    """A polygon on one camera, in normalised coordinates (0..1, y down)."""

    id: RuleId = Field(description="Stable id within the camera (letters, digits, _ and -).")
    name: str = Field("", max_length=80, description="Label shown in the dashboard and HA.")
    points: list[tuple[Coord, Coord]] = Field(
        min_length=3, max_length=64, description="Polygon corners [[x, y], ...], 0..1, y down.",
        examples=[[[0.2, 0.5], [0.8, 0.5], [0.8, 0.95], [0.2, 0.95]]],
    )  # fmt: skip
    classes: list[ClassName] = Field(
        default_factory=list, max_length=32, description="Classes the zone reacts to (empty: all)."
    )
    min_area: float = Field(
        0.0, ge=0.0, le=1.0, description="Ignore boxes smaller than this fraction of the frame."
    )
    loiter_s: float = Field(
        0.0, ge=0.0, le=86400.0, description="Emit `loitering` after this long inside (0: off)."
    )
    margin: float = Field(
        0.01, ge=0.0, le=0.2, description="Hysteresis: leaving needs this distance outside."
    )

    @field_validator("points")
    @classmethod
    def _simple(cls, pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
        hit = geometry.self_intersection(pts)
        if hit is not None:
            i, j = hit
            raise ValueError(f"polygon is self-intersecting (edges {i} and {j} cross)")
        if geometry.polygon_area(pts) <= 1e-9:
            raise ValueError("polygon has no area")
        return pts


class LineRule(_Model):
    """A directed segment: side A is left of first→second point on screen, B right."""

    id: RuleId = Field(description="Stable id within the camera.")
    name: str = Field("", max_length=80, description="Label shown in the dashboard and HA.")
    points: list[tuple[Coord, Coord]] = Field(
        min_length=2, max_length=2, description="The two end points [[x, y], [x, y]], 0..1.",
        examples=[[[0.0, 0.6], [1.0, 0.6]]],
    )  # fmt: skip
    classes: list[ClassName] = Field(
        default_factory=list, max_length=32, description="Classes counted (empty: all)."
    )
    min_area: float = Field(
        0.0, ge=0.0, le=1.0, description="Ignore boxes smaller than this fraction of the frame."
    )
    a_label: str = Field("A", min_length=1, max_length=40, description="Name of side A.")
    b_label: str = Field("B", min_length=1, max_length=40, description="Name of side B.")
    margin: float = Field(
        0.02, ge=0.0, le=0.2, description="Hysteresis: a side counts only this far from the line."
    )

    @field_validator("points")
    @classmethod
    def _distinct(cls, pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
        (x1, y1), (x2, y2) = pts
        if abs(x1 - x2) + abs(y1 - y2) < 1e-3:
            raise ValueError("the two points of a line must differ")
        return pts


class CameraRules(_Model):
    zones: list[ZoneRule] = Field(default_factory=list, max_length=32, description="Zones.")
    lines: list[LineRule] = Field(default_factory=list, max_length=32, description="Lines.")

    @model_validator(mode="after")
    def _unique_ids(self) -> CameraRules:
        for kind in ("zones", "lines"):
            ids = [r.id for r in getattr(self, kind)]
            dup = {i for i in ids if ids.count(i) > 1}
            if dup:
                raise ValueError(f"{kind}: duplicate id {sorted(dup)[0]!r}")
        return self


class RulesConfig(Section):
    """Section ``rules``: zones/lines per camera (seeds Redis) and engine settings."""

    cameras: dict[str, CameraRules] = Field(
        default_factory=dict,
        description="camera_id -> {zones, lines}; written to Redis for cameras without rules "
        "there (the dashboard's edits win), or always with replace_on_start.",
    )
    replace_on_start: bool = Field(
        False, description="Overwrite rules in Redis with the YAML ones when the notifier starts."
    )
    forget_after_s: float = Field(
        2.0, gt=0, le=600, description="A track unseen this long has left its zones (`lost`)."
    )
    reload_s: float = Field(
        1.0, gt=0, le=60, description="How often detectors check Redis for changed rules."
    )
    counts_retention_days: int = Field(
        90, ge=1, le=3650, description="How long per-minute line counts are kept in Redis."
    )


# ---------------------------------------------------------------------- storage


class RulesStore:
    """Rules in Redis: hash camera_id -> CameraRules JSON, plus a version counter."""

    def __init__(self, r: redis.Redis, keys: Keys) -> None:
        self.r, self.keys = r, keys
        self.hash = keys.rules
        self.version_key = keys.rules_version

    def version(self) -> int:
        return int(self.r.get(self.version_key) or 0)

    def get(self, camera_id: str) -> CameraRules | None:
        raw = self.r.hget(self.hash, camera_id)
        return CameraRules.model_validate_json(raw) if raw else None

    def all(self) -> dict[str, CameraRules]:
        out = {}
        for cam, raw in self.r.hgetall(self.hash).items():
            cam = cam.decode() if isinstance(cam, bytes) else cam
            try:
                out[cam] = CameraRules.model_validate_json(raw)
            except ValueError:
                log.warning("invalid rules in redis ignored", extra={"camera_id": cam})
        return out

    def put(self, camera_id: str, rules: CameraRules) -> None:
        pipe = self.r.pipeline()
        pipe.hset(self.hash, camera_id, rules.model_dump_json())
        pipe.incr(self.version_key)
        pipe.execute()

    def delete(self, camera_id: str) -> None:
        pipe = self.r.pipeline()
        pipe.hdel(self.hash, camera_id)
        pipe.incr(self.version_key)
        pipe.execute()

    def seed(self, cfg: RulesConfig) -> int:
        """Write the YAML rules: cameras without rules in Redis (all with replace_on_start)."""
        n = 0
        for cam, rules in cfg.cameras.items():
            data = rules.model_dump_json()
            if cfg.replace_on_start:
                self.r.hset(self.hash, cam, data)
                n += 1
            elif self.r.hsetnx(self.hash, cam, data):
                n += 1
        if n:
            self.r.incr(self.version_key)
        return n

    # --- line counters ------------------------------------------------------
    def counts_key(self, camera_id: str, day: str) -> str:
        return self.keys.rules_counts(camera_id, day)

    def totals_key(self, camera_id: str) -> str:
        return self.keys.rules_totals(camera_id)

    def count_crossings(self, events: Iterable[dict[str, Any]], retention_days: int) -> None:
        pipe = self.r.pipeline(transaction=False)
        n = 0
        for ev in events:
            if ev.get("type") != "line_crossed":
                continue
            dt = datetime.fromtimestamp(ev["ts"] / 1000, UTC)
            key = self.counts_key(ev["camera_id"], dt.strftime("%Y%m%d"))
            minute = dt.hour * 60 + dt.minute
            pipe.hincrby(key, f"{ev['line']}|{ev['direction']}|{minute}", 1)
            pipe.expire(key, retention_days * 86400)
            pipe.hincrby(self.totals_key(ev["camera_id"]), f"{ev['line']}|{ev['direction']}", 1)
            n += 1
        if n:
            pipe.execute()

    def totals(self, camera_id: str) -> dict[str, dict[str, int]]:
        """line_id -> {a_to_b, b_to_a} since counting began."""
        out: dict[str, dict[str, int]] = {}
        for f, v in self.r.hgetall(self.totals_key(camera_id)).items():
            f = f.decode() if isinstance(f, bytes) else f
            line, _, d = f.rpartition("|")
            out.setdefault(line, dict.fromkeys(DIRECTIONS, 0))[d] = int(v)
        return out

    def counts(self, camera_id: str, since_ms: int, until_ms: int) -> dict[str, dict[str, int]]:
        """line_id -> {a_to_b, b_to_a} for crossings in [since, until) (minute resolution)."""
        out: dict[str, dict[str, int]] = {}
        start = datetime.fromtimestamp(since_ms / 1000, UTC).replace(second=0, microsecond=0)
        end = datetime.fromtimestamp(until_ms / 1000, UTC)
        day = start.replace(hour=0, minute=0)
        while day <= end:
            for f, v in self.r.hgetall(self.counts_key(camera_id, day.strftime("%Y%m%d"))).items():
                f = f.decode() if isinstance(f, bytes) else f
                line, d, minute = f.rsplit("|", 2)
                t = day + timedelta(minutes=int(minute))
                if start <= t < end:
                    c = out.setdefault(line, dict.fromkeys(DIRECTIONS, 0))
                    c[d] = c.get(d, 0) + int(v)
            day += timedelta(days=1)
        return out


# ---------------------------------------------------------------------- engine


@dataclass(frozen=True)
class TrackedObject:
    """One tracked object in one frame: normalised ``xyxy`` box."""

    track_id: int
    class_name: str
    box: tuple[float, float, float, float]

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


@dataclass
class _ZoneVisit:
    entered_t: float
    loitered: bool = False


@dataclass
class _LineSide:
    side: str  # "A" | "B"
    anchor: geometry.Point


@dataclass
class _Track:
    class_name: str
    box: tuple[float, float, float, float]
    last_seen: float
    zones: dict[str, _ZoneVisit] = field(default_factory=dict)
    lines: dict[str, _LineSide] = field(default_factory=dict)


def _eligible(rule: ZoneRule | LineRule, obj: TrackedObject) -> bool:
    if rule.classes and obj.class_name not in rule.classes:
        return False
    return obj.area >= rule.min_area


class RuleEngine:
    """Zone/line/loiter state of one camera.  Not thread-safe: one caller per camera."""

    def __init__(
        self,
        camera_id: str,
        rules: CameraRules | None = None,
        *,
        forget_after_s: float = 2.0,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.camera_id = camera_id
        self.client_id = camera_id.split("/", 1)[0]
        self.forget_after_s = forget_after_s
        self.rules = rules or CameraRules()
        self.tracks: dict[int, _Track] = {}
        self._new_id = new_id

    def set_rules(self, rules: CameraRules) -> None:
        """Swap rules; state of zones/lines that still exist (same id) is kept."""
        zone_ids = {z.id for z in rules.zones}
        line_ids = {ln.id for ln in rules.lines}
        for tr in self.tracks.values():
            tr.zones = {k: v for k, v in tr.zones.items() if k in zone_ids}
            tr.lines = {k: v for k, v in tr.lines.items() if k in line_ids}
        self.rules = rules

    # ------------------------------------------------------------------ events
    def _event(self, type_: str, t: float, tid: int, tr: _Track, **extra: Any) -> dict[str, Any]:
        return {
            "type": type_,
            "event_id": self._new_id(),
            "camera_id": self.camera_id,
            "client_id": self.client_id,
            "ts": int(round(t * 1000)),
            "track_id": tid,
            "class": tr.class_name,
            "box": [round(v, 5) for v in tr.box],
            **extra,
        }

    def _zone_left(self, t: float, tid: int, tr: _Track, zone: ZoneRule, reason: str) -> dict:
        visit = tr.zones.pop(zone.id)
        return self._event(
            "zone_left", t, tid, tr, zone=zone.id, zone_name=zone.name or zone.id,
            dwell_s=round(max(0.0, t - visit.entered_t), 3), reason=reason,
        )  # fmt: skip

    # ------------------------------------------------------------------ update
    def update(
        self, objects: Iterable[TrackedObject], t: float
    ) -> tuple[dict[int, list[str]], list[dict[str, Any]]]:
        """Feed one frame's tracked objects seen at ``t`` (seconds).

        Returns (track_id -> ids of the zones it is in, events)."""
        events: list[dict[str, Any]] = []
        in_zones: dict[int, list[str]] = {}
        for obj in objects:
            tr = self.tracks.get(obj.track_id)
            if tr is None:
                tr = self.tracks[obj.track_id] = _Track(obj.class_name, obj.box, t)
            tr.class_name, tr.box, tr.last_seen = obj.class_name, obj.box, max(tr.last_seen, t)
            p = geometry.bottom_centre(obj.box)
            for zone in self.rules.zones:
                self._update_zone(zone, obj, tr, p, t, events)
            for line in self.rules.lines:
                self._update_line(line, obj, tr, p, t, events)
            in_zones[obj.track_id] = [z for z in tr.zones]
        events.extend(self.tick(t))
        return in_zones, events

    def _update_zone(
        self, zone: ZoneRule, obj: TrackedObject, tr: _Track, p: geometry.Point, t: float,
        events: list[dict[str, Any]],
    ) -> None:  # fmt: skip
        visit = tr.zones.get(zone.id)
        if not _eligible(zone, obj):
            return  # keep the state: a box may shrink for a frame
        inside = geometry.point_in_polygon(p, zone.points)
        if visit is None and inside:
            tr.zones[zone.id] = _ZoneVisit(t)
            events.append(
                self._event("zone_entered", t, obj.track_id, tr, zone=zone.id,
                            zone_name=zone.name or zone.id)
            )  # fmt: skip
        elif (
            visit is not None
            and not inside
            and geometry.distance_to_boundary(p, zone.points) > zone.margin
        ):
            events.append(self._zone_left(t, obj.track_id, tr, zone, "exited"))

    def _update_line(
        self, line: LineRule, obj: TrackedObject, tr: _Track, p: geometry.Point, t: float,
        events: list[dict[str, Any]],
    ) -> None:  # fmt: skip
        if not _eligible(line, obj):
            return
        a, b = line.points
        side = geometry.side_of(p, a, b, line.margin)
        if side is None:
            return  # inside the hysteresis band: no decision
        state = tr.lines.get(line.id)
        if state is None:
            tr.lines[line.id] = _LineSide(side, p)
            return
        if side != state.side and geometry.segments_intersect(state.anchor, p, a, b):
            direction = f"{state.side.lower()}_to_{side.lower()}"
            labels = {"A": line.a_label, "B": line.b_label}
            events.append(
                self._event(
                    "line_crossed", t, obj.track_id, tr, line=line.id,
                    line_name=line.name or line.id, direction=direction,
                    from_side=labels[state.side], to_side=labels[side],
                )
            )  # fmt: skip
        state.side, state.anchor = side, p

    def tick(self, t: float, *, forget: bool = True) -> list[dict[str, Any]]:
        """Time-driven events: loitering, and leaving for tracks unseen too long.

        ``forget=False`` (between processed frames): loitering only, for tracks seen
        within ``forget_after_s``; a track is declared lost only by a processed frame
        that no longer shows it (frames may be processed seconds apart)."""
        events: list[dict[str, Any]] = []
        zones = {z.id: z for z in self.rules.zones}
        for tid, tr in list(self.tracks.items()):
            if t - tr.last_seen > self.forget_after_s:
                if forget:
                    events.extend(self._forget(tid, tr, zones, "lost"))
                continue
            for zid, visit in tr.zones.items():
                zone = zones.get(zid)
                if zone is None or zone.loiter_s <= 0 or visit.loitered:
                    continue
                if t - visit.entered_t >= zone.loiter_s:
                    visit.loitered = True
                    events.append(
                        self._event("loitering", t, tid, tr, zone=zid, zone_name=zone.name or zid,
                                    dwell_s=round(t - visit.entered_t, 3), loiter_s=zone.loiter_s)
                    )  # fmt: skip
        return events

    def _forget(self, tid: int, tr: _Track, zones: dict[str, ZoneRule], reason: str) -> list:
        del self.tracks[tid]
        when = tr.last_seen
        return [self._zone_left(when, tid, tr, zones[z], reason) for z in list(tr.zones)]

    def close(self, reason: str = "handover") -> list[dict[str, Any]]:
        """Forget every track: ``zone_left`` for each visit still open."""
        zones = {z.id: z for z in self.rules.zones}
        events: list[dict[str, Any]] = []
        for tid, tr in list(self.tracks.items()):
            events.extend(self._forget(tid, tr, zones, reason))
        return events


# ---------------------------------------------------------------------- detector side


def objects_from_record(record: dict[str, Any]) -> list[TrackedObject]:
    """The tracked objects of a ``detections`` record (objects without track are skipped)."""
    out = []
    for obj in record.get("objects", ()):
        tid = obj.get("track_id")
        if tid is None:
            continue
        out.append(TrackedObject(int(tid), str(obj.get("class", "")), tuple(obj["box"][:4])))
    return out


class RulesRuntime:
    """Rules applied inside a detector: one :class:`RuleEngine` per camera.

    ``apply(record)`` tags each object of a ``detections`` record with ``zones`` (ids
    of the zones its bottom-centre point is in), publishes rule events through
    ``publish`` (events Redis refuses are kept, bounded, and retried first next
    time) and counts line crossings.  Rules are re-read when their version changes
    (checked at most every ``reload_s``), so edits apply without a restart.
    """

    def __init__(
        self,
        r: redis.Redis,
        keys: Keys,
        publish: Callable[[dict[str, Any]], Any],
        config: RulesConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_unpublished: int = 10_000,
    ) -> None:
        # Default: the `rules:` section of SENTRI_CONFIG and SENTRI_RULES__* env vars.
        self.config = config or load_section(RulesConfig, "rules")
        self.store = RulesStore(r, keys)
        self.publish = publish
        self.clock = clock
        self.engines: dict[str, RuleEngine] = {}
        self._rules: dict[str, CameraRules] = {}
        self._version: int | None = None
        self._next_check = 0.0
        self._unpublished: deque[dict[str, Any]] = deque(maxlen=max_unpublished)
        self._burst = BurstLimiter()
        self._last: dict[str, tuple[float, float]] = {}  # camera -> (frame time, clock())

    def _reload(self) -> None:
        now = self.clock()
        if now < self._next_check:
            return
        self._next_check = now + self.config.reload_s
        try:
            version = self.store.version()
            if version == self._version:
                return
            rules = self.store.all()
        except redis.RedisError as exc:
            self._log_once("rules_reload", "could not read rules; keeping the current ones", exc)
            return
        self._version, self._rules = version, rules
        for cam, engine in self.engines.items():
            engine.set_rules(rules.get(cam, CameraRules()))
        log.info("rules loaded", extra={"version": version, "cameras": len(rules)})

    def engine(self, camera_id: str) -> RuleEngine:
        eng = self.engines.get(camera_id)
        if eng is None:
            eng = self.engines[camera_id] = RuleEngine(
                camera_id,
                self._rules.get(camera_id, CameraRules()),
                forget_after_s=self.config.forget_after_s,
            )
        return eng

    def apply(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """Tag ``record``'s objects with their zones; publish and return the rule events."""
        self._reload()
        cam = record["camera_id"]
        engine = self.engine(cam)
        if not engine.rules.zones and not engine.rules.lines and not engine.tracks:
            return []
        t = record["ts"] / 1000.0
        self._last[cam] = (t, self.clock())
        zones, events = engine.update(objects_from_record(record), t)
        for obj in record.get("objects", ()):
            if obj.get("track_id") is not None:
                obj["zones"] = zones.get(int(obj["track_id"]), [])
        self.emit(events)
        return events

    def tick(self) -> list[dict[str, Any]]:
        """Between processed frames: loitering on time.

        A camera's time runs on from its last frame time by the local clock, so the
        agents' clocks never have to agree with this one.  Tracks are not declared
        lost here: under overload or motion gating frames are processed seconds
        apart while the objects are still there."""
        events: list[dict[str, Any]] = []
        now = self.clock()
        for cam, engine in self.engines.items():
            if cam in self._last and engine.tracks:
                t, at = self._last[cam]
                events += engine.tick(t + (now - at), forget=False)
        self.emit(events)
        return events

    def close_camera(self, camera_id: str, reason: str = "handover") -> list[dict[str, Any]]:
        self._last.pop(camera_id, None)
        engine = self.engines.pop(camera_id, None)
        events = engine.close(reason) if engine else []
        self.emit(events)
        return events

    def emit(self, events: list[dict[str, Any]]) -> None:
        self._unpublished.extend(events)
        sent: list[dict[str, Any]] = []
        try:
            while self._unpublished:
                self.publish(self._unpublished[0])
                sent.append(self._unpublished.popleft())
        except redis.RedisError as exc:
            self._log_once("rules_publish", "could not publish rule events; will retry", exc)
        try:
            self.store.count_crossings(sent, self.config.counts_retention_days)
        except redis.RedisError as exc:
            self._log_once("rules_count", "could not count line crossings", exc)

    def _log_once(self, key: str, msg: str, exc: Exception) -> None:
        ok, suppressed = self._burst.should_log(key)
        if ok:
            log.warning(msg, extra={"error": str(exc), "suppressed": suppressed,
                                    "queued": len(self._unpublished)})  # fmt: skip


RuleEventType = Literal["zone_entered", "zone_left", "loitering", "line_crossed"]
