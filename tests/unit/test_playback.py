"""Playback positions at a cut, including counters that wrapped around 2**32."""

from __future__ import annotations

import pytest

from pyclient.playback import PlaybackPosition, int32_diff, positions_at_cut

WRAP = 2**31 - 100  # int32 counters near the wrap: start + 200 overflows


def s32(n: int) -> int:
    """The int32 value JS would hold for ``n``."""
    n &= 0xFFFFFFFF
    return n - 2**32 if n >= 2**31 else n


def test_int32_diff_wraps() -> None:
    assert int32_diff(5, 3) == 2
    assert int32_diff(s32(WRAP + 200), WRAP) == 200
    assert int32_diff(WRAP, s32(WRAP + 200)) == -200


@pytest.mark.parametrize("base", [0, 1000, WRAP])
def test_cut_inside_the_first_item(base: int) -> None:
    starts = [(1, s32(base)), (2, s32(base + 480))]
    got = positions_at_cut(starts, s32(base + 240), s32(base + 960), 24000, "client")
    assert got == [
        PlaybackPosition(1, 240, 10.0, 24000, "client"),
        PlaybackPosition(2, 0, 0.0, 24000, "client"),  # queued behind, never heard
    ]


@pytest.mark.parametrize("base", [0, WRAP])
def test_finished_items_are_left_out_and_later_items_untouched(base: int) -> None:
    starts = [(1, s32(base)), (2, s32(base + 480)), (3, s32(base + 960))]
    # Playing item 2 at the cut; item 3 was written after the request (flush_to).
    got = positions_at_cut(starts, s32(base + 700), s32(base + 960), 16000, "server")
    assert got == [PlaybackPosition(2, 220, 13.75, 16000, "server")]


def test_nothing_queued() -> None:
    assert positions_at_cut([(1, 500)], 500, 500, 24000, "client") == []
