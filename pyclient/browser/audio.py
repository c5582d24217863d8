"""The audio sink: feeds whole PCM16 frames into the AudioWorklet ring (js/audio-player.js).

``write`` resolves only when the ring has taken every sample of the chunk, so the ring's
fullness is the backpressure of the audio channel: a slow (or throttled) playback stalls
the demux, which stops reading the socket.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import UsageError
from ..events import AudioChunk
from .jsutil import import_module, js_object

DEFAULT_RING_CAPACITY = 1 << 16  # samples (2.7 s at 24 kHz, 128 KiB)
DEFAULT_PREBUFFER_MS = 80.0
AUDIO_MODES = ("auto", "sab", "postmessage")


def resolve_mode(mode: str) -> str:
    """``auto`` becomes ``sab`` where SharedArrayBuffer works, else ``postmessage``."""
    if mode != "auto":
        return mode
    import js

    isolated = bool(getattr(js, "crossOriginIsolated", False))
    return "sab" if isolated and hasattr(js, "SharedArrayBuffer") else "postmessage"


class AudioSink:
    def __init__(
        self,
        assets_url: str,
        mode: str = "auto",
        capacity: int = DEFAULT_RING_CAPACITY,
        prebuffer_ms: float = DEFAULT_PREBUFFER_MS,
    ) -> None:
        self.assets_url = assets_url
        self.mode = mode
        self.capacity = capacity
        self.prebuffer_ms = prebuffer_ms
        self._module: Any = None
        self.player: Any = None
        self.rate = 0
        self.frames_received = 0
        self.samples_received = 0
        self.wait_s = 0.0
        self.error: str | None = None
        self.samples_discarded = 0
        self.rate_changes = 0
        self.interrupted_items: set[int] = set()
        self.current_item: int | None = None
        self._played_before = 0  # samples played by players already closed (rate changes)
        self.speed = 1.0

    async def _start(self, rate: int) -> None:
        if self._module is None:
            self._module = await import_module(self.assets_url + "audio-player.js")
        if self.player is not None:
            # A new rate between turns: let the old ring play out, then switch contexts.
            while self.player.fill() > 0 and self.player.stats().context_state == "running":
                await self.player.waitForSpace(self.capacity)
            self._played_before += int(self.player.stats().samples_played)
            await self.player.close()
            self.rate_changes += 1
        opts = js_object(streamRate=rate, capacity=self.capacity, mode=self.mode, prebufferMs=self.prebuffer_ms)
        self.player = await self._module.createPlayer(opts)
        self.player.setSpeed(self.speed)
        self.rate = rate

    async def write(self, chunk: AudioChunk) -> None:
        self.frames_received += 1
        if chunk.item_id in self.interrupted_items:
            self.samples_discarded += chunk.samples  # late frames of an interrupted item
            return
        if self.error is None and (self.player is None or chunk.sample_rate != self.rate):
            try:
                await self._start(chunk.sample_rate)
            except Exception as exc:  # no AudioContext / worklet here: report, keep the stream going
                self.error = f"audio unavailable: {exc}"
        if self.error is not None:
            self.samples_discarded += chunk.samples
            return
        self.current_item = chunk.item_id
        player, total, off = self.player, chunk.samples, 0
        while off < total and not player.closed:
            off += player.write(chunk.pcm, off)
            if off < total:
                t0 = time.monotonic()
                await player.waitForSpace(total - off)
                self.wait_s += time.monotonic() - t0
        self.samples_received += total
        if chunk.final:
            player.endItem()

    def set_speed(self, factor: float) -> None:
        """Consume at ``factor`` x real time (0 < factor <= 1): simulates a slow device."""
        if not 0 < factor <= 1:
            raise UsageError(f"playback speed must be in (0, 1], got {factor}")
        self.speed = factor
        if self.player is not None:
            self.player.setSpeed(factor)

    def flush(self, item_id: int | None = None) -> int:
        """Drop queued audio now (barge-in); late frames of ``item_id`` are discarded too."""
        if item_id is not None:
            self.interrupted_items.add(item_id)
        elif self.current_item is not None:
            self.interrupted_items.add(self.current_item)
        if self.player is None:
            return 0
        return int(self.player.flush())

    def stats(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "mode": resolve_mode(self.mode),
            "sample_rate": self.rate,
            "ring_capacity": self.capacity,
            "ring_fill": 0,
            "frames_received": self.frames_received,
            "samples_received": self.samples_received,
            "samples_played": self._played_before,
            "samples_discarded": self.samples_discarded,
            "underruns": 0,
            "write_wait_s": round(self.wait_s, 4),
            "rate_changes": self.rate_changes,
            "error": self.error,
        }
        if self.player is not None:
            live = self.player.stats().to_py()
            live["samples_played"] = int(live["samples_played"]) + self._played_before
            base.update(live)
            base["ring_capacity"] = self.capacity
        return base

    async def close(self) -> None:
        if self.player is not None:
            await self.player.close()
