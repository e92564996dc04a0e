"""What the analyst knows about a scene, and the structured answer it wants back.

:class:`SceneContext` is built from the camera's latest ``detections`` record, its
recent ``face`` records and the triggering event.  Those records come from other services through
Redis, so they are read defensively: unknown shapes are ignored, sizes are bounded.
:class:`SceneAnalysis` is the answer schema a model must fill; it is validated strictly.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ThreatLevel = Literal["none", "low", "medium", "high"]

MAX_OBJECTS = 200
MAX_LABEL = 64
MAX_SUMMARY = 2000
MAX_ITEM = 200
MAX_NOTABLE = 20


def _clip(value: str, limit: int) -> str:
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


class SceneAnalysis(BaseModel):
    """The structured answer asked from a model (its JSON is validated against this)."""

    model_config = ConfigDict(extra="ignore")

    summary: str = Field(min_length=1, description="Two or three sentences on the scene.")
    notable_objects: list[str] = Field(description="Short descriptions of notable things.")
    threat_level: ThreatLevel = Field(description="none | low | medium | high.")
    suggested_action: str = Field(description="What an operator should do, or 'none'.")

    @field_validator("summary", mode="after")
    @classmethod
    def _summary(cls, v: str) -> str:
        v = _clip(v, MAX_SUMMARY)
        if not v:
            raise ValueError("empty summary")
        return v

    @field_validator("suggested_action", mode="after")
    @classmethod
    def _action(cls, v: str) -> str:
        return _clip(v, MAX_ITEM * 2)

    @field_validator("notable_objects", mode="after")
    @classmethod
    def _notable(cls, v: list[str]) -> list[str]:
        return [_clip(x, MAX_ITEM) for x in v if x.strip()][:MAX_NOTABLE]

    @field_validator("threat_level", mode="before")
    @classmethod
    def _level(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v


def ts_seconds(value: Any) -> float | None:
    """A record timestamp in unix seconds, whatever unit it was written in (s/ms/us/ns)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return None
    v = float(value)
    if v > 1e17:
        return v / 1e9
    if v > 1e14:
        return v / 1e6
    if v > 1e11:
        return v / 1e3
    return v


def _label(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return _clip(value.strip(), MAX_LABEL)
    return None


def _track(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def object_class(obj: dict[str, Any]) -> str | None:
    """Class name of a detection/event object: ``class``, ``label`` or ``class_name``."""
    for key in ("class", "label", "class_name", "cls"):
        name = _label(obj.get(key))
        if name:
            return name
    inner = obj.get("object")
    if isinstance(inner, dict):
        return object_class(inner)
    return None


def object_track(obj: dict[str, Any]) -> int | None:
    for key in ("track_id", "tracker_id", "track"):
        t = _track(obj.get(key))
        if t is not None:
            return t
    inner = obj.get("object")
    if isinstance(inner, dict):
        return object_track(inner)
    return None


@dataclass(frozen=True, slots=True)
class SceneObject:
    cls: str
    track_id: int | None = None
    confidence: float | None = None


@dataclass(slots=True)
class SceneContext:
    """Detections, faces and trigger of one camera at analysis time."""

    camera_id: str
    trigger: str = "periodic"
    trigger_detail: str = ""
    objects: list[SceneObject] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    unknown_faces: int = 0
    detections_age_s: float | None = None

    @property
    def counts(self) -> Counter[str]:
        return Counter(o.cls for o in self.objects)

    def tracks(self, cls: str) -> list[int]:
        return sorted({o.track_id for o in self.objects if o.cls == cls and o.track_id is not None})

    def object_lines(self) -> list[str]:
        """One line per class: ``2 × person (tracks 3, 7)``, most frequent first."""
        lines = []
        for cls, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])):
            tracks = self.tracks(cls)
            suffix = ""
            if tracks:
                word = "track" if len(tracks) == 1 else "tracks"
                suffix = f" ({word} {', '.join(str(t) for t in tracks)})"
            lines.append(f"{n} × {cls}{suffix}")
        return lines

    def notable_objects(self) -> list[str]:
        out = []
        for cls, _ in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])):
            tracks = self.tracks(cls)
            if tracks:
                out.extend(f"{cls} #{t}" for t in tracks)
            else:
                out.append(cls)
        out.extend(f"recognised: {n}" for n in self.names)
        return out[:MAX_NOTABLE]


