"""The event store: SQLite (WAL) on one box, PostgreSQL in a cluster.

:class:`EventStore` owns the engine, runs the Alembic migrations at open, and offers
what the archiver, the recorder and the gateway need:

* :meth:`apply_events`: upsert a batch of ``events``-stream records by ``event_id``;
  idempotent, so at-least-once delivery never makes a duplicate and the
  ``object_entered``/``object_left`` of one track land on one ``tracked_objects`` row
  whatever order they arrive in;
* :meth:`list_events` / :meth:`get_event`: filtered, cursor-paginated reads;
* :meth:`add_segment` / :meth:`add_gap` / :meth:`segments` / :meth:`gaps`: the
  recording index.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import and_, create_engine, event, func, or_, select, text, tuple_
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from shared.eventstore.models import Event, Gap, ObjectFace, Segment, TrackedObject
from shared.storage.media import BadKey, snapshot_key

log = logging.getLogger(__name__)
logging.getLogger("alembic").setLevel(logging.WARNING)  # no plugin chatter at every start

_MIGRATE_LOCK = threading.Lock()
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
TRACK_TYPES = ("object_entered", "object_left")
MAX_SEGMENT_MS = 130_000  # longer than any segment (recorder.segment_s <= 120)
STREAM_MARGIN_MS = 600_000  # how far an event's stream time may be from its ts (clock skew)
MAX_ID = 64


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def split_stream_id(stream_id: str) -> tuple[int, int]:
    ms, _, seq = str(stream_id).partition("-")
    return min(int(ms), 2**63 - 1), min(int(seq or 0), 2**63 - 1)


def object_id_for(rec: dict[str, Any]) -> str:
    """The tracked-object row a record belongs to.

    A track's events share camera, track id and first sighting, so its
    ``object_entered`` and ``object_left`` derive the same id in any order.  Other
    events (faces, analysis) are rows of their own."""
    if (
        rec.get("type") in TRACK_TYPES
        and rec.get("track_id") is not None
        and rec.get("first_seen") is not None
    ):
        raw = f"{rec.get('camera_id')}\x00{rec['track_id']}\x00{rec['first_seen']}"
        return "o" + hashlib.blake2b(raw.encode(), digest_size=15).hexdigest()
    return str(rec["event_id"])[:MAX_ID]


def _clean(v: Any) -> Any:
    """Drop NUL characters (PostgreSQL text refuses them) everywhere in a record."""
    if isinstance(v, str):
        return v.replace("\x00", "") if "\x00" in v else v
    if isinstance(v, dict):
        return {_clean(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


BIGINT = 2**63 - 1


def _int(v: Any) -> int | None:
    """An int that fits the database's BIGINT, else None."""
    try:
        x = int(v) if v is not None and not isinstance(v, bool) else None
    except (TypeError, ValueError, OverflowError):
        return None
    return x if x is None or -BIGINT <= x <= BIGINT else None


def _float(v: Any) -> float | None:
    try:
        return float(v) if v is not None and not isinstance(v, bool) else None
    except (TypeError, ValueError):
        return None


def _str(v: Any, n: int) -> str | None:
    return str(v)[:n] if isinstance(v, (str, int)) and not isinstance(v, bool) and str(v) else None


@dataclass
class EventQuery:
    camera_id: str | None = None
    type: str | None = None
    label: str | None = None
    since: int | None = None  # event ts (ms) >= since
    until: int | None = None
    has_clip: bool | None = None
    cursor: tuple[int, int] | None = None  # stream id: older than this
    limit: int = 50
    cameras: frozenset[str] | None = None  # scope: only these cameras (None = all)


