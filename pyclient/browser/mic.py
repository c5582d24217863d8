"""Microphone uplink: capture worklet -> PCM16 20 ms frames at the server's rate -> the protocol's audio messages.

Frames wait in a bounded queue (``max_queued_frames``, default 1 s of audio) for the sender,
whose sends wait on the transport (WebSocketStream writer readiness / ``bufferedAmount``
watermarks). If the link stays slower than the microphone, the oldest frames are dropped and
counted: live audio that arrives too late is worth less than fresh audio.

The device is released on every ending: ``stop()`` (what was captured is sent, then
``input_audio_end``) and ``abort()`` (the connection is gone: nothing more is sent). The client
calls one of them whenever its connection ends, however it ends.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import js
from pyodide.ffi import JsException

from ..errors import PyclientError, TransportError, UsageError
from ..protocols.base import Codec, Message
from .jsutil import ProxyOwner, import_module

DEFAULT_FRAME_MS = 20
DEFAULT_MAX_QUEUED_FRAMES = 50

Send = Callable[[Callable[[], list[Message]]], Awaitable[int]]


class MicUplink:
    def __init__(
        self,
        send: Send,
        assets_url: str,
        codec: Codec,
        frame_ms: int = DEFAULT_FRAME_MS,
        max_queued_frames: int = DEFAULT_MAX_QUEUED_FRAMES,
        survives_loss: Callable[[], bool] | None = None,
    ) -> None:
        """``survives_loss()``: whether a send that failed because the socket was lost is
        followed by a new socket (the client reconnects): the frame is counted lost, capture
        goes on; otherwise the microphone stops with an error."""
        self._send = send
        self._codec = codec
        self.survives_loss = survives_loss or (lambda: False)
        self.assets_url = assets_url
        self.frame_ms = frame_ms
        self.max_queued_frames = max_queued_frames
        self._owner = ProxyOwner()
        self._handle: Any = None
        self._queue: deque[bytes] = deque()
        self._arrived = asyncio.Event()
        self._sender: asyncio.Task | None = None
        self.active = False
        self.item_id = 0
        self.sample_rate = 0
        self.captured_samples = 0
        self.sent_samples = 0
        self.sent_frames = 0
        self.dropped_frames = 0
        self.dropped_samples = 0
        self.error: str | None = None
        self.track_state = "none"  # "live" while capturing, "ended" once released
        self.paused = False  # the connection is being re-established: captured audio is not kept
        self.paused_samples = 0  # captured while paused (dropped: nobody could hear them live)
        self.lost_samples = 0  # in a send the lost socket failed (the session went on on a new one)
        self.lost_reason: str | None = None
        self.device_rate = 0

    async def start(self, target_rate: int | None = None) -> None:
        """Capture at the device's rate, delivered at ``target_rate`` (the server's; the
        capture worklet resamples), or at the device's rate when None."""
        if self.active:
            raise UsageError("the microphone is already on")
        module = await import_module(self.assets_url + "microphone.js")
        try:
            on_frame = self._owner.proxy(self._on_frame)
            self._handle = await module.startMicrophone(on_frame, self.frame_ms, target_rate or 0)
        except Exception as exc:
            self._owner.close()  # the frame callback's proxy: nobody will call it now
            self.error = f"microphone unavailable: {exc}"
            raise
        self.track_state = str(self._handle.trackState())
        self.sample_rate = int(self._handle.sampleRate)
        self.device_rate = int(self._handle.deviceRate)
        self.item_id += 1
        self.active = True
        self.error = None
        self._sender = asyncio.ensure_future(self._send_loop())

    def _on_frame(self, samples: Any) -> None:
        if self.paused:
            n = int(samples.length)
            self.captured_samples += n
            self.paused_samples += n
            return
        pcm = js.Uint8Array.new(samples.buffer, samples.byteOffset, samples.byteLength).to_bytes()
        self.captured_samples += len(pcm) // 2
        if len(self._queue) >= self.max_queued_frames:
            dropped = self._queue.popleft()
            self.dropped_frames += 1
            self.dropped_samples += len(dropped) // 2
        self._queue.append(pcm)
        self._arrived.set()

    async def _send_loop(self) -> None:
        while self.active or self._queue:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            pcm = self._queue.popleft()
            try:
                await self._send(
                    lambda pcm=pcm, rate=self.sample_rate, item=self.item_id: self._codec.audio(pcm, rate, item)
                )
            except Exception as exc:  # (anything: a dead sender would leave the queue to fill)
                lost = isinstance(exc, (TransportError, JsException)) or not isinstance(exc, PyclientError)
                if lost and self.survives_loss():  # lost mid-send; the session goes on
                    self.lost_samples += len(pcm) // 2
                    self.lost_reason = f"{type(exc).__name__}: {exc}"[:200]
                    continue
                # the socket went away for good: the client aborts the mic
                self.error = f"microphone audio not sent: {exc}"
                self.dropped_frames += 1 + len(self._queue)
                self._queue.clear()
                return
            self.sent_frames += 1
            self.sent_samples += len(pcm) // 2

    async def stop(self) -> dict[str, Any]:
        """Stop capturing, send what was captured, then ``input_audio_end``."""
        if not self.active:
            return {}
        try:
            await self._handle.stop()  # delivers the last partial frame first
        finally:
            self._release()
        self._arrived.set()
        if self._sender is not None:
            await self._sender
        end = {"item_id": self.item_id, "samples": self.sent_samples, "sample_rate": self.sample_rate}
        await self._send(lambda: self._codec.audio_end(self.item_id, self.sent_samples, self.sample_rate))
        return end

    async def abort(self) -> None:
        """The connection ended: stop capturing and release the device; send nothing more."""
        if not self.active:
            return
        handle = self._handle
        self._release()
        dropped = len(self._queue)
        self._queue.clear()
        self.dropped_frames += dropped
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
        try:
            await handle.stop(False)
        except Exception as exc:  # the device or context went away on its own
            self.error = f"microphone stop failed: {exc}"
        self.track_state = str(handle.trackState())

    def _release(self) -> None:
        """Mark the capture over and free the frame callback's proxy (no more frames)."""
        self.active = False
        self._owner.close()
        if self._handle is not None:
            self.track_state = str(self._handle.trackState())

    def stats(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "track_state": self.track_state,
            "sample_rate": self.sample_rate,
            "device_rate": self.device_rate,
            "captured_samples": self.captured_samples,
            "sent_samples": self.sent_samples,
            "sent_frames": self.sent_frames,
            "queued_frames": len(self._queue),
            "dropped_frames": self.dropped_frames,
            "dropped_samples": self.dropped_samples,
            "paused": self.paused,
            "paused_samples": self.paused_samples,
            "lost_samples": self.lost_samples,
            "lost_reason": self.lost_reason,
            "error": self.error,
        }
