"""Transports: WebSocketStream (backpressure to TCP) and classic WebSocket (fallback).

Both expose the same shape to the client:

* ``start(consume, owner)`` -- begin delivering received messages to ``consume(messages,
  nbytes)``, a batch at a time (text messages as ``str``, binary ones as ``BatchSource``);
  ``consume`` returns None when it took them all at once, or an awaitable while its sinks are
  full, and nothing more is delivered until that settles. Returns an awaitable that ends with
  the stream (raises when it failed). ``owner`` holds the callbacks JavaScript calls;
* ``await send(data)`` -- send one message (``str``: text, ``bytes``: binary), waiting first if
  the send side is backed up (WebSocketStream: the writer's ``ready``; classic:
  ``bufferedAmount`` watermarks);
* ``closed`` -- an asyncio future resolved with ``(code, reason)`` when the socket closes.

Messages cross from JavaScript into Python in batches (``js/batch.js``): a call into Python
per message cost more than the message's work. WebSocketStream's readable is piped into a
batching sink that stops taking messages while Python's sinks are full, so backpressure still
reaches TCP. The classic ``WebSocket`` cannot stop reading, so its batches go into a bounded
``ReceiveQueue`` (drop-oldest-audio policy, pyclient/flow.py) from which the client takes
them. Which messages are audio that may be dropped is the protocol's business: the transport
asks the ``classify`` callable it was given (``Codec.classify``), it never looks inside a
message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import js
from pyodide.ffi import JsException, to_js

from ..errors import TransportError, TransportUnsupported, UsageError
from ..flow import (
    DEFAULT_RECEIVE_QUEUE_BYTES,
    DEFAULT_SEND_HIGH,
    DEFAULT_SEND_LOW,
    MIN_RECEIVE_QUEUE_BYTES,
    ReceiveQueue,
    Watermarks,
)
from .jsutil import ProxyOwner, bytes_to_js, js_object, unpack_batch

Classify = Callable[[Any], tuple[bool, int | None]]  # message -> (droppable audio?, its sequence number)

WEBSOCKETSTREAM = "websocketstream"
WEBSOCKET = "websocket"
TRANSPORTS = ("auto", WEBSOCKETSTREAM, WEBSOCKET)
SEND_POLL_S = 0.005  # classic WebSocket has no event for bufferedAmount falling
BATCH_MESSAGES = 256  # messages in one crossing into Python, at most ...
BATCH_BYTES = 64 * 1024  # ... and bytes (one larger message is a batch of its own)
Consume = Callable[[Any, int], Any]  # (messages, their bytes) -> None, or an awaitable while sinks are full


def websocketstream_available() -> bool:
    return hasattr(js, "WebSocketStream") and js.WebSocketStream is not None


def choose_transport(preference: str) -> str:
    """Resolve ``auto``; raise ``TransportUnsupported`` for an explicit impossible choice."""
    if preference not in TRANSPORTS:
        raise UsageError(f"transport must be one of {', '.join(TRANSPORTS)}, got {preference!r}")
    has_wss = websocketstream_available()
    if preference == WEBSOCKETSTREAM and not has_wss:
        raise TransportUnsupported(
            "WebSocketStream is not available in this browser; use transport='auto' or 'websocket'"
        )
    if preference == "auto":
        return WEBSOCKETSTREAM if has_wss else WEBSOCKET
    return preference


class _SendStats:
    def __init__(self) -> None:
        self.send_wait_s = 0.0
        self.send_waits = 0
        self.bytes_out = 0
        self.frames_out = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "send_wait_s": round(self.send_wait_s, 4),
            "send_waits": self.send_waits,
            "bytes_out": self.bytes_out,
            "frames_out": self.frames_out,
        }


class WebSocketStreamTransport:
    name = WEBSOCKETSTREAM

    def __init__(self, batch: Any) -> None:
        self._batch = batch  # the js/batch.js module
        self._wss: Any = None
        self._writer: Any = None
        self.readable: Any = None
        self.protocol = ""
        self.closed: asyncio.Future = asyncio.get_event_loop().create_future()
        self.send_stats = _SendStats()
        self._closing = False
        self._batcher: Any = None
        self.early = False  # adopted a socket the page opened while Python booted

    def start(self, consume: Consume, owner: ProxyOwner) -> Any:
        """Pipe the readable into ``batch.js``'s batching sink; returns the pipe's promise."""
        batch = self._batch

        def deliver(layout: Any, data: Any, texts: Any) -> Any:
            messages, nbytes = unpack_batch(layout, data, texts)
            return consume(messages, nbytes)

        self._batcher = batch.Batcher.new(owner.proxy(deliver), BATCH_MESSAGES, BATCH_BYTES)
        return self.readable.pipeTo(batch.batchingSink(self._batcher))

    async def open(self, url: str, protocols: list[str], early: Any = None) -> None:
        """``early``: the same socket, opened while Python booted (js/early.js): adopted."""
        self.early = early is not None
        try:
            self._wss = (
                early.wss if early is not None else js.WebSocketStream.new(url, js_object(protocols=to_js(protocols)))
            )
            opened = await self._wss.opened
        except JsException as exc:
            raise TransportError(f"could not open {url} with WebSocketStream: {exc}") from exc
        self.readable = opened.readable
        self._writer = opened.writable.getWriter()
        self.protocol = opened.protocol or ""
        self._watcher = asyncio.ensure_future(self._watch_close())

    async def _watch_close(self) -> None:
        try:
            info = await self._wss.closed
            result = (int(info.closeCode or 1005), str(info.reason or ""))
        except JsException as exc:
            result = (1006, str(exc))  # closed without a closing handshake
        if not self.closed.done():
            self.closed.set_result(result)

    async def send(self, data: bytes | str) -> None:
        writer = self._writer
        if writer is None or self.closed.done() or self._closing:
            # Never write once close() was called: Chromium's renderer crashed ("Target
            # crashed") on a write racing the closing handshake of a WebSocketStream.
            raise TransportError("cannot send: the socket is closed or closing")
        t0 = time.monotonic()
        try:
            size = writer.desiredSize  # JS null (Pyodide's jsnull, not None) once the stream errored
            if isinstance(size, (int, float)) and size <= 0:
                self.send_stats.send_waits += 1
            await self._unless_closed(writer.ready)
            self.send_stats.send_wait_s += time.monotonic() - t0
            await self._unless_closed(writer.write(data if isinstance(data, str) else bytes_to_js(data)))
        except JsException as exc:
            raise TransportError(f"send failed: {exc}") from exc
        self.send_stats.bytes_out += len(data)
        self.send_stats.frames_out += 1

    async def drain(self) -> None:
        """Wait until every message sent so far was handed to the browser's socket."""
        if self._writer is not None and not self.closed.done():
            try:
                await self._writer.ready
            except JsException:
                pass  # closed meanwhile: nothing more can drain

    async def _unless_closed(self, promise: Any) -> None:
        """Await ``promise`` unless the socket is given up first (a half-open socket's writer
        may never become ready again: nobody must wait on it forever)."""
        if self.closed.done():
            raise TransportError("cannot send: the socket is closed")
        waiting = asyncio.ensure_future(_awaited(promise))
        waiting.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved, even if abandoned
        await asyncio.wait({waiting, self.closed}, return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            raise TransportError("cannot send: the socket closed (or was given up) while sending")
        waiting.result()

    def abandon(self, reason: str) -> None:
        """Give the socket up (dead, half-open): ``closed`` resolves now with 1006 and
        ``reason``, pending sends fail, and a close is attempted."""
        self.close(4000, "dead connection")
        if not self.closed.done():
            self.closed.set_result((1006, reason))

    def unsent_bytes(self) -> int:
        return 0  # WebSocketStream does not tell; write() resolved once it took the data

    def close(self, code: int = 1000, reason: str = "") -> None:
        self._closing = True
        if self._wss is not None and not self.closed.done():
            try:
                self._wss.close(js_object(closeCode=code, reason=reason))
            except JsException:
                pass

    def receive_stats(self) -> dict[str, Any]:
        return batch_stats(self._batcher) | {"early_socket": self.early}

    def queued_bytes(self, in_js: bool = True) -> int:
        """Bytes read from the socket that wait in the batching stage (not yet in Python)."""
        return int(self._batcher.pendingBytes) if in_js and self._batcher is not None else 0

    def dispose(self) -> None:
        # No proxies of its own (the client's pipe owner holds the batch callback); the
        # batching stage's message port goes (a pipe that never ended would keep it).
        if self._batcher is not None:
            self._batcher.close()


class ClassicWebSocketTransport:
    name = WEBSOCKET

    def __init__(
        self,
        batch: Any,
        receive_queue_bytes: int = DEFAULT_RECEIVE_QUEUE_BYTES,
        send_high: int = DEFAULT_SEND_HIGH,
        send_low: int = DEFAULT_SEND_LOW,
        classify: Classify | None = None,
        audio_samples: Callable[[Any], int] | None = None,
    ) -> None:
        if receive_queue_bytes < MIN_RECEIVE_QUEUE_BYTES:
            raise UsageError(
                f"receive_queue_bytes={receive_queue_bytes} is below the {MIN_RECEIVE_QUEUE_BYTES}-byte minimum"
            )
        self._batch = batch  # the js/batch.js module
        self._owner = ProxyOwner()
        self._ws: Any = None
        self._batcher: Any = None
        # The bound holds for all the page keeps: an eighth of it for the batch gathering in
        # JavaScript (between two tasks), the rest for the queue.
        self._batch_bytes = min(BATCH_BYTES, receive_queue_bytes // 8)
        self.queue: ReceiveQueue[Any] = ReceiveQueue(
            max(MIN_RECEIVE_QUEUE_BYTES, receive_queue_bytes - self._batch_bytes),
            samples_of=audio_samples,
            classify=classify,
        )
        self.watermarks = Watermarks(send_high, send_low)
        self._arrived = asyncio.Event()
        self._ended = False
        self.protocol = ""
        self.closed: asyncio.Future = asyncio.get_event_loop().create_future()
        self.send_stats = _SendStats()
        self.buffered_amount_max = 0
        self.text_messages = 0
        self.early = False  # adopted a socket the page opened while Python booted
        self.last_arrival = 0.0  # when JavaScript last handed over a batch (the socket is alive)
        self.arrive_error: str | None = None
        # The synchronous path (_arrive): the client, the pump parked on an empty queue, and
        # what a batch taken directly still holds (counted in queued_bytes like the queue).
        self._consume: Consume | None = None
        self._parked = False
        self._handed: Any = None  # a wait the direct path left for the pump
        self._spilled = False
        self._batch_messages: list[Any] = []
        self._taken = 0
        self._direct_bytes = 0
        self.direct_batches = 0

    async def open(self, url: str, protocols: list[str], early: Any = None) -> None:
        """``early``: the same socket, opened while Python booted (js/early.js): adopted, with
        the messages that arrived before."""
        loop = asyncio.get_event_loop()
        opened: asyncio.Future = loop.create_future()
        self.early = early is not None
        try:
            ws = early.ws if early is not None else js.WebSocket.new(url, to_js(protocols))
        except JsException as exc:
            raise TransportError(f"could not open {url}: {exc}") from exc
        ws.binaryType = "arraybuffer"
        self._ws = ws

        def on_open(evt: Any) -> None:
            if not opened.done():
                opened.set_result(None)

        def on_close(evt: Any) -> None:
            self._batcher.handOver()  # what arrived before the close goes first
            self._ended = True
            self._arrived.set()
            if not opened.done():
                opened.set_exception(TransportError(f"could not open {url} (close code {evt.code})"))
            if not self.closed.done():
                self.closed.set_result((int(evt.code), str(evt.reason)))

        ws.onopen = self._owner.proxy(on_open)
        ws.onclose = self._owner.proxy(on_close)
        ws.onerror = self._owner.proxy(lambda evt: None)  # the close event that follows carries the code
        self._batcher = self._batch.Batcher.new(self._owner.proxy(self._arrive), BATCH_MESSAGES, self._batch_bytes)
        self._batch.listen(ws, self._batcher, early.messages if early is not None else None)
        if ws.readyState == 1:  # adopted open
            on_open(None)
        await opened
        self.protocol = ws.protocol or ""

    def _arrive(self, layout: Any, data: Any, texts: Any) -> None:
        """A batch from JavaScript. While the client keeps up (the pump waits on an empty
        queue), the client takes it now, with no asyncio hop; what it cannot take yet, and
        every batch while it is busy, goes into the bounded queue (the oldest audio goes when
        full). Never raises (JavaScript would stop handing over): a failure closes the socket
        (4001)."""
        self.last_arrival = time.monotonic()
        consume = self._consume
        try:
            if consume is not None and self._parked and not len(self.queue) and self._handed is None:
                # Read where they lie in the batch: nothing outlives the call but what a wait
                # leaves, and that is copied into the queue (_direct).
                messages, nbytes = unpack_batch(layout, data, texts)
                self.text_messages += int(texts.length)
                self.direct_batches += 1
                self._spilled, self._taken = False, 0
                self._batch_messages, self._direct_bytes = messages, nbytes
                waiting = consume(self._direct(messages), 0)
                if waiting is None:
                    self._batch_messages = []
                    return
                self._spill()  # (the client took what it could; the rest waits in the queue)
                self._handed = waiting
            else:
                # Each message its own storage: a dropped one must free its bytes, not keep its batch.
                messages, _ = unpack_batch(layout, data, texts, own=True)
                self.queue.push_all(messages)  # classified only if the queue must make room
                self.text_messages += int(texts.length)
        except Exception as exc:
            self.arrive_error = f"{type(exc).__name__}: {exc}"
            self._direct_bytes = 0
            self.close(4001, "client failed to queue a message")
        self._parked = False
        self._arrived.set()

    def _direct(self, messages: list[Any]) -> Any:
        """A batch's messages in order, then (once ``_spill`` moved the rest into the queue)
        the queue's, for as long as the client reads."""
        for message in messages:
            if self._spilled:
                break
            self._taken += 1
            self._direct_bytes -= len(message)
            yield message
        if self._spilled:
            yield from self.queue.popping()

    def _spill(self) -> None:
        """What the client has not read of a batch taken directly goes into the queue, each
        message with storage of its own (it may be dropped there), ahead of what comes next."""
        rest = self._batch_messages[self._taken :]
        self._batch_messages = []
        self._spilled = True
        self._direct_bytes = 0
        self.queue.push_all([m if isinstance(m, str) else m.bytes_at(0, len(m)) for m in rest])

    def start(self, consume: Consume, owner: ProxyOwner) -> asyncio.Future:
        """Hand the queued messages to ``consume`` until the socket closed and the queue is
        empty; returns the task doing it."""
        return asyncio.ensure_future(self._pump(consume))

    async def _pump(self, consume: Consume) -> None:
        self._consume = consume
        while True:
            while not len(self.queue) and not self._ended and self._handed is None:
                self._arrived.clear()
                self._parked = True  # batches that arrive now go straight to the client (_arrive)
                await self._arrived.wait()
            self._parked = False
            if self._handed is not None:  # a batch taken directly waits for room: so does the pump
                handed, self._handed = self._handed, None
                await handed
                continue
            if not len(self.queue):
                return
            # Taken one by one as the client gets to them: a message still queued can be
            # dropped for newer ones (the oldest audio), and counts in queued_bytes.
            waiting = consume(self.queue.popping(), 0)
            if waiting is not None:
                await waiting

    async def send(self, data: bytes | str) -> None:
        ws = self._ws
        if ws is None or ws.readyState != 1:
            raise TransportError("cannot send: the socket is not open")
        amount = ws.bufferedAmount
        self.buffered_amount_max = max(self.buffered_amount_max, amount)
        if self.watermarks.must_wait(amount):
            self.send_stats.send_waits += 1
            t0 = time.monotonic()
            while self.watermarks.must_wait(ws.bufferedAmount):
                if ws.readyState != 1:
                    raise TransportError("socket closed while waiting to send")
                await asyncio.sleep(SEND_POLL_S)
            self.send_stats.send_wait_s += time.monotonic() - t0
        ws.send(data if isinstance(data, str) else bytes_to_js(data))
        self.send_stats.bytes_out += len(data)
        self.send_stats.frames_out += 1
        self.buffered_amount_max = max(self.buffered_amount_max, ws.bufferedAmount)

    async def drain(self) -> None:
        """Wait until ``bufferedAmount`` is 0: everything sent has left the browser."""
        ws = self._ws
        while ws is not None and ws.readyState == 1 and ws.bufferedAmount > 0:
            await asyncio.sleep(SEND_POLL_S)

    def unsent_bytes(self) -> int:
        ws = self._ws
        return int(ws.bufferedAmount) if ws is not None else 0

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self._ws is not None and self._ws.readyState in (0, 1):
            self._ws.close(code, reason)

    def abandon(self, reason: str) -> None:
        """Give the socket up (dead, half-open): ``closed`` resolves now with 1006 and
        ``reason``, the pump ends, pending sends fail, and a close is attempted."""
        self.close(4000, "dead connection")
        self._ended = True
        self._arrived.set()
        if not self.closed.done():
            self.closed.set_result((1006, reason))

    def receive_stats(self) -> dict[str, Any]:
        st = self.queue.stats() | batch_stats(self._batcher)
        st["text_messages"] = self.text_messages
        st["direct_batches"] = self.direct_batches  # taken by the client at once, not queued first
        st["buffered_amount_max"] = self.buffered_amount_max
        st["early_socket"] = self.early
        if self.arrive_error:
            st["arrive_error"] = self.arrive_error
        return st

    def queued_bytes(self, in_js: bool = True) -> int:
        pending = int(self._batcher.pendingBytes) if in_js and self._batcher is not None else 0
        return self.queue.bytes + self._direct_bytes + pending

    def dispose(self) -> None:
        ws = self._ws
        if ws is not None:  # a socket given up for dead may still fire events: nobody listens now
            ws.onopen = ws.onclose = ws.onerror = ws.onmessage = None
        if self._batcher is not None:
            self._batcher.close()
        self._owner.close()


def batch_stats(batcher: Any) -> dict[str, Any]:
    if batcher is None:
        return {}
    return {
        "batches": int(batcher.batches),
        "batched_messages": int(batcher.messages),
        "largest_batch": int(batcher.largestBatch),
    }


async def _awaited(promise: Any) -> Any:
    return await promise


def make_transport(name: str, batch: Any, **options: Any) -> WebSocketStreamTransport | ClassicWebSocketTransport:
    """``batch``: the js/batch.js module. ``options`` (receive_queue_bytes, send_high,
    send_low, classify, audio_samples) apply to the classic one."""
    if name == WEBSOCKETSTREAM:
        return WebSocketStreamTransport(batch)
    return ClassicWebSocketTransport(batch, **options)
