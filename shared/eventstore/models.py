"""Event store tables (SQLAlchemy 2).  Times are unix milliseconds (BIGINT).

* ``tracked_objects``: one row per tracked object (its ``object_entered`` and
  ``object_left`` merge into it), per recognised face and per analysis.
* ``events``: one row per event that appeared on the ``events`` stream (primary key
  ``event_id``: a redelivery never makes a duplicate), pointing at its object.
* ``object_faces``: names recognised on a tracked object.
* ``segments`` / ``gaps``: the recorder's index of footage and of missing footage.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Float, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class TrackedObject(Base):
    __tablename__ = "tracked_objects"

    object_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(32))  # object | face | analysis | <event type>
    label: Mapped[str | None] = mapped_column(String(128), nullable=True)
    track_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    start_ms: Mapped[int] = mapped_column(BigInteger)
    end_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    snapshot_id: Mapped[str | None] = mapped_column(String(160), nullable=True)
    snapshot_key: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    box: Mapped[list | None] = mapped_column(JSON, nullable=True)
    attributes: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    entered_event_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    left_event_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    updated_ms: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_objects_camera_start", "camera_id", "start_ms"),
        Index("ix_objects_start", "start_ms"),
    )


class ObjectFace(Base):
    __tablename__ = "object_faces"

    object_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)

    __table_args__ = (Index("ix_object_faces_name", "name"),)


class Event(Base):
    __tablename__ = "events"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    object_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(64))
    camera_id: Mapped[str] = mapped_column(String(300))
    label: Mapped[str | None] = mapped_column(String(128), nullable=True)
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    stream_ms: Mapped[int] = mapped_column(BigInteger)
    stream_seq: Mapped[int] = mapped_column(BigInteger)
    snapshot_id: Mapped[str | None] = mapped_column(String(160), nullable=True)
    data: Mapped[dict] = mapped_column(JSON)

    __table_args__ = (
        Index("ix_events_stream", "stream_ms", "stream_seq"),
        Index("ix_events_camera_stream", "camera_id", "stream_ms", "stream_seq"),
        Index("ix_events_type_stream", "type", "stream_ms", "stream_seq"),
        Index("ix_events_label_stream", "label", "stream_ms", "stream_seq"),
        Index("ix_events_ts", "ts_ms"),
        Index("ix_events_object", "object_id"),
        Index("ix_events_snapshot", "snapshot_id"),
    )


class Segment(Base):
    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    camera_id: Mapped[str] = mapped_column(String(300))
    start_ms: Mapped[int] = mapped_column(BigInteger)
    end_ms: Mapped[int] = mapped_column(BigInteger)
    key: Mapped[str] = mapped_column(String(1024), unique=True)
    bytes: Mapped[int] = mapped_column(BigInteger)
    frames: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(16))  # continuous | events
    event: Mapped[bool] = mapped_column(Boolean, default=False)  # overlaps an event

    __table_args__ = (
        Index("ix_segments_camera_start", "camera_id", "start_ms"),
        Index("ix_segments_start", "start_ms"),
    )


class Gap(Base):
    __tablename__ = "gaps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    camera_id: Mapped[str] = mapped_column(String(300))
    start_ms: Mapped[int] = mapped_column(BigInteger)
    end_ms: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_gaps_camera_start", "camera_id", "start_ms"),)
