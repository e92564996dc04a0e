"""Media store behaviour, identical on the filesystem and on real SeaweedFS S3."""

from __future__ import annotations

import os

import pytest

from shared.storage import (
    BadKey,
    FsMediaStore,
    MediaNotFound,
    camera_of_key,
    check_key,
    safe_component,
    segment_key,
    snapshot_key,
)


def test_put_get_range_size_delete(media):
    key = snapshot_key("abc123")
    data = bytes(range(256)) * 40
    assert media.put(key, data, "image/jpeg") == len(data)
    assert media.get(key) == data
    assert media.size(key) == len(data)
    assert media.get_range(key, 10, 19) == data[10:20]
    # A range past the end is clipped, like HTTP.
    assert media.get_range(key, len(data) - 5, len(data) + 100) == data[-5:]
    assert media.delete(key) is True
    assert media.delete(key) is False
    assert media.size(key) is None
    with pytest.raises(MediaNotFound):
        media.get(key)
    with pytest.raises(MediaNotFound):
        media.get_range(key, 0, 1)


def test_overwrite_is_whole(media):
    key = "snapshots/x/y.jpg"
    media.put(key, b"a" * 100)
    media.put(key, b"b" * 10)
    assert media.get(key) == b"b" * 10


def test_list_and_usage_by_prefix(media):
    k1 = segment_key("cam/a", 1_700_000_000_000, 1_700_000_010_000)
    k2 = segment_key("cam/a", 1_700_000_010_000, 1_700_000_020_000)
    k3 = segment_key("cam/b", 1_700_000_000_000, 1_700_000_010_000)
    for k, n in ((k1, 100), (k2, 200), (k3, 50)):
        media.put(k, b"x" * n)
    media.put(snapshot_key("s1"), b"j" * 7)
    a = sorted(o.key for o in media.list("recordings/" + safe_component("cam/a") + "/"))
    assert a == sorted([k1, k2])
    assert media.usage("recordings/") == 350
    assert media.usage() == 357
    assert {camera_of_key(o.key) for o in media.list("recordings/")} == {"cam/a", "cam/b"}
    assert media.usage("recordings/nothing-here/") == 0


@pytest.mark.parametrize(
    "evil",
    ["..", "../etc", "/etc/passwd", "a/../../etc", "%2e%2e", "..%2F..%2Fetc", "a\\..\\b",
     "\x00", "C:\\Windows", "a/./b", "//server/share"],
)  # fmt: skip
def test_ids_never_leave_the_root(media, tmp_path, evil):
    # Ids are escaped into one harmless component: nothing lands outside the root.
    seg = segment_key(evil, 1_700_000_000_000, 1_700_000_010_000)
    for key in (snapshot_key(evil), seg):
        check_key(key)
        assert all(p not in (".", "..", "") for p in key.split("/"))
        media.put(key, b"data")
        assert media.get(key) == b"data"
        if isinstance(media, FsMediaStore):
            assert media.root in media.path(key).parents
    assert camera_of_key(seg) == evil
    if isinstance(media, FsMediaStore):
        outside = [f for f in tmp_path.rglob("*") if media.root not in f.parents and f.is_file()]
        assert outside == []


@pytest.mark.parametrize(
    "key",
    ["../x", "/abs/path", "a/../../b", "a//b", "", ".", "a/./b", "a/b/", "a\\b", "a\x00b",
     "snapshots/../../../etc/passwd"],
)  # fmt: skip
def test_raw_bad_keys_are_refused(media, key):
    with pytest.raises(BadKey):
        media.put(key, b"x")
    with pytest.raises(BadKey):
        media.get(key)
    with pytest.raises(BadKey):
        media.delete(key)


def test_distinct_ids_distinct_keys():
    assert safe_component("a/b") != safe_component("a%2Fb")
    assert safe_component("a.b") != safe_component("a_b")
    with pytest.raises(BadKey):
        safe_component("")


def test_fs_symlink_out_of_root_refused(tmp_path):
    store = FsMediaStore(tmp_path / "media")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, store.root / "snapshots")
    with pytest.raises(BadKey):
        store.put("snapshots/x.jpg", b"x")
    assert list(outside.iterdir()) == []


def test_s3_outage_fails_fast(s3_server, s3_bucket):
    from shared.redisutil import free_port
    from shared.storage import MediaUnavailable, S3MediaStore

    dead = S3MediaStore(
        s3_bucket, endpoint=f"http://127.0.0.1:{free_port()}", timeout_s=1, create_bucket=False
    )
    with pytest.raises(MediaUnavailable):
        dead.put("snapshots/a/b.jpg", b"x")
