"""The audio sink: feeds whole PCM16 frames into the AudioWorklet ring (js/audio-player.js).

``write`` resolves only when the ring has taken every sample of the chunk, so the ring's
fullness is the backpressure of the audio channel: a slow (or throttled) playback stalls
the demux, which stops reading the socket.

Barge-in (``request_interrupt``, then ``finish_interrupt``): the worklet drops what was queued
at the request at its next render quantum and reports its read counter at the cut; with the
write counter at which each item started, that gives each item's exact playback position in
samples actually rendered (not wall-clock time; see pyclient/playback.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any

from ..errors import UsageError
from ..events import AudioChunk
from ..playback import PlaybackPosition, int32_diff, positions_at_cut
from .jsutil import bytes_to_js, import_module, js_object

DEFAULT_RING_CAPACITY = 1 << 16  # samples (2.7 s at 24 kHz, 128 KiB)
DEFAULT_PREBUFFER_MS = 100.0
AUDIO_MODES = ("auto", "sab", "postmessage")
MAX_REMEMBERED_ITEMS = 16
MAX_REMEMBERED_CUTS = 32
MAX_INTERRUPTED_ITEMS = 256  # item ids whose late frames are discarded (the most recent ones)


def resolve_mode(mode: str) -> str:
    """``auto`` becomes ``sab`` where SharedArrayBuffer works, else ``postmessage``."""
    if mode not in AUDIO_MODES:
        raise UsageError(f"audio mode must be one of {', '.join(AUDIO_MODES)}, got {mode!r}")
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
        context_rate: str = "stream",
    ) -> None:
        if context_rate not in ("stream", "device"):
            raise UsageError(f"context_rate must be 'stream' or 'device', got {context_rate!r}")
        self.context_rate = context_rate
        self.assets_url = assets_url
        self.mode = resolve_mode(mode)
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
        self.speed = 1.0
        self.interrupted_items: dict[int, None] = {}  # an ordered set, bounded
        self.current_item: int | None = None
        self._item_starts: deque[tuple[int, int]] = deque(maxlen=MAX_REMEMBERED_ITEMS)
        self._mark: tuple[Any, int] | None = None  # (player, write index) at the last resume point
        self._deferred: asyncio.Future | None = None  # the last flush that keeps a head
        self.cuts: deque[dict[str, Any]] = deque(maxlen=MAX_REMEMBERED_CUTS)
        self._played_before = 0  # samples played by players already closed (rate changes)
        self._checksum_before = 0  # their running checksum, continued by the live player
        # Called when playback waits on an AudioContext that is not running (Safari starts
        # one suspended until a user gesture resumes it): the page must show a control.
        self.on_suspended: Any = None
        self._running_seen = False  # of the current player's context
        self._suspended_reported = False

    async def _start(self, rate: int) -> None:
        if self._module is None:
            self._module = await import_module(self.assets_url + "audio-player.js")
        if self.player is not None:
            # A new rate between turns: let the old ring play out, then switch contexts. A
            # context still waiting for the user's gesture keeps its audio: ask, and wait.
            while self.player.fill() > 0 and str(self.player.ctx.state) in ("running", "suspended"):
                if not self._running_seen:
                    self._check_running(self.player, force=True)
                await self.player.waitForSpace(self.capacity)
            old = self.player.stats()
            self._checksum_before = self._continue_checksum(int(old.checksum), int(old.samples_played))
            self._played_before += int(old.samples_played)
            await self.player.close()
            self.rate_changes += 1
            self._item_starts.clear()
        opts = js_object(
            streamRate=rate,
            capacity=self.capacity,
            mode=self.mode,
            prebufferMs=self.prebuffer_ms,
            contextRate=self.context_rate,
        )
        self.player = await self._module.createPlayer(opts)
        self._running_seen = self._suspended_reported = False
        self.player.setSpeed(self.speed)
        self.rate = rate

    @property
    def context_state(self) -> str | None:
        """``suspended``, ``running`` or ``closed`` (None: no AudioContext yet)."""
        return str(self.player.ctx.state) if self.player is not None else None

    def resume(self) -> Any:
        """Start a suspended AudioContext; returns its ``resume()`` promise (None: no context
        yet). Browsers that require a user gesture (Safari, on every platform) allow it only
        from one: call this synchronously from a click handler."""
        return self.player.ctx.resume() if self.player is not None else None

    async def write(self, chunk: AudioChunk) -> None:
        rest = self.write_now(chunk)
        if rest is not None:
            await rest

    def write_now(self, chunk: AudioChunk) -> Coroutine[Any, Any, None] | None:
        """Write what the ring takes now (no asyncio hop); returns a coroutine that writes
        the rest once there is room (or starts playback first), or None when all is done."""
        self.frames_received += 1
        if chunk.item_id in self.interrupted_items:
            self.samples_discarded += chunk.samples  # late frames of an interrupted item
            return None
        if self.error is None and (self.player is None or chunk.sample_rate != self.rate):
            return self._start_then_write(chunk)
        return self._write_from(chunk, 0)

    async def _start_then_write(self, chunk: AudioChunk) -> None:
        try:
            await self._start(chunk.sample_rate)
        except Exception as exc:  # no AudioContext / worklet here: report, keep the stream going
            self.error = f"audio unavailable: {exc}"
        rest = self._write_from(chunk, 0)
        if rest is not None:
            await rest

    def _write_from(self, chunk: AudioChunk, off: int) -> Coroutine[Any, Any, None] | None:
        if self.error is not None:
            self.samples_discarded += chunk.samples
            return None
        pcm = chunk.pcm
        if isinstance(pcm, (bytes, bytearray, memoryview)):
            pcm = bytes_to_js(pcm)  # decoded from base64 JSON: one copy into JS, never per sample
        player, total = self.player, chunk.samples
        if chunk.item_id != self.current_item:
            self.current_item = chunk.item_id
            self._item_starts.append((chunk.item_id, int(player.writeIndex())))
        if not player.closed:
            off += player.write(pcm, off)
        if off < total and not player.closed:
            return self._write_rest(chunk, pcm, off)
        self._written(chunk)
        return None

    async def _write_rest(self, chunk: AudioChunk, pcm: Any, off: int) -> None:
        player, total = self.player, chunk.samples
        while off < total and not player.closed:
            if not self._running_seen:  # a full ring that nothing drains: say so first
                self._check_running(player, force=True)
            t0 = time.monotonic()
            await player.waitForSpace(total - off)
            self.wait_s += time.monotonic() - t0
            off += player.write(pcm, off)
        self._written(chunk)

    def _written(self, chunk: AudioChunk) -> None:
        self.samples_received += chunk.samples
        if chunk.final:
            self.player.endItem()
        if not self._running_seen:
            self._check_running(self.player)

    def _check_running(self, player: Any, force: bool = False) -> None:
        """Until this context is seen running (then never again: two FFI reads per chunk until
        then): once the prebuffer is full (or ``force``: the ring is full, or must play out
        before a rate change), a context still ``suspended`` will not play until the page
        resumes it from a user gesture (Safari); ``on_suspended`` says so, once per context."""
        state = player.ctx.state
        if state == "running":
            self._running_seen = True
        elif (
            state == "suspended"
            and not self._suspended_reported
            and self.on_suspended is not None
            and (force or player.fill() >= self.prebuffer_ms * self.rate / 1000)
        ):
            self._suspended_reported = True
            self.on_suspended()

    def set_speed(self, factor: float) -> None:
        """Consume at ``factor`` x real time (0 < factor <= 1): simulates a slow device."""
        if not 0 < factor <= 1:
            raise UsageError(f"playback speed must be in (0, 1], got {factor}")
        self.speed = factor
        if self.player is not None:
            self.player.setSpeed(factor)

    def mark(self) -> None:
        """A resume point: ``request_interrupt(keep_marked=True)`` keeps what was written
        before it (the finished turns play on; only the turn after it is taken back)."""
        self._mark = (self.player, int(self.player.writeIndex())) if self.player is not None else None

    def request_interrupt(self, item_id: int | None = None, reason: str = "client", keep_marked: bool = False) -> Any:
        """Flush what is queued now (synchronously, in stream order); returns a pending cut
        for ``finish_interrupt``. Late frames of the interrupted item (``item_id``, or the
        current one) are discarded from here on; frames of later items still play.
        ``keep_marked``: what was written before the last ``mark()`` plays first and is kept."""
        target = item_id if item_id is not None else self.current_item
        if target is not None:
            self.interrupted_items[target] = None
            while len(self.interrupted_items) > MAX_INTERRUPTED_ITEMS:
                del self.interrupted_items[next(iter(self.interrupted_items))]
        if self.player is None:
            return None
        keep_before = None
        if keep_marked and self._mark is not None and self._mark[0] is self.player:
            keep_before = self._mark[1]
        starts = list(self._item_starts)
        if keep_before is None:
            self._item_starts.clear()
        else:  # the items before the mark still play: a later cut reports on them
            kept = [(item, start) for item, start in starts if int32_diff(keep_before, start) > 0]
            starts = starts[len(kept) :]
            self._item_starts.clear()
            self._item_starts.extend(kept)
        if not starts and self.player.fill() == 0:
            return None  # nothing queued and no item to report on: no round trip to the worklet
        if keep_before is None:
            return (self.player.flush(), starts, reason)
        # A flush that keeps a head waits in the worklet until playback gets there; one asked
        # for meanwhile (a second loss) goes after it, or it would replace it (the ring holds
        # one pending flush) and the first cut turn would play.
        before = self._deferred
        if before is None or before.done():
            flush = asyncio.ensure_future(_settled(self.player.flush(keep_before)))
        else:  # up to what is written now, not what will be written when it goes
            flush = asyncio.ensure_future(self._flush_after(before, keep_before, int(self.player.writeIndex())))
        self._deferred = flush
        return (flush, starts, reason)

    async def _flush_after(self, before: asyncio.Future, keep_before: int, up_to: int) -> Any:
        with contextlib.suppress(Exception):
            await before
        return await self.player.flush(keep_before, up_to)

    def is_interrupted(self, item_id: int | None) -> bool:
        """Whether ``item_id`` (None: the current item) was already cut."""
        target = item_id if item_id is not None else self.current_item
        return target is not None and target in self.interrupted_items

    async def finish_interrupt(self, pending: Any) -> list[PlaybackPosition]:
        """Wait for the worklet to apply the cut; one playback position per item it cut."""
        if pending is None:
            return []
        promise, starts, reason = pending
        cut = (await promise).to_py()
        positions = positions_at_cut(starts, int(cut["cut_read"]), int(cut["flush_to"]), self.rate, reason)
        reports = [p.as_dict() for p in positions]
        self.cuts.append(
            {
                "reason": reason,
                "items": reports,
                "acked": cut["acked"],
                "queued_samples": cut["queued"],
                "cut_frame": cut["cut_frame"],
                "latency_wall_ms": round(cut["latency_wall_ms"], 3),
                "output_latency_ms": round(cut["output_latency_ms"], 3),
                "wake": cut["wake"],
                "tail_frames": cut["tail_frames"],
            }
        )
        return positions

    def _continue_checksum(self, live: int, live_samples: int) -> int:
        """The checksum over everything played, across players (see ring-layout.js)."""
        return (self._checksum_before * pow(31, live_samples, 1 << 32) + live) % (1 << 32)

    def stats(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "mode": self.mode,
            "sample_rate": self.rate,
            "ring_capacity": self.capacity,
            "ring_fill": 0,
            "frames_received": self.frames_received,
            "samples_received": self.samples_received,
            "samples_played": self._played_before,
            "checksum": self._checksum_before,
            "samples_discarded": self.samples_discarded,
            "underruns": 0,
            "silence_ms": 0.0,
            "buffered_ms": 0.0,
            "write_wait_s": round(self.wait_s, 4),
            "rate_changes": self.rate_changes,
            "prebuffer_ms": self.prebuffer_ms,
            "cuts": list(self.cuts),
            "error": self.error,
            "context_state": None,
            "context_rate": None,
        }
        if self.player is not None:
            live = self.player.stats().to_py()
            live["checksum"] = self._continue_checksum(int(live["checksum"]), int(live["samples_played"]))
            live["samples_played"] = int(live["samples_played"]) + self._played_before
            base.update(live)
            base["ring_capacity"] = self.capacity
        return base

    async def close(self) -> None:
        if self.player is not None:
            await self.player.close()


async def _settled(promise: Any) -> Any:
    """A JS promise as an awaitable a Task can hold."""
    return await promise
