"""The one fan-out subscriber (worker runtime and gateway live view) on real sockets."""

from __future__ import annotations

import numpy as np
import zmq

from shared.fanout import FanoutSubscriber
from shared.protocol import encode_fanout
from tests.helpers import FramePublisher, wait_for

IMG = np.full((48, 64, 3), 120, np.uint8)


def test_follows_cameras_counts_garbage_and_hands_out_views(port_factory):
    ctx = zmq.Context.instance()
    pub = FramePublisher(ctx, port_factory())
    invalid: list[str] = []
    sub = FanoutSubscriber(ctx, pub.endpoint, on_invalid=lambda e: invalid.append(e.reason))
    try:
        assert sub.follow(["c/a"]) and not sub.follow(["c/a"])

        def got_a():
            pub.publish("c/b", IMG)  # not followed: filtered at the publisher
            pub.publish("c/a", IMG)
            sub.poll(50)
            return [h for h, _ in sub.drain()]

        headers = wait_for(got_a, 10, what="frames of c/a")
        assert {h.camera_id for h in headers} == {"c/a"}
        # Garbage on a followed topic: reported, skipped, the next frame still arrives.
        pub.sock.send_multipart(encode_fanout("c/a", b"\xc1garbage", b"jpeg"))
        pub.sock.send_multipart([b"c/a\x00", b"x"])
        pub.publish("c/a", IMG)
        out = []
        wait_for(lambda: sub.poll(50) and out.extend(sub.drain()) or out, 10, what="good frame")
        assert "header_undecodable" in invalid and "bad_multipart" in invalid
        header, jpeg = out[-1]
        assert isinstance(jpeg, memoryview), "the JPEG is not copied out of the message"
        assert bytes(jpeg[:2]) == b"\xff\xd8" and header.w == 64
        assert sub.follow([]) and sub.subscribed == frozenset()
    finally:
        sub.close()
        pub.close()
