"""One simulated-server connection: sends frames with accounting, receives client frames.

Every send is awaited (aiohttp drains when the transport buffer passes its high-water mark),
and the time spent inside the await is the connection's *send-wait*. With credit flow control
a send also waits until the client granted enough credit.

Fairness: with a fast reader aiohttp's drain never waits, so a sending scenario would never
give the event loop back and one flood would starve every other connection and ``/stats``.
``send`` therefore yields to the loop once it has run ``YIELD_EVERY_S`` without yielding.

Robustness: nothing a client sends ends the receive loop. A frame the server fails on is
recorded in the connection's errors and the loop goes on; the loop ends only when the socket
does, and then ``closed`` is set whatever happened. Per-connection state is bounded
(``MAX_PENDING_CALLS``, ``MAX_CUT_ITEMS``, and the bounds in stats.py) and ``release()`` drops
it when the connection ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from typing import Any

from aiohttp import WSMsgType, web

from pyclient.flow import CreditBalance
from pyclient.frames import (
    DEFAULT_MAX_PAYLOAD,
    AudioFrame,
    BytesSource,
    ControlFrame,
    CreditFrame,
    FrameDecoder,
    Malformed,
    Sequencer,
    ToolResultFrame,
)

from .stats import ConnectionStats, clip, summarise

log = logging.getLogger("pyclient.devserver")

TOOL_ARG_FRAGMENTS = 3
# Longest a sending scenario runs before it lets the other tasks run. Measured with one fast
# reader on loopback (2 cores): never yielding, /stats waited 11 s; 5 ms: 33 ms and the same
# 25 MB/s; 2 ms: ~10 ms (~60 ms with 4 floods); yielding after every frame cost 15% throughput.
YIELD_EVERY_S = 0.002
MAX_PENDING_CALLS = 10_000  # tool calls awaiting a result; beyond it the oldest is forgotten
MAX_CUT_ITEMS = 1024  # audio item ids the client cut (playback_position), newest kept
HELLO_JSON_BYTES = 8192  # the client's hello is kept whole up to this size
CALL_ID_CHARS = 100  # a client's call_id is kept to this many characters in /stats


async def close_first(ws: web.WebSocketResponse, receiver: asyncio.Task, code: int, message: bytes) -> None:
    """Close from the server's side with a real closing handshake.

    aiohttp's ``close()`` with a ``receive()`` pending in another task (our receive loop)
    breaks that receive and then closes the transport at once, without waiting for the
    client's close frame; with client data still unread that is a TCP reset, which Chromium
    reports as 1006 ("WebSocket was not cleanly closed"; seen in 2 runs of 4). So the receive
    loop is stopped first, and ``close()`` then waits for the client's answer (10 s at most).
    """
    if not receiver.done():
        receiver.cancel()
        with contextlib.suppress(BaseException):
            await receiver
    await ws.close(code=code, message=message)


class ClosedEarly(Exception):
    """``close_after``: the server ends the session with a clean close but before ``done``, as
    a server that crashed politely or a proxy would; the client must call that an error."""


class Session:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        stats: ConnectionStats,
        credit: bool,
        transport: Any = None,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.stats = stats
        self.seq = Sequencer()
        self.decoder = FrameDecoder(max_payload)
        self.credit: CreditBalance | None = CreditBalance() if credit else None
        self._credit_changed = asyncio.Event()
        self._pending: dict[str, dict[str, Any]] = {}  # call_id -> name, expect (insertion order)
        self._received = asyncio.Event()  # set on every message from the client
        self.last_received = time.monotonic()
        self.closed = asyncio.Event()
        self._reading = asyncio.Event()
        self._reading.set()
        self.cut_items: dict[int, None] = {}  # an ordered set, bounded by MAX_CUT_ITEMS
        self._mic_end = asyncio.Event()
        self._mic_rate = 0
        self._ran_since = time.monotonic()  # when this connection last gave the loop away
        self.root_id = stats.id  # the session's first connection (a restored session keeps it)
        self.calls_made = 0
        self.drop_after = 0  # > 0: abort the TCP connection after this many frames (a crash)
        self.close_after = 0  # > 0: close cleanly (1000) after this many frames, without 'done'

    @property
    def max_payload(self) -> int:
        """The largest frame payload the server accepts (announced in its ``hello``)."""
        return self.decoder.max_payload

    @property
    def pending_calls(self) -> int:
        return len(self._pending)

    def release(self) -> None:
        """Drop per-connection state when the connection has ended (stats keep the totals)."""
        self._pending.clear()
        self.cut_items.clear()
        self._credit_changed.set()
        self._received.set()

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
        now = time.monotonic()
        self.stats.on_sent(len(frame), now - t0)
        if self.drop_after and self.stats.frames_sent >= self.drop_after:
            self.drop()
        if self.close_after and self.stats.frames_sent >= self.close_after:
            raise ClosedEarly(f"closed after {self.stats.frames_sent} frames without 'done' (close_after)")
        if now - self._ran_since >= YIELD_EVERY_S:
            await self.yield_to_loop()

    async def sleep(self, seconds: float) -> None:
        """A scenario's pacing (bursts, pauses, real-time audio)."""
        await asyncio.sleep(seconds)

    async def yield_to_loop(self) -> None:
        """Let every other ready task run once (other connections, ``/stats``)."""
        await asyncio.sleep(0)
        self._ran_since = time.monotonic()

    def drop(self) -> None:
        """Abort the TCP connection with no closing handshake, as a crashed server or a lost
        network would (``drop_after``); what is still in the send buffer is lost."""
        self.stats.dropped = True
        reason = f"dropped on purpose after {self.stats.frames_sent} frames (drop_after)"
        self.stats.error(reason)
        if self.transport is not None:
            self.transport.abort()
        raise ConnectionResetError(reason)

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
        # Stable per session (a restored session sends its calls again under the same ids).
        self.calls_made += 1
        call_id = "call_" + hashlib.sha256(f"{self.root_id}:{self.calls_made}".encode()).hexdigest()[:12]
        raw = json.dumps(arguments)
        step = max(1, -(-len(raw) // TOOL_ARG_FRAGMENTS))
        parts = [raw[i : i + step] for i in range(0, len(raw), step)] or [""]
        self.expect_result(call_id, name, expect)
        self.stats.tool_calls_sent += 1
        for i, part in enumerate(parts):
            first, last = i == 0, i == len(parts) - 1
            await self.send(self.seq.tool_call(call_id, part, name=name if first else None, final=last))
        return call_id

    def expect_result(self, call_id: str, name: str, expect: Any = None) -> None:
        """Remember a call sent, so that its result is matched (and waited for at the end)."""
        if len(self._pending) >= MAX_PENDING_CALLS:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            self.stats.error(f"more than {MAX_PENDING_CALLS} tool calls awaiting results; forgot {oldest}")
        self._pending[call_id] = {"name": name, "expect": expect}

    async def wait_tool_results(self, idle_s: float, cap_s: float) -> bool:
        """Wait until every tool call sent has its result, as long as the client makes progress.

        The wait ends when nothing at all has arrived from the client for ``idle_s`` (every
        message restarts that clock: a slow link still delivering results keeps it going), at
        ``cap_s`` in all, or when the client goes away. ``/stats`` records how long it waited
        (``tool_wait_s``) and the calls whose results never came (``tool_results_missing``).
        """
        t0 = time.monotonic()
        deadline = t0 + cap_s
        while self._pending and not self.closed.is_set():
            now = time.monotonic()
            left = min(max(self.last_received, t0) + idle_s, deadline) - now
            if left <= 0:
                break
            self._received.clear()
            try:
                await asyncio.wait_for(self._received.wait(), left)
            except TimeoutError:
                pass
        missing = [{"call_id": call_id, "name": p["name"]} for call_id, p in self._pending.items()]
        self.stats.on_missing_results(missing, time.monotonic() - t0)
        return not missing

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
        """Read client messages until the socket ends; no client input ends it earlier."""
        try:
            while True:
                await self._reading.wait()
                msg = await self.ws.receive()
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    break
                if msg.type == WSMsgType.ERROR:
                    self.stats.error(f"socket error: {self.ws.exception()!r}")
                    break
                self.last_received = time.monotonic()
                self._received.set()
                if msg.type == WSMsgType.BINARY:
                    self._on_message(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    self.stats.error("client sent a text message; the protocol is binary")
        except Exception as exc:  # aiohttp itself failed: the socket is unusable
            log.exception("receive loop of connection %s failed", self.stats.id)
            self.stats.error(f"receive loop failed: {exc!r}")
        finally:
            self.closed.set()
            self._credit_changed.set()
            self._received.set()

    def _on_message(self, data: bytes) -> None:
        """Handle one binary message; a failure loses at most that frame (or that message)."""
        self.stats.bytes_received += len(data)
        try:
            frames = self.decoder.feed_message(BytesSource(data))
        except Exception as exc:  # the decoder promises not to raise; should it, only this message is lost
            self.stats.malformed_received += 1
            self.stats.error(f"undecodable message of {len(data)} bytes: {exc!r}")
            return
        for frame in frames:
            try:
                self._on_frame(frame)
            except Exception as exc:
                log.warning("connection %s: failed on a client frame: %r", self.stats.id, exc)
                self.stats.error(f"server failed on a client frame ({type(frame).__name__}): {exc!r}")

    def _on_frame(self, frame: Any) -> None:
        self.stats.frames_received += 1
        if isinstance(frame, Malformed):
            self.stats.malformed_received += 1
            self.stats.error(f"malformed frame from client: {frame.reason}")
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
            self.stats.client_hello = summarise(frame.fields, HELLO_JSON_BYTES)
            return
        self.stats.on_control(frame.type, frame.fields)
        if frame.type == "playback_position":
            self.stats.playback_positions.append(summarise(frame.fields))
            item = frame.fields.get("item_id")
            if isinstance(item, int) and not isinstance(item, bool):
                self.cut_items[item] = None
                if len(self.cut_items) > MAX_CUT_ITEMS:
                    del self.cut_items[next(iter(self.cut_items))]
        elif frame.type == "input_audio_end":
            self._mic_end.set()

    async def wait_mic_end(self, timeout: float) -> dict[str, Any]:
        """Wait for the client's ``input_audio_end`` (or the timeout); what was heard."""
        try:
            await asyncio.wait_for(self._mic_end.wait(), timeout)
        except TimeoutError:
            self.stats.error(f"no input_audio_end within {timeout} s")
        samples = self.stats.mic_samples_received
        rate = self._mic_rate or 1
        return {"samples": samples, "rate": self._mic_rate, "ms": samples * 1000 / rate}

    def _on_tool_result(self, frame: ToolResultFrame) -> None:
        pending = self._pending.pop(frame.call_id, None)
        # Client-supplied values are kept small: a big result is recorded as size + sha256.
        entry: dict[str, Any] = {
            "call_id": clip(frame.call_id, CALL_ID_CHARS),
            "ok": frame.ok,
            "result": summarise(frame.result),
            "error": summarise(frame.error),
            "name": pending["name"] if pending else None,
            "known_call": pending is not None,
        }
        expect = pending.get("expect") if pending else None
        if callable(expect):
            try:
                entry["as_expected"] = bool(expect(frame))
            except Exception:  # a result of a shape the check did not foresee is not what it expected
                entry["as_expected"] = False
        self.stats.on_tool_result(entry, known=pending is not None)
