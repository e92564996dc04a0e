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
