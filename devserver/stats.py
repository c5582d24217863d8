"""Per-connection accounting of the simulated AI server, exposed at ``GET /stats``."""

from __future__ import annotations

import array
import functools
import hashlib
import itertools
import operator
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

TIMELINE_POINTS = 2_000  # bounded: one point per TIMELINE_STEP_S at most
TIMELINE_STEP_S = 0.1
RECENT_CONNECTIONS = 64


MOD32 = 1 << 32


@functools.lru_cache(maxsize=8)
def _powers(n: int) -> tuple[tuple[int, ...], int]:
    """31**(n-1-i) mod 2**32 for i in 0..n-1, and 31**n mod 2**32."""
    return tuple(pow(31, n - 1 - i, MOD32) for i in range(n)), pow(31, n, MOD32)


def pcm_checksum(previous: int, pcm: bytes) -> int:
    """Continue the running checksum of pyclient/browser/js/ring-layout.js over PCM16LE bytes:
    ``sum = (sum * 31 + (sample & 0xffff)) mod 2**32`` for every sample in order."""
    samples = array.array("H", pcm)
    if sys.byteorder == "big":
        samples.byteswap()
    weights, shift = _powers(len(samples))
    return (previous * shift + sum(map(operator.mul, samples, weights))) % MOD32


@dataclass
class ConnectionStats:
    id: int
    scenario: str
    params: dict[str, str]
    subprotocol: str | None
    started: float = field(default_factory=time.time)
    ended: float | None = None
    close_code: int | None = None
    bytes_sent: int = 0
    frames_sent: int = 0
    send_wait_s: float = 0.0
    bytes_received: int = 0
    frames_received: int = 0
    malformed_received: int = 0
    tool_calls_sent: int = 0
    tool_results: list[dict[str, Any]] = field(default_factory=list)
    text_frames_sent: int = 0
    text_bytes_sent: int = 0
    audio_frames_sent: int = 0
    audio_samples_sent: int = 0
    audio_checksum: int = 0
    credit_granted: int = 0
    credit_waits: int = 0
    credit_wait_s: float = 0.0
    client_hello: dict[str, Any] | None = None
    controls_received: list[dict[str, Any]] = field(default_factory=list)
    mic_samples_received: int = 0
    mic_frames_received: int = 0
    mic_rates: set[int] = field(default_factory=set)
    playback_positions: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dropped: bool = False  # the server aborted the connection on purpose (drop_after)
    _text_sha: Any = field(default_factory=hashlib.sha256, repr=False)
    _audio_sha: Any = field(default_factory=hashlib.sha256, repr=False)
    _mic_sha: Any = field(default_factory=hashlib.sha256, repr=False)
    _timeline: deque = field(default_factory=lambda: deque(maxlen=TIMELINE_POINTS), repr=False)
    _last_point: float = 0.0
    send_blocked_since: float | None = None  # monotonic time a send began waiting, if it is
    credit_blocked_since: float | None = None

    def _live(self, total: float, since: float | None) -> float:
        """A wait total including the wait in progress right now."""
        return total + (time.monotonic() - since if since is not None else 0.0)

    def on_text(self, data: bytes) -> None:
        self.text_frames_sent += 1
        self.text_bytes_sent += len(data)
        self._text_sha.update(data)

    def on_audio(self, pcm: bytes) -> None:
        self.audio_frames_sent += 1
        self.audio_samples_sent += len(pcm) // 2
        self.audio_checksum = pcm_checksum(self.audio_checksum, pcm)
        self._audio_sha.update(pcm)

    def on_mic(self, samples: int, rate: int, pcm: bytes) -> None:
        self.mic_frames_received += 1
        self.mic_samples_received += samples
        self.mic_rates.add(rate)
        self._mic_sha.update(pcm)

    def on_sent(self, nbytes: int, waited: float) -> None:
        self.bytes_sent += nbytes
        self.frames_sent += 1
        self.send_wait_s += waited
        now = time.monotonic()
        if now - self._last_point >= TIMELINE_STEP_S:
            self.sample(now)

    def sample(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._last_point = now
        self._timeline.append(
            (
                round(time.time() - self.started, 3),
                self.bytes_sent,
                round(
                    self._live(self.send_wait_s, self.send_blocked_since)
                    + self._live(self.credit_wait_s, self.credit_blocked_since),
                    4,
                ),
            )
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scenario": self.scenario,
            "params": self.params,
            "subprotocol": self.subprotocol,
            "started": self.started,
            "ended": self.ended,
            "open": self.ended is None,
            "close_code": self.close_code,
            "bytes_sent": self.bytes_sent,
            "frames_sent": self.frames_sent,
            "send_wait_s": round(self._live(self.send_wait_s, self.send_blocked_since), 4),
            "bytes_received": self.bytes_received,
            "frames_received": self.frames_received,
            "malformed_received": self.malformed_received,
            "tool_calls_sent": self.tool_calls_sent,
            "tool_results_received": len(self.tool_results),
            "tool_results": self.tool_results,
            "text_frames_sent": self.text_frames_sent,
            "text_bytes_sent": self.text_bytes_sent,
            "text_sha256": self._text_sha.hexdigest(),
            "audio_frames_sent": self.audio_frames_sent,
            "audio_samples_sent": self.audio_samples_sent,
            "audio_sha256": self._audio_sha.hexdigest(),
            "audio_checksum": self.audio_checksum,
            "credit_granted": self.credit_granted,
            "credit_waits": self.credit_waits,
            "credit_wait_s": round(self._live(self.credit_wait_s, self.credit_blocked_since), 4),
            "client_hello": self.client_hello,
            "controls_received": self.controls_received[-50:],
            "mic_samples_received": self.mic_samples_received,
            "mic_frames_received": self.mic_frames_received,
            "mic_rates": sorted(self.mic_rates),
            "mic_sha256": self._mic_sha.hexdigest(),
            "playback_positions": self.playback_positions[-50:],
            "errors": self.errors[-20:],
            "dropped": self.dropped,
            "timeline": list(self._timeline),
        }


class StatsRegistry:
    """Current connections plus the most recent closed ones (bounded)."""

    def __init__(self, keep: int = RECENT_CONNECTIONS) -> None:
        self._ids = itertools.count(1)
        self._recent: deque[ConnectionStats] = deque(maxlen=keep)

    def open(self, scenario: str, params: dict[str, str], subprotocol: str | None) -> ConnectionStats:
        st = ConnectionStats(next(self._ids), scenario, params, subprotocol)
        self._recent.append(st)
        return st

    def get(self, conn_id: int) -> ConnectionStats | None:
        return next((c for c in self._recent if c.id == conn_id), None)

    def as_dict(self) -> dict[str, Any]:
        return {"connections": [c.as_dict() for c in self._recent]}
