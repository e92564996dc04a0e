"""Initial event store: tracked objects, events, faces, segments, gaps.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tracked_objects",
        sa.Column("object_id", sa.String(64), primary_key=True),
        sa.Column("camera_id", sa.String(300), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("label", sa.String(128), nullable=True),
        sa.Column("track_id", sa.BigInteger, nullable=True),
        sa.Column("start_ms", sa.BigInteger, nullable=False),
        sa.Column("end_ms", sa.BigInteger, nullable=True),
        sa.Column("confidence", sa.Float, nullable=True),
        sa.Column("snapshot_id", sa.String(160), nullable=True),
        sa.Column("snapshot_key", sa.String(1024), nullable=True),
        sa.Column("box", sa.JSON, nullable=True),
        sa.Column("attributes", sa.JSON, nullable=True),
        sa.Column("summary", sa.Text, nullable=True),
        sa.Column("entered_event_id", sa.String(64), nullable=True),
        sa.Column("left_event_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_objects_camera_start", "tracked_objects", ["camera_id", "start_ms"])
    op.create_index("ix_objects_start", "tracked_objects", ["start_ms"])
    op.create_table(
        "object_faces",
        sa.Column("object_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
    )
    op.create_index("ix_object_faces_name", "object_faces", ["name"])
    op.create_table(
        "events",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("object_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("camera_id", sa.String(300), nullable=False),
        sa.Column("label", sa.String(128), nullable=True),
        sa.Column("ts_ms", sa.BigInteger, nullable=False),
        sa.Column("stream_ms", sa.BigInteger, nullable=False),
        sa.Column("stream_seq", sa.BigInteger, nullable=False),
        sa.Column("snapshot_id", sa.String(160), nullable=True),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_index("ix_events_stream", "events", ["stream_ms", "stream_seq"])
    op.create_index("ix_events_camera_stream", "events", ["camera_id", "stream_ms", "stream_seq"])
    op.create_index("ix_events_type_stream", "events", ["type", "stream_ms", "stream_seq"])
    op.create_index("ix_events_label_stream", "events", ["label", "stream_ms", "stream_seq"])
    op.create_index("ix_events_ts", "events", ["ts_ms"])
    op.create_index("ix_events_object", "events", ["object_id"])
    op.create_index("ix_events_snapshot", "events", ["snapshot_id"])
    op.create_table(
        "segments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("camera_id", sa.String(300), nullable=False),
        sa.Column("start_ms", sa.BigInteger, nullable=False),
        sa.Column("end_ms", sa.BigInteger, nullable=False),
        sa.Column("key", sa.String(1024), nullable=False, unique=True),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("frames", sa.Integer, nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("event", sa.Boolean, nullable=False),
    )
    op.create_index("ix_segments_camera_start", "segments", ["camera_id", "start_ms"])
    op.create_index("ix_segments_start", "segments", ["start_ms"])
    op.create_table(
        "gaps",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("camera_id", sa.String(300), nullable=False),
        sa.Column("start_ms", sa.BigInteger, nullable=False),
        sa.Column("end_ms", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
    )
    op.create_index("ix_gaps_camera_start", "gaps", ["camera_id", "start_ms"])


def downgrade() -> None:
    for table in ("gaps", "segments", "events", "object_faces", "tracked_objects"):
        op.drop_table(table)
