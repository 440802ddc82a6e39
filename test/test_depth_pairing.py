"""Colour frames paired with depth images (pose_ros.depth_pairing), on the caller's clock: each
colour frame leaves exactly once, in arrival order, with its partner or without one and why; zero
and repeated stamps are paired too (the node and the recordings path share this)."""

from __future__ import annotations

import pytest

from pose_ros.depth_pairing import DepthPairing


def _keys(out) -> list[tuple[str, str | None]]:
    return [(paired.colour, paired.depth) for paired in out]


def test_pairs_within_the_slop_in_either_order_and_never_twice() -> None:
    pairing: DepthPairing[str, str] = DepthPairing(0.03, wait_sec=0.2, silent_sec=0.6)
    out = pairing.add_colour("c10", 10.0, now=0.00)
    assert out == []  # waits for its partner
    out += pairing.add_depth("d10", 10.01, now=0.01)  # within the slop: a pair
    out += pairing.add_depth("d11", 11.0, now=0.02)
    out += pairing.add_colour("c11", 11.0, now=0.03)  # depth first, then colour: a pair too
    out += pairing.add_colour("c12", 12.0, now=0.04)
    out += pairing.add_depth("d12.5", 12.5, now=0.05)  # too far: c12 cannot pair any more
    out += pairing.add_depth("d12", 12.0, now=0.06)  # a late partner: no second delivery
    assert _keys(out) == [("c10", "d10"), ("c11", "d11"), ("c12", None)]
    assert "not synchronised" in out[2].why and "slop" in out[2].why
    assert out[0].arrival == 0.0 and out[2].arrival == 0.04  # the colour frames' arrival
    assert (pairing.pairs, pairing.unpaired) == (2, 1)


def test_waits_at_most_wait_sec_and_not_at_all_while_depth_is_silent() -> None:
    pairing: DepthPairing[str, str] = DepthPairing(0.03, wait_sec=0.2, silent_sec=0.6)
    assert pairing.add_depth("d0", 1.0, now=0.0) == []
    assert pairing.add_colour("c20", 20.0, now=0.1) == []
    assert pairing.expire(now=0.25) == []  # 0.15 s waited: still hoping
    (late,) = pairing.expire(now=0.31)
    assert (late.colour, late.depth) == ("c20", None) and "within 0.2 s" in late.why
    # the depth stream silent for longer than silent_sec: frames go on at once
    (now_out,) = pairing.add_colour("c30", 30.0, now=0.7)
    assert now_out.depth is None and "no depth image on depth for" in now_out.why
    # depth is back: frames wait for their partner again
    pairing.add_depth("d31", 31.0, now=0.8)
    assert pairing.add_colour("c31.5", 31.5, now=0.81) == []
    (paired,) = pairing.add_depth("d31.5", 31.5, now=0.82)
    assert (paired.colour, paired.depth) == ("c31.5", "d31.5")


def test_no_depth_ever_says_how_to_remap() -> None:
    pairing: DepthPairing[str, str] = DepthPairing(0.03, depth_topic="/cam/depth", start=0.0)
    assert pairing.add_colour("c", 5.0, now=1.0) == []
    (out,) = pairing.expire(now=3.5)
    assert "no depth image has arrived on /cam/depth" in out.why and "remapped" in out.why


def test_zero_stamps_pair_by_arrival_time() -> None:
    """Colour and depth stamped 0 (unset): every frame is paired with the depth image that arrived
    with it, by arrival time within the slop; a frame whose depth image was lost goes on without,
    and never takes the next frame's."""
    pairing: DepthPairing[int, int] = DepthPairing(0.03, wait_sec=1.0)
    out = []
    for index in range(10):
        now = index * 1.0  # one frame a second
        if index != 3:  # frame 3's depth image is lost
            out += pairing.add_depth(index, 0.0, now=now + 0.005)
        out += pairing.add_colour(index, 0.0, now=now + 0.010)
    assert _keys(out) == [(i, None if i == 3 else i) for i in range(10)]


def test_repeated_stamps_each_get_a_depth_image_of_their_own() -> None:
    pairing: DepthPairing[str, str] = DepthPairing(0.03)
    out = []
    for index in range(4):
        now = index * 0.1
        out += pairing.add_colour(f"c{index}", 7.0, now=now)  # every frame stamped 7.0
        out += pairing.add_depth(f"d{index}", 7.0, now=now + 0.01)
    assert _keys(out) == [(f"c{i}", f"d{i}") for i in range(4)]


def test_frames_leave_in_arrival_order_and_flush_ends_a_recording() -> None:
    pairing: DepthPairing[str, str] = DepthPairing(0.03, wait_sec=10.0, silent_sec=100.0)
    out = pairing.add_colour("c1", 2.0, now=0.0)  # waits for a depth image near 2.0
    out += pairing.add_colour("c2", 2.5, now=0.1)  # waits behind c1
    # the depth image of c2 arrives: c1's partner can no longer come (depth arrives in stamp
    # order), so c1 leaves first, without depth, then c2 with its partner
    out += pairing.add_depth("d2.5", 2.5, now=0.15)
    assert _keys(out) == [("c1", None), ("c2", "d2.5")]
    assert pairing.add_colour("c3", 3.0, now=0.3) == []
    (flushed,) = pairing.flush("the recording ended")
    assert (flushed.colour, flushed.why) == ("c3", "the recording ended")
    assert pairing.waiting == 0


def test_refuses_a_slop_that_pairs_nothing() -> None:
    with pytest.raises(ValueError, match="slop_sec must be positive"):
        DepthPairing(0.0)
