"""Playback positions at a cut (barge-in), sans-I/O.

The audio ring counts samples with free-running int32 counters (pyclient/browser/js/
ring-layout.js). The producer remembers the write counter at which each item started; at a cut
the worklet reports its read counter (exactly the samples rendered so far) and the write
counter up to which it dropped. From those three numbers this module tells, per item, how many
of its samples the listener actually heard.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


def int32_diff(a: int, b: int) -> int:
    """``a - b`` for free-running int32 counters that wrap at 2**32."""
    d = (a - b) & 0xFFFFFFFF
    return d - (1 << 32) if d >= 1 << 31 else d


@dataclass(frozen=True)
class PlaybackPosition:
    """Where playback of one audio item stood at a cut (a ``playback_position`` frame)."""

    item_id: int
    played_samples: int
    played_ms: float
    sample_rate: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def positions_at_cut(
    starts: list[tuple[int, int]], cut_read: int, flush_to: int, sample_rate: int, reason: str
) -> list[PlaybackPosition]:
    """One position per item that was still queued or playing when the cut was requested.

    ``starts`` are ``(item_id, write counter at the item's first sample)`` in write order.
    Items that had finished playing before the cut are left out; items queued behind the
    playing one report 0 samples played; items written after the request are not concerned.
    """
    out = []
    for i, (item, start) in enumerate(starts):
        if int32_diff(flush_to, start) <= 0:
            break  # nothing of this item was queued at the request
        if i + 1 < len(starts) and int32_diff(cut_read, starts[i + 1][1]) >= 0:
            continue  # this item had finished playing before the cut
        played = max(0, int32_diff(cut_read, start))
        out.append(PlaybackPosition(item, played, round(played * 1000 / sample_rate, 3), sample_rate, reason))
    return out
