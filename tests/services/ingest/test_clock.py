"""ClockOffsets: min over a window of (receive - capture), following a clock step."""

from __future__ import annotations

from services.ingest.clock import ClockOffsets

S = 10**9
MS = 10**6


def test_offset_is_the_fastest_frame_and_follows_a_corrected_clock() -> None:
    clocks = ClockOffsets(window_s=10)
    rx = 1_000 * S
    # An agent 1 h fast; transit 20-200 ms: the estimate is offset + the least transit.
    for i, transit_ms in enumerate((200, 20, 90, 150)):
        t = rx + i * S // 10
        clocks.observe("a", t, t + 3600 * S - transit_ms * MS)
    assert abs(clocks.offset_s("a") - (-3600 + 0.02)) < 1e-9
    # NTP corrects the agent's clock: the old (smaller) minimum ages out within one
    # window, so the estimate follows instead of sticking at -1 h forever.
    t = rx
    while t < rx + 11 * S:
        t += S // 10
        clocks.observe("a", t, t - 50 * MS)
    assert abs(clocks.offset_s("a") - 0.05) < 1e-9
    assert clocks.offset_s("unknown") is None
    assert set(clocks.snapshot()) == {"a"}
    clocks.forget("a")
    assert clocks.snapshot() == {}
