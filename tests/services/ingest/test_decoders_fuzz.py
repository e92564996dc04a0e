"""Property tests: the decoders ingest relies on only ever raise ProtocolError."""

from __future__ import annotations

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.protocol import (
    AGENT_TO_INGEST,
    INGEST_TO_AGENT,
    ProtocolError,
    decode_control,
    decode_frame,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40), st.binary(max_size=40),
)  # fmt: skip
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(
        st.text(max_size=8),
        st.one_of(scalars, st.dictionaries(st.text(max_size=8), scalars, max_size=3)),
        max_size=3,
    ),
)
HEADER_KEYS = ["v", "client_id", "camera_id", "seq", "ts", "w", "h", "enc", "motion"]
CONTROL_KEYS = ["v", "type", "client_id", "cameras", "camera", "stats", "quality", "fps",
                "reason", "hostname", "name", "streaming"]  # fmt: skip
CONTROL_TYPES = sorted(AGENT_TO_INGEST | INGEST_TO_AGENT) + ["", "nope"]


def maps(keys: list[str]) -> st.SearchStrategy[dict]:
    """Mostly known keys with arbitrary values, so validation gets past the first check."""
    return st.dictionaries(
        st.one_of(st.sampled_from(keys), st.text(max_size=8)), values, max_size=10
    )


def packable(d: object) -> bytes:
    return msgpack.packb(d, use_bin_type=True)


def check(fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except ProtocolError as exc:
        assert exc.reason and isinstance(exc.reason, str)


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=4))
def test_decode_frame_random_parts(parts: list[bytes]) -> None:
    check(decode_frame, parts)


@FUZZ
@given(maps(HEADER_KEYS), st.binary(max_size=400))
def test_decode_frame_random_header_maps(header: dict, jpeg: bytes) -> None:
    header.setdefault("v", 1)
    jpeg = b"\xff\xd8" + jpeg + b"\xff\xd9"  # get past the SOI/EOI checks sometimes
    check(decode_frame, [packable(header), jpeg])


@FUZZ
@given(st.binary(max_size=600))
def test_decode_control_random_bytes(data: bytes) -> None:
    check(decode_control, data, expect=AGENT_TO_INGEST)
    check(decode_control, data, expect=INGEST_TO_AGENT)


@FUZZ
@given(maps(CONTROL_KEYS), st.sampled_from(CONTROL_TYPES))
def test_decode_control_random_maps(msg: dict, msg_type: str) -> None:
    msg.setdefault("v", 1)
    msg.setdefault("type", msg_type)
    data = packable(msg)
    check(decode_control, data, expect=AGENT_TO_INGEST)
    check(decode_control, data, expect=INGEST_TO_AGENT)
