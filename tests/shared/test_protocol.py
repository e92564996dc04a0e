"""Wire protocol: round trips and fuzzing of every decoder of network input."""

from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.protocol import (
    AGENT_TO_INGEST,
    INGEST_TO_AGENT,
    FrameHeader,
    ProtocolError,
    clamp_motion,
    decode_control,
    decode_fanout,
    decode_frame,
    encode_control,
    encode_fanout,
    encode_frame,
    jpeg_dimensions,
    pack_header,
    parse_header,
    topic_for,
)
from tests.helpers import encode_jpeg

NAMES = st.text(
    alphabet=st.characters(whitelist_categories=("Ll", "Lu", "Nd"), whitelist_characters="-_."),
    min_size=1,
    max_size=40,
)


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    rng = np.random.default_rng(1)
    return encode_jpeg(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    client=NAMES,
    cam=NAMES,
    seq=st.integers(0, 2**63 - 1),
    ts=st.integers(0, 2**63 - 1),
    motion=st.one_of(st.none(), st.floats(0, 1)),
)
def test_frame_round_trip(jpeg: bytes, client: str, cam: str, seq: int, ts: int, motion) -> None:
    h = FrameHeader(
        client_id=client, camera_id=f"{client}/{cam}", seq=seq, ts=ts, w=64, h=48, motion=motion
    )
    got, data = decode_frame(encode_frame(h, jpeg))
    assert got == h and data == jpeg
    got2, data2 = decode_fanout(encode_fanout(h.camera_id, pack_header(h), jpeg))
    assert got2 == h and data2 == jpeg


@settings(max_examples=300)
@given(st.binary(max_size=2048))
def test_random_bytes_are_refused_with_protocol_error(data: bytes) -> None:
    for decoder in (
        lambda: parse_header(data),
        lambda: decode_frame([data, data]),
        lambda: decode_fanout([b"x\x00", data, data]),
        lambda: decode_control(data, expect=AGENT_TO_INGEST),
        lambda: decode_control(data, expect=INGEST_TO_AGENT),
        lambda: jpeg_dimensions(data),
    ):
        with pytest.raises(ProtocolError):  # refused, and nothing but ProtocolError
            decoder()


msgpack_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(),
        st.text(max_size=20),
        st.binary(max_size=20),
    ),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
header_keys = st.sampled_from(
    [
        "v",
        "client_id",
        "camera_id",
        "seq",
        "ts",
        "w",
        "h",
        "enc",
        "motion",
        "type",
        "cameras",
        "camera",
        "stats",
        "quality",
        "fps",
    ]
)


@settings(max_examples=300)
@given(st.dictionaries(header_keys, msgpack_values, max_size=10))
def test_random_maps_are_refused_with_protocol_error(d: dict) -> None:
    data = msgpack.packb(d, use_bin_type=True)
    required = {"v", "client_id", "camera_id", "seq", "ts", "w", "h", "enc"}
    checks = [(lambda: parse_header(data), not required <= set(d))]
    for expect in (AGENT_TO_INGEST, INGEST_TO_AGENT):
        plausible = d.get("v") == 1 and isinstance(d.get("type"), str) and d["type"] in expect
        checks.append((lambda expect=expect: decode_control(data, expect=expect), not plausible))
    for decoder, must_refuse in checks:
        try:
            decoder()
        except ProtocolError:
            continue
        # Only a map that has what a valid message needs may get through.
        assert not must_refuse, f"accepted {d!r}"


