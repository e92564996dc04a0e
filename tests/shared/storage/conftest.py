"""The same media-store suite runs on the filesystem and on a real SeaweedFS S3."""

from __future__ import annotations

import pytest

from shared.storage import FsMediaStore, S3MediaStore


@pytest.fixture(params=["fs", "s3"])
def media(request, tmp_path):
    if request.param == "fs":
        store = FsMediaStore(tmp_path / "media")
    else:
        server = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        prefix = request.getfixturevalue("s3_prefix")
        store = S3MediaStore(
            bucket, endpoint=server.endpoint, prefix=prefix, access_key="any", secret_key="any"
        )
    yield store
    store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path) -> str:
    """The same event-store suite on SQLite (WAL) and on a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(db_url):
    from shared.eventstore import EventStore

    s = EventStore(db_url)
    yield s
    s.close()