class EventStore:
    """One per process; thread safe (a session per call)."""

    def __init__(self, url: str, *, migrate: bool = True, pool_timeout: float = 5.0) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 15}
            )

            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA busy_timeout=15000")
                cur.close()
        else:
            self.engine = create_engine(
                url,
                pool_pre_ping=True,
                pool_timeout=pool_timeout,
                connect_args={"connect_timeout": 5} if "postgresql" in url else {},
            )
        self.Session = sessionmaker(self.engine, expire_on_commit=False)
        self.rejected = 0  # records the database refused (skipped, counted)
        if migrate:
            self.migrate()

    # ------------------------------------------------------------------ schema
    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        from alembic import command
        from alembic.config import Config

        # Several processes (archiver, recorder, gateway) may open a new database at
        # once: PostgreSQL serialises on an advisory lock; SQLite on its write lock,
        # and a loser retries (the upgrade is then a no-op).
        with self.engine.connect():
            pass  # an unreachable database fails now, once, not ten times below
        for attempt in range(10):
            try:
                with _MIGRATE_LOCK, self.engine.begin() as conn:
                    if conn.dialect.name == "postgresql":
                        conn.execute(text("SELECT pg_advisory_xact_lock(724113)"))
                    cfg = Config()
                    cfg.set_main_option("script_location", str(MIGRATIONS))
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
                return
            except (OperationalError, IntegrityError, ProgrammingError):
                if attempt == 9:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def close(self) -> None:
        self.engine.dispose()

    # ----------------------------------------------------------------- archive
    def apply_events(self, entries: Sequence[dict[str, Any]]) -> int:
        """Upsert records read from the ``events`` stream (each with its stream ``id``).

        Returns how many events were new.  Already stored event ids are skipped, so
        calling it again with the same entries changes nothing.  Retries once when a
        concurrent archiver inserted the same rows first."""
        entries = [_clean(e) for e in entries]
        for attempt in range(3):
            try:
                with self.Session.begin() as s:
                    return self._apply(s, entries)
            except IntegrityError:
                if attempt == 2:
                    raise
            except (DataError, ValueError, TypeError, OverflowError):
                break  # a record the database refuses: find it, skip it, keep the rest
        new = 0
        for e in entries:
            try:
                with self.Session.begin() as s:
                    new += self._apply(s, [e])
            except (DataError, ValueError, TypeError, OverflowError) as exc:
                self.rejected += 1
                log.warning("event not storable; skipped",
                            extra={"event_id": str(e.get("event_id"))[:64], "error": str(exc)[:200]})  # fmt: skip
        return new

    def _apply(self, s: Session, entries: Sequence[dict[str, Any]]) -> int:
        recs = []
        for e in entries:
            rec = dict(e)
            sid = str(rec.get("id") or "0-0")
            try:
                rec["_stream"] = split_stream_id(sid)
            except ValueError:
                rec["_stream"] = (0, 0)
            eid = _str(rec.get("event_id"), MAX_ID) or f"s-{sid}"[:MAX_ID]
            rec["event_id"] = eid
            if not isinstance(rec.get("camera_id"), str) or not rec.get("camera_id"):
                rec["camera_id"] = "unknown"
            rec["camera_id"] = rec["camera_id"][:300]
            rec["type"] = _str(rec.get("type"), 64) or "unknown"
            recs.append(rec)
        ids = [r["event_id"] for r in recs]
        known = set(s.scalars(select(Event.event_id).where(Event.event_id.in_(ids))))
        new = 0
        objects: dict[str, TrackedObject] = {}
        for rec in recs:
            eid = rec["event_id"]
            if eid in known:
                continue
            known.add(eid)
            new += 1
            oid = object_id_for(rec)
            obj = objects.get(oid) or s.get(TrackedObject, oid)
            if obj is None:
                obj = self._new_object(oid, rec)
                s.add(obj)
            objects[oid] = obj
            self._merge(s, obj, rec)
            label = _str(rec.get("class") or rec.get("name"), 128)
            data = {k: v for k, v in rec.items() if not k.startswith("_") and k != "id"}
            s.add(
                Event(
                    event_id=eid,
                    object_id=oid,
                    type=rec["type"],
                    camera_id=rec["camera_id"],
                    label=label,
                    ts_ms=_int(rec.get("ts")) or rec["_stream"][0],
                    stream_ms=rec["_stream"][0],
                    stream_seq=rec["_stream"][1],
                    snapshot_id=_str(rec.get("snapshot_id"), 160),
                    data=data,
                )
            )
        return new

    @staticmethod
    def _new_object(oid: str, rec: dict[str, Any]) -> TrackedObject:
        ts = _int(rec.get("ts")) or rec["_stream"][0]
        kind = {"object_entered": "object", "object_left": "object"}.get(
            rec["type"], "face" if rec["type"] == "face_recognized" else rec["type"]
        )
        return TrackedObject(
            object_id=oid,
            camera_id=rec["camera_id"],
            kind=kind[:32],
            start_ms=_int(rec.get("first_seen")) or ts,
            end_ms=None if kind == "object" else ts,
            updated_ms=now_ms(),
        )

    def _merge(self, s: Session, obj: TrackedObject, rec: dict[str, Any]) -> None:
        t = rec["type"]
        ts = _int(rec.get("ts")) or rec["_stream"][0]
        obj.updated_ms = now_ms()
        first = _int(rec.get("first_seen"))
        if first is not None:
            obj.start_ms = min(obj.start_ms, first)
        if t in TRACK_TYPES:
            obj.label = _str(rec.get("class"), 128) or obj.label
            obj.track_id = _int(rec.get("track_id"))
            if t == "object_entered":
                obj.entered_event_id = rec["event_id"]
            else:
                obj.left_event_id = rec["event_id"]
                obj.reason = _str(rec.get("reason"), 32)
                end = _int(rec.get("last_seen")) or ts  # last sighting, not the close time
                obj.end_ms = end if obj.end_ms is None else max(obj.end_ms, end)
        elif t == "face_recognized":
            name = _str(rec.get("name"), 128)
            obj.label = name
            if name:
                self._attach_face(s, obj, rec["camera_id"], ts, name)
        elif t == "analysis":
            summary = rec.get("summary")
            if isinstance(summary, str):
                obj.summary = summary[:4000]
                self._attach_summary(s, obj, rec["camera_id"], ts, summary[:4000])
        conf = _float(rec.get("confidence"))
        sid = _str(rec.get("snapshot_id"), 160)
        if sid and (obj.confidence is None or conf is None or conf >= obj.confidence):
            obj.snapshot_id = sid
            try:
                obj.snapshot_key = snapshot_key(sid)
            except BadKey:
                obj.snapshot_key = None
            box = rec.get("box")
            if isinstance(box, list) and len(box) == 4:
                obj.box = [_float(v) for v in box]
            attrs = rec.get("attributes")
            if isinstance(attrs, dict):
                obj.attributes = attrs
        if conf is not None:
            obj.confidence = conf if obj.confidence is None else max(obj.confidence, conf)

    def _overlapping(self, s: Session, camera_id: str, ts: int) -> list[TrackedObject]:
        s.flush()
        return list(
            s.scalars(
                select(TrackedObject).where(
                    TrackedObject.camera_id == camera_id,
                    TrackedObject.kind == "object",
                    TrackedObject.start_ms <= ts,
                    or_(TrackedObject.end_ms.is_(None), TrackedObject.end_ms >= ts),
                    TrackedObject.start_ms >= ts - 24 * 3600 * 1000,
                )
            )
        )

    def _attach_face(self, s: Session, face: TrackedObject, cam: str, ts: int, name: str) -> None:
        for obj in self._overlapping(s, cam, ts):
            if obj.label == "person" and s.get(ObjectFace, (obj.object_id, name)) is None:
                s.add(ObjectFace(object_id=obj.object_id, name=name))
        if s.get(ObjectFace, (face.object_id, name)) is None:
            s.add(ObjectFace(object_id=face.object_id, name=name))

    def _attach_summary(self, s: Session, own: TrackedObject, cam: str, ts: int, text: str) -> None:
        for obj in self._overlapping(s, cam, ts):
            if not obj.summary:
                obj.summary = text

    # ------------------------------------------------------------------- reads
    def _clip_exists(self, pre_ms: int, post_ms: int):
        end = func.coalesce(TrackedObject.end_ms, TrackedObject.start_ms)
        return (
            select(Segment.id)
            .where(
                Segment.camera_id == TrackedObject.camera_id,
                Segment.start_ms < end + post_ms,
                Segment.end_ms > TrackedObject.start_ms - pre_ms,
                # Segments are short (recorder.segment_s <= 120 s): a bounded index range.
                Segment.start_ms > TrackedObject.start_ms - pre_ms - MAX_SEGMENT_MS,
            )
            .exists()
        )

    def list_events(
        self, q: EventQuery, *, pre_ms: int = 0, post_ms: int = 0
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Events newest first (by stream id), with their object's fields."""
        stmt = select(Event, TrackedObject, self._clip_exists(pre_ms, post_ms)).join(
            TrackedObject, TrackedObject.object_id == Event.object_id
        )
        conds = []
        if q.camera_id:
            conds.append(Event.camera_id == q.camera_id)
        if q.cameras is not None:
            conds.append(Event.camera_id.in_(sorted(q.cameras)))
        if q.type:
            conds.append(Event.type == q.type)
        if q.label:
            faces = select(ObjectFace.object_id).where(ObjectFace.name == q.label)
            conds.append(or_(Event.label == q.label, Event.object_id.in_(faces)))
        # A time window walks the stream-id index (already in the order we return)
        # instead of sorting every event of the window: an event reaches the stream
        # within STREAM_MARGIN_MS of its ts, and ``ts + 0`` keeps the planner off the
        # ts index.
        if q.since is not None:
            conds.append(Event.stream_ms >= q.since - STREAM_MARGIN_MS)
            conds.append(Event.ts_ms + 0 >= q.since)
        if q.until is not None:
            conds.append(Event.stream_ms <= q.until + STREAM_MARGIN_MS)
            conds.append(Event.ts_ms + 0 <= q.until)
        if q.cursor is not None:
            conds.append(tuple_(Event.stream_ms, Event.stream_seq) < tuple_(*q.cursor))
        if q.has_clip is not None:
            ex = self._clip_exists(pre_ms, post_ms)
            conds.append(ex if q.has_clip else ~ex)
        if conds:
            stmt = stmt.where(and_(*conds))
        stmt = stmt.order_by(Event.stream_ms.desc(), Event.stream_seq.desc()).limit(q.limit + 1)
        with self.Session() as s:
            rows = s.execute(stmt).all()
            faces = self._faces(s, [o.object_id for _, o, _c in rows])
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        out = [
            self.event_view(ev, obj, faces.get(obj.object_id, []), clip) for ev, obj, clip in rows
        ]
        cursor = f"{rows[-1][0].stream_ms}-{rows[-1][0].stream_seq}" if more and rows else None
        return out, cursor

    @staticmethod
    def _faces(s: Session, object_ids: Iterable[str]) -> dict[str, list[str]]:
        ids = sorted(set(object_ids))
        out: dict[str, list[str]] = {}
        if not ids:
            return out
        for oid, name in s.execute(
            select(ObjectFace.object_id, ObjectFace.name).where(ObjectFace.object_id.in_(ids))
        ):
            out.setdefault(oid, []).append(name)
        return out

    @staticmethod
    def event_view(
        ev: Event, obj: TrackedObject, faces: list[str], has_clip: bool | None = None
    ) -> dict[str, Any]:
        rec = dict(ev.data or {})
        rec["id"] = f"{ev.stream_ms}-{ev.stream_seq}"
        rec["event_id"] = ev.event_id
        rec["object"] = object_view(obj, faces)
        rec["object"]["has_clip"] = bool(has_clip) if has_clip is not None else None
        return rec

    def get_event(
        self, event_id: str, *, pre_ms: int = 0, post_ms: int = 0
    ) -> dict[str, Any] | None:
        with self.Session() as s:
            row = s.execute(
                select(Event, TrackedObject, self._clip_exists(pre_ms, post_ms))
                .join(TrackedObject, TrackedObject.object_id == Event.object_id)
                .where(Event.event_id == event_id[:MAX_ID])
            ).first()
            if row is None:
                return None
            faces = self._faces(s, [row[1].object_id])
        return self.event_view(row[0], row[1], faces.get(row[1].object_id, []), row[2])

    def event_camera_ids(self) -> list[str]:
        """Every camera with stored events (distinct, from the camera index)."""
        with self.Session() as s:
            return sorted(s.scalars(select(TrackedObject.camera_id).distinct()))

    def camera_of_snapshot(self, snapshot_id: str) -> str | None:
        """The camera of the event that references ``snapshot_id`` (None if none)."""
        with self.Session() as s:
            return s.scalar(
                select(Event.camera_id).where(Event.snapshot_id == snapshot_id[:160]).limit(1)
            )

    def newest_stream_id(self) -> tuple[int, int] | None:
        """Stream id of the newest stored event (the archiver's progress), None if empty."""
        with self.Session() as s:
            row = s.execute(
                select(Event.stream_ms, Event.stream_seq)
                .order_by(Event.stream_ms.desc(), Event.stream_seq.desc())
                .limit(1)
            ).first()
        return (int(row[0]), int(row[1])) if row else None

    def count_events(self) -> int:
        with self.Session() as s:
            return int(s.scalar(select(func.count()).select_from(Event)) or 0)

    # -------------------------------------------------------------- recordings
    def add_segment(
        self, camera_id: str, start_ms: int, end_ms: int, key: str, size: int, frames: int,
        mode: str, event_footage: bool = False,
    ) -> None:  # fmt: skip
        with self.Session.begin() as s:
            if s.scalar(select(Segment.id).where(Segment.key == key)) is None:
                s.add(
                    Segment(
                        camera_id=camera_id, start_ms=start_ms, end_ms=end_ms, key=key,
                        bytes=size, frames=frames, mode=mode, event=event_footage,
                    )
                )  # fmt: skip

    def add_gap(self, camera_id: str, start_ms: int, end_ms: int, reason: str) -> None:
        if end_ms <= start_ms:
            return
        with self.Session.begin() as s:
            s.add(Gap(camera_id=camera_id, start_ms=start_ms, end_ms=end_ms, reason=reason[:64]))

    def segments(
        self, camera_id: str, since: int, until: int, limit: int = 10_000
    ) -> list[dict[str, Any]]:
        with self.Session() as s:
            rows = s.scalars(
                select(Segment)
                .where(
                    Segment.camera_id == camera_id,
                    Segment.end_ms > since,
                    Segment.start_ms < until,
                    Segment.start_ms > since - 3_600_000,  # segments are short: use the index
                )
                .order_by(Segment.start_ms)
                .limit(limit)
            ).all()
        return [segment_view(r) for r in rows]

    def gaps(self, camera_id: str, since: int, until: int, limit: int = 10_000) -> list[dict]:
        with self.Session() as s:
            rows = s.scalars(
                select(Gap)
                .where(Gap.camera_id == camera_id, Gap.end_ms > since, Gap.start_ms < until)
                .order_by(Gap.start_ms)
                .limit(limit)
            ).all()
        return [{"start": g.start_ms, "end": g.end_ms, "reason": g.reason} for g in rows]

    def recording_cameras(self) -> list[str]:
        with self.Session() as s:
            return sorted(s.scalars(select(Segment.camera_id).distinct()))

    def storage_by_camera(self) -> dict[str, dict[str, Any]]:
        with self.Session() as s:
            rows = s.execute(
                select(
                    Segment.camera_id,
                    func.count(),
                    func.sum(Segment.bytes),
                    func.min(Segment.start_ms),
                    func.max(Segment.end_ms),
                ).group_by(Segment.camera_id)
            ).all()
        return {
            cam: {"segments": int(n), "bytes": int(b or 0), "oldest": lo, "newest": hi}
            for cam, n, b, lo, hi in rows
        }


def segment_view(r: Segment) -> dict[str, Any]:
    return {
        "start": r.start_ms,
        "end": r.end_ms,
        "key": r.key,
        "bytes": r.bytes,
        "frames": r.frames,
        "mode": r.mode,
        "event": r.event,
    }


def object_view(obj: TrackedObject, faces: list[str]) -> dict[str, Any]:
    return {
        "object_id": obj.object_id,
        "kind": obj.kind,
        "camera_id": obj.camera_id,
        "label": obj.label,
        "track_id": obj.track_id,
        "start": obj.start_ms,
        "end": obj.end_ms,
        "running": obj.kind == "object" and obj.end_ms is None,
        "confidence": obj.confidence,
        "snapshot_id": obj.snapshot_id,
        "box": obj.box,
        "attributes": obj.attributes,
        "faces": sorted(faces),
        "summary": obj.summary,
    }


# ---------------------------------------------------------------- retention helpers
def oldest_segments(store: EventStore, *, event_footage: bool, limit: int) -> list[Segment]:
    with store.Session() as s:
        return list(
            s.scalars(
                select(Segment)
                .where(Segment.event.is_(event_footage))
                .order_by(Segment.start_ms)
                .limit(limit)
            )
        )


def expired_segments(store: EventStore, camera_id: str, before_ms: int, *, event_footage: bool,
                     limit: int) -> list[Segment]:  # fmt: skip
    with store.Session() as s:
        return list(
            s.scalars(
                select(Segment)
                .where(
                    Segment.camera_id == camera_id,
                    Segment.end_ms < before_ms,
                    Segment.event.is_(event_footage),
                )
                .order_by(Segment.start_ms)
                .limit(limit)
            )
        )


def delete_segment_rows(store: EventStore, ids: list[int]) -> None:
    from sqlalchemy import delete

    if ids:
        with store.Session.begin() as s:
            s.execute(delete(Segment).where(Segment.id.in_(ids)))


def segment_bytes(store: EventStore) -> int:
    with store.Session() as s:
        return int(s.scalar(select(func.coalesce(func.sum(Segment.bytes), 0))) or 0)


def event_cameras(store: EventStore) -> list[str]:
    with store.Session() as s:
        return sorted(s.scalars(select(TrackedObject.camera_id).distinct()))


def expired_objects(
    store: EventStore, camera_id: str, before_ms: int, limit: int
) -> list[TrackedObject]:
    with store.Session() as s:
        return list(
            s.scalars(
                select(TrackedObject)
                .where(
                    TrackedObject.camera_id == camera_id,
                    func.coalesce(TrackedObject.end_ms, TrackedObject.start_ms) < before_ms,
                )
                .order_by(TrackedObject.start_ms)
                .limit(limit)
            )
        )


def delete_objects(store: EventStore, object_ids: list[str]) -> None:
    from sqlalchemy import delete

    if object_ids:
        with store.Session.begin() as s:
            s.execute(delete(Event).where(Event.object_id.in_(object_ids)))
            s.execute(delete(ObjectFace).where(ObjectFace.object_id.in_(object_ids)))
            s.execute(delete(TrackedObject).where(TrackedObject.object_id.in_(object_ids)))


def snapshot_keys_of(store: EventStore, object_ids: list[str]) -> list[tuple[str, str]]:
    """(camera_id, snapshot_id) of every event of these objects (each a stored snapshot)."""
    with store.Session() as s:
        rows = s.execute(
            select(Event.camera_id, Event.snapshot_id)
            .where(Event.object_id.in_(object_ids), Event.snapshot_id.is_not(None))
            .distinct()
        ).all()
    return [(c, sid) for c, sid in rows]
