"""One simulated-server connection: sends frames with accounting, receives client frames.

Every send is awaited (aiohttp drains when the transport buffer passes its high-water mark),
and the time spent inside the await is the connection's *send-wait*. With credit flow control
a send also waits until the client granted enough credit.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from pyclient.flow import CreditBalance
from pyclient.frames import (
    AudioFrame,
    BytesSource,
    ControlFrame,
    CreditFrame,
    FrameDecoder,
    Malformed,
    Sequencer,
    ToolResultFrame,
)

from .stats import ConnectionStats

TOOL_ARG_FRAGMENTS = 3


class Session:
    def __init__(self, ws: web.WebSocketResponse, stats: ConnectionStats, credit: bool, transport: Any = None) -> None:
        self.ws = ws
        self.transport = transport
        self.stats = stats
        self.seq = Sequencer()
        self.credit: CreditBalance | None = CreditBalance() if credit else None
        self._credit_changed = asyncio.Event()
        self._pending: dict[str, dict[str, Any]] = {}
        self._results_changed = asyncio.Event()
        self.closed = asyncio.Event()
        self._reading = asyncio.Event()
        self._reading.set()
        self.cut_items: set[int] = set()
        self._mic_end = asyncio.Event()
        self._mic_rate = 0
        self.drop_after = 0  # > 0: abort the TCP connection after this many frames (a crash)

    # ------------------------------------------------------------------ sending

    async def send(self, frame: bytes) -> None:
        if self.credit is not None and not self.credit.can_send(len(frame)):
            self.stats.credit_waits += 1
            t0 = self.stats.credit_blocked_since = time.monotonic()
            try:
                while not self.credit.can_send(len(frame)):
                    if self.closed.is_set():
                        raise ConnectionResetError("client went away while the server waited for credit")
                    self._credit_changed.clear()
                    await self._credit_changed.wait()
            finally:
                self.stats.credit_blocked_since = None
                self.stats.credit_wait_s += time.monotonic() - t0
        if self.credit is not None:
            self.credit.spend(len(frame))
        if self.ws.closed:
            raise ConnectionResetError("socket closed")
        t0 = self.stats.send_blocked_since = time.monotonic()
        try:
            await self.ws.send_bytes(frame)
        finally:
            self.stats.send_blocked_since = None
        self.stats.on_sent(len(frame), time.monotonic() - t0)
        if self.drop_after and self.stats.frames_sent >= self.drop_after:
            self.drop()

    def drop(self) -> None:
        """Abort the TCP connection with no closing handshake, as a crashed server or a lost
        network would (``drop_after``); what is still in the send buffer is lost."""
        self.stats.dropped = True
        if self.transport is not None:
            self.transport.abort()
        raise ConnectionResetError(f"dropped on purpose after {self.stats.frames_sent} frames (drop_after)")

    async def text(self, data: str | bytes) -> None:
        # Frames carry bytes: a fragment may end inside a UTF-8 character (on purpose).
        raw = data.encode() if isinstance(data, str) else data
        self.stats.on_text(raw)
        await self.send(self.seq.text(raw))

    async def audio(self, pcm: bytes, *, sample_rate: int, item_id: int, final: bool = False) -> None:
        self.stats.on_audio(pcm)
        await self.send(self.seq.audio(pcm, sample_rate=sample_rate, item_id=item_id, final=final))

    async def raw(self, frame: bytes) -> None:
        """Send bytes as they are (forged frames for the ``faults`` scenario)."""
        await self.send(frame)

    async def control(self, type: str, **fields: Any) -> None:
        await self.send(self.seq.control(type, **fields))

    async def tool_call(self, name: str, arguments: dict[str, Any], expect: Any = None) -> str:
        """Stream a tool call in fragments; ``expect`` (if given) checks the result later."""
        call_id = "call_" + uuid.uuid4().hex[:12]
        raw = json.dumps(arguments)
        step = max(1, -(-len(raw) // TOOL_ARG_FRAGMENTS))
        parts = [raw[i : i + step] for i in range(0, len(raw), step)] or [""]
        self._pending[call_id] = {"name": name, "expect": expect}
        self.stats.tool_calls_sent += 1
        for i, part in enumerate(parts):
            first, last = i == 0, i == len(parts) - 1
            await self.send(self.seq.tool_call(call_id, part, name=name if first else None, final=last))
        return call_id

    async def wait_tool_results(self, timeout: float) -> bool:
        """Wait until every tool call sent has its result (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        while self._pending and not self.closed.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._results_changed.clear()
            try:
                await asyncio.wait_for(self._results_changed.wait(), left)
            except TimeoutError:
                return False
        return not self._pending

    # ------------------------------------------------------------------ receiving

    def pause_reading(self) -> None:
        """Stop reading the socket: the client's sends back up in TCP, then in the browser."""
        self._reading.clear()
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()
        self._reading.set()

    async def receive_loop(self) -> None:
        decoder = FrameDecoder()
        try:
            while True:
                await self._reading.wait()
                msg = await self.ws.receive()
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    break
                if msg.type == WSMsgType.BINARY:
                    self.stats.bytes_received += len(msg.data)
                    for frame in decoder.feed_message(BytesSource(msg.data)):
                        self._on_frame(frame)
                elif msg.type == WSMsgType.TEXT:
                    self.stats.errors.append("client sent a text message; the protocol is binary")
                elif msg.type == WSMsgType.ERROR:
                    self.stats.errors.append(f"socket error: {self.ws.exception()!r}")
                    break
        finally:
            self.closed.set()
            self._credit_changed.set()
            self._results_changed.set()

    def _on_frame(self, frame: Any) -> None:
        self.stats.frames_received += 1
        if isinstance(frame, Malformed):
            self.stats.malformed_received += 1
            self.stats.errors.append(f"malformed frame from client: {frame.reason}")
        elif isinstance(frame, ToolResultFrame):
            self._on_tool_result(frame)
        elif isinstance(frame, CreditFrame):
            if self.credit is not None:
                self.credit.grant(frame.grant)
                self.stats.credit_granted += frame.grant
                self._credit_changed.set()
        elif isinstance(frame, ControlFrame):
            self._on_control(frame)
        elif isinstance(frame, AudioFrame):
            # Microphone uplink: counted, hashed, acknowledged in the voice scenario's reply.
            self.stats.on_mic(frame.samples, frame.sample_rate, bytes(frame.pcm))
            self._mic_rate = frame.sample_rate

    def _on_control(self, frame: ControlFrame) -> None:
        if frame.type == "hello":
            self.stats.client_hello = frame.fields
            return
        self.stats.controls_received.append({"type": frame.type, **frame.fields})
        if frame.type == "playback_position":
            self.stats.playback_positions.append(frame.fields)
            item = frame.fields.get("item_id")
            if isinstance(item, int):
                self.cut_items.add(item)
        elif frame.type == "input_audio_end":
            self._mic_end.set()

    async def wait_mic_end(self, timeout: float) -> dict[str, Any]:
        """Wait for the client's ``input_audio_end`` (or the timeout); what was heard."""
        try:
            await asyncio.wait_for(self._mic_end.wait(), timeout)
        except TimeoutError:
            self.stats.errors.append(f"no input_audio_end within {timeout} s")
        samples = self.stats.mic_samples_received
        rate = self._mic_rate or 1
        return {"samples": samples, "rate": self._mic_rate, "ms": samples * 1000 / rate}

    def _on_tool_result(self, frame: ToolResultFrame) -> None:
        pending = self._pending.pop(frame.call_id, None)
        entry: dict[str, Any] = {
            "call_id": frame.call_id,
            "ok": frame.ok,
            "result": frame.result,
            "error": frame.error,
            "name": pending["name"] if pending else None,
            "known_call": pending is not None,
        }
        expect = pending.get("expect") if pending else None
        if callable(expect):
            entry["as_expected"] = bool(expect(frame))
        self.stats.tool_results.append(entry)
        self._results_changed.set()