def _records_objects(record: dict[str, Any]) -> list[SceneObject]:
    raw = record.get("objects")
    if not isinstance(raw, list):
        raw = record.get("detections")
    if not isinstance(raw, list):
        return []
    out = []
    for obj in raw[:MAX_OBJECTS]:
        if not isinstance(obj, dict):
            continue
        cls = object_class(obj)
        if cls is None:
            continue
        conf = obj.get("confidence", obj.get("score"))
        conf_f = (
            float(conf)
            if isinstance(conf, (int, float)) and not isinstance(conf, bool) and 0 <= conf <= 1
            else None
        )
        out.append(SceneObject(cls, object_track(obj), conf_f))
    return out


def faces_summary(
    records: list[dict[str, Any]], camera_id: str, now: float, max_age_s: float
) -> tuple[list[str], int]:
    """Recognised names and unrecognised-face count from the faces worker's records.

    The faces worker writes one record per face (``{"type": "face", "camera_id",
    "ts", "name": "Ada" | "unknown", ...}``).  Names are collected over the records
    of this camera younger than ``max_age_s``; unrecognised faces are counted in the
    newest frame only (the same stranger in five frames is one face, not five).
    """
    fresh: list[tuple[float, str | None]] = []
    for rec in records[: MAX_OBJECTS * 4]:
        if not isinstance(rec, dict) or rec.get("camera_id") != camera_id:
            continue
        ts = ts_seconds(rec.get("ts"))
        if ts is None or now - ts > max_age_s:
            continue
        name = _label(rec.get("name"))
        known = name if name and name.lower() not in ("unknown", "none", "?") else None
        fresh.append((ts, known))
    names = sorted({n for _, n in fresh if n})
    newest = max((ts for ts, _ in fresh), default=None)
    unknown = sum(1 for ts, n in fresh if n is None and ts == newest)
    return names, unknown


def parse_record(raw: str | bytes | None) -> dict[str, Any] | None:
    """A JSON record from Redis, or None when absent or not a JSON object."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def has_activity(record: dict[str, Any] | None, max_age_s: float, now: float | None = None) -> bool:
    """True when a detections record is recent and holds at least one object."""
    if not record:
        return False
    ts = ts_seconds(record.get("ts"))
    now = time.time() if now is None else now
    if ts is None or now - ts > max_age_s:
        return False
    return bool(_records_objects(record))


def build_context(
    camera_id: str,
    detections: dict[str, Any] | None,
    faces: list[dict[str, Any]] | None,
    *,
    trigger: str = "periodic",
    event: dict[str, Any] | None = None,
    now: float | None = None,
    max_age_s: float = 60.0,
) -> SceneContext:
    """Assemble the context; records older than ``max_age_s`` are treated as absent.

    ``faces`` are recent entries of the ``faces`` stream (any camera; filtered here).
    """
    now = time.time() if now is None else now
    ctx = SceneContext(camera_id=camera_id, trigger=trigger)
    if detections:
        ts = ts_seconds(detections.get("ts"))
        age = None if ts is None else max(0.0, now - ts)
        if age is not None and age <= max_age_s:
            ctx.objects = _records_objects(detections)
            ctx.detections_age_s = round(age, 2)
    if faces:
        ctx.names, ctx.unknown_faces = faces_summary(faces, camera_id, now, max_age_s)
    if event:
        ctx.trigger_detail = describe_event(event)
        name = _label(event.get("name"))
        if event.get("type") == "face_recognized" and name and name not in ctx.names:
            ctx.names = sorted([*ctx.names, name])
    return ctx


def describe_event(event: dict[str, Any]) -> str:
    kind = _label(event.get("type")) or "event"
    if kind == "object_entered":
        cls = object_class(event) or "object"
        track = object_track(event)
        return f"{cls} entered" + (f" (track {track})" if track is not None else "")
    if kind == "face_recognized":
        name = _label(event.get("name")) or "someone"
        return f"face recognised: {name}"
    return kind