def _header(**over) -> bytes:
    d = {
        "v": 1,
        "client_id": "c",
        "camera_id": "c/cam",
        "seq": 1,
        "ts": time.time_ns(),
        "w": 64,
        "h": 48,
        "enc": "jpeg",
    }
    d.update(over)
    return msgpack.packb(d)


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"v": 2}, "bad_version"),
        ({"seq": "1"}, "header_bad_type"),
        ({"w": True}, "header_bad_type"),
        ({"camera_id": "other/cam"}, "bad_camera_id"),
        ({"camera_id": "cx/cam"}, "bad_camera_id"),  # client "c" may not name "cx/..."
        ({"camera_id": "c"}, "bad_camera_id"),
        ({"camera_id": "c/"}, "bad_camera_id"),
        ({"w": 8193, "h": 48}, "bad_value"),  # above the protocol's largest side
        ({"enc": "png"}, "bad_encoding"),
        ({"w": 0}, "bad_value"),
        ({"motion": float("nan")}, "bad_value"),
        ({"motion": float("inf")}, "bad_value"),
        ({"motion": "0.5"}, "header_bad_type"),
    ],
)
def test_bad_headers_rejected_with_reason(jpeg: bytes, over: dict, reason: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        decode_frame([_header(**over), jpeg])
    assert exc.value.reason == reason


@pytest.mark.parametrize("motion", [3.0, -0.5, 1e300, 7])
def test_motion_outside_unit_range_is_kept_for_ingest_to_clamp(jpeg: bytes, motion) -> None:
    header, _ = decode_frame([_header(motion=motion), jpeg])
    assert header.motion == float(motion)
    assert clamp_motion(header.motion) == (min(1.0, max(0.0, float(motion))), True)
    assert clamp_motion(0.25) == (0.25, False)
    assert clamp_motion(None) == (None, False)


def test_missing_field_and_multipart_shape(jpeg: bytes) -> None:
    d = msgpack.unpackb(_header())
    del d["ts"]
    with pytest.raises(ProtocolError, match="header_missing_field"):
        decode_frame([msgpack.packb(d), jpeg])
    with pytest.raises(ProtocolError, match="bad_multipart"):
        decode_frame([_header()])


def test_oversize_and_broken_jpeg(jpeg: bytes) -> None:
    with pytest.raises(ProtocolError, match="payload_too_large"):
        decode_frame([_header(), jpeg], max_jpeg_bytes=len(jpeg) - 1)
    with pytest.raises(ProtocolError, match="bad_jpeg"):
        decode_frame([_header(), jpeg[: len(jpeg) // 2]])
    with pytest.raises(ProtocolError, match="bad_jpeg"):
        decode_frame([_header(w=640, h=480), jpeg])  # header lies about the size
    with pytest.raises(ProtocolError, match="header_too_large"):
        parse_header(b"\x00" * 10_000)


def test_max_dimension_is_configurable(jpeg: bytes) -> None:
    with pytest.raises(ProtocolError, match="bad_value"):
        decode_frame([_header(), jpeg], max_dimension=32)
    assert decode_frame([_header(), jpeg], max_dimension=64)[0].w == 64


def test_the_jpeg_marker_walk_is_bounded(jpeg: bytes) -> None:
    """A crafted frame of fill bytes / tiny segments before the SOF is refused after a
    bounded walk (it used to be walked byte by byte: ~0.5 s for 8 MiB)."""
    i = jpeg.index(b"\xff\xc0")
    fill = jpeg[:2] + b"\xff" * 100_000 + jpeg[2:]
    with pytest.raises(ProtocolError, match="no SOF within the first markers"):
        jpeg_dimensions(fill)
    com = b"\xff\xfe\x00\x02"  # empty COM segments, 4 bytes each
    many = jpeg[:i] + com * 1000 + jpeg[i:]
    with pytest.raises(ProtocolError, match="no SOF within the first markers"):
        jpeg_dimensions(many)
    # A realistic header (a handful of segments, a few fill bytes) is fine.
    assert jpeg_dimensions(jpeg[:i] + com * 20 + b"\xff" * 5 + jpeg[i:]) == (64, 48)


def test_topics_never_prefix_match() -> None:
    assert not topic_for("c/cam10").startswith(topic_for("c/cam1"))


def test_control_round_trip_and_validation() -> None:
    msg = decode_control(
        encode_control(
            "register",
            client_id="host1",
            hostname="h",
            cameras=[
                {
                    "name": "cam0",
                    "width": 640,
                    "height": 480,
                    "fps": 30.0,
                    "kind": "usb",
                    "extra": 1,
                }
            ],
        ),
        expect=AGENT_TO_INGEST,
    )
    assert msg["cameras"] == [
        {"name": "cam0", "kind": "usb", "width": 640, "height": 480, "fps": 30.0}
    ]
    with pytest.raises(ProtocolError, match="control_unknown_type"):
        decode_control(encode_control("start_streaming"), expect=AGENT_TO_INGEST)
    with pytest.raises(ProtocolError, match="control_bad_value"):
        decode_control(
            encode_control("update_streaming_settings", quality=500), expect=INGEST_TO_AGENT
        )
    with pytest.raises(ProtocolError, match="duplicate"):
        decode_control(
            encode_control("register", client_id="h", cameras=[{"name": "a"}, {"name": "a"}]),
            expect=AGENT_TO_INGEST,
        )
    upd = decode_control(
        encode_control("update_streaming_settings", camera="cam0", fps=5), expect=INGEST_TO_AGENT
    )
    assert upd == {"type": "update_streaming_settings", "camera": "cam0", "quality": None, "fps": 5}


def test_header_to_dict_carries_every_field_and_omits_only_unset_optionals() -> None:
    """to_dict is spelled out for speed: a field added to FrameHeader must not be
    silently left off the wire."""
    import dataclasses

    full = FrameHeader("edge1", "edge1/cam", 7, 123, 640, 480, motion=0.5, rx=456)
    assert full.to_dict() == dataclasses.asdict(full)
    assert parse_header(pack_header(full)) == full
    bare = FrameHeader("edge1", "edge1/cam", 7, 123, 640, 480)
    assert set(bare.to_dict()) == {f.name for f in dataclasses.fields(bare)} - {"motion", "rx"}
    assert parse_header(pack_header(bare)) == bare
