"""Sentri's event store: the durable history (SQLAlchemy 2 + Alembic).

SQLite in WAL mode under the state dir by default, PostgreSQL through
``storage.database_url``.  See :mod:`shared.eventstore.store`.
"""

from shared.eventstore.store import EventQuery, EventStore, object_id_for, split_stream_id

__all__ = ["EventQuery", "EventStore", "object_id_for", "split_stream_id"]
