"""``Client``: one connection, its demux pipeline, its sinks and its stats.

Pipeline (both transports)::

    transport.readable ──pipeTo──▶ demux TransformStream (transform = Python)
                                        │ awaits the target channel's sink, one at a time
                                        ├─ audio   → AudioSink  → AudioWorklet ring
                                        ├─ text    → TokenRenderer → #transcript
                                        ├─ tools   → ToolExecutor → tool result ─▶ transport.send
                                        └─ control → client state (hello, end of turn, errors…)

Because the transform only resolves once every event of a message has been accepted by its
sink, a full sink stops the pipe from reading: on WebSocketStream that reaches TCP; on the
classic WebSocket it reaches the bounded receive queue (and, with credit flow control, the
server's credit).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import js
from pyodide.ffi import JsException

from ..demux import Demux
from ..errors import PyclientError, UsageError
from ..events import (
    AudioChunk,
    Channel,
    Event,
    Interrupted,
    ProtocolErrorEvent,
    ServerError,
    ServerHello,
    StreamDone,
    TextDelta,
    ToolCallArgumentsDelta,
    ToolCallInvalid,
    ToolCallReady,
    ToolCallStarted,
    TurnEnded,
)
from ..flow import (
    DEFAULT_CREDIT_WINDOW,
    DEFAULT_RECEIVE_QUEUE_BYTES,
    DEFAULT_SEND_HIGH,
    DEFAULT_SEND_LOW,
    CreditWindow,
)
from ..frames import DEFAULT_MAX_PAYLOAD, Sequencer
from ..protocols.pyclient import PyclientCodec
from ..tools import DEFAULT_OPEN_CALL_TIMEOUT, ToolExecutor, ToolOutcome, ToolRegistry
from .audio import DEFAULT_PREBUFFER_MS, DEFAULT_RING_CAPACITY, AudioSink
from .jsutil import ArrayBufferSource, ProxyOwner, js_object, to_js_plain
from .mic import MicUplink
from .render import TokenRenderer, ToolCards, resolve_element
from .transport import WEBSOCKET, choose_transport, make_transport

SUBPROTOCOL = "pyclient.v1"
SUBPROTOCOL_CREDIT = "pyclient.v1.credit"
DEFAULT_ASSETS_URL = "/pyclient/browser/js/"
MAX_REMEMBERED_ERRORS = 20
MAX_SERVER_FIELDS = 32  # hello fields kept
MAX_SERVER_FIELD_BYTES = 4096  # a hello field whose JSON is larger is ignored (counted)
MAX_PENDING_CUTS = 4  # barge-in reports in flight; more interruptions wait (stall the stream)
DEFAULT_DRAIN_TIMEOUT_S = 30.0  # after 'done': time to send what we still owe before closing
TOOL_EXPIRY_CHECK_S = 1.0
MIN_PEER_PAYLOAD = 1024  # a peer's announced max_payload below this is ignored as nonsense

STATES = ("idle", "connecting", "open", "closing", "closed", "error")
CLEAN_CLOSE_CODES = (1000, 1005)  # normal closure; no status code given


_stats_owner = ProxyOwner()  # window.pyclientStats: one per page, replaced by each new client


def absolute_ws_url(url: str) -> str:
    """Accept ``/ws?...`` relative to the page as well as full ``ws://`` URLs."""
    if url.startswith(("ws://", "wss://")):
        return url
    loc = js.window.location
    scheme = "wss:" if loc.protocol == "https:" else "ws:"
    return js.URL.new(url, f"{scheme}//{loc.host}{loc.pathname}").href


def _small_json(value: Any) -> bool:
    try:
        return len(json.dumps(value)) <= MAX_SERVER_FIELD_BYTES
    except (TypeError, ValueError, RecursionError):
        return False


def memory_stats() -> dict[str, int | None]:
    """Pyodide's WebAssembly memory, and the JS heap where the browser tells (Chromium)."""
    wasm = None
    try:
        import pyodide_js

        wasm = int(pyodide_js._module.HEAPU8.byteLength)
    except Exception:  # not in Pyodide, or its internals moved
        pass
    perf_memory = getattr(js.performance, "memory", None)
    heap = int(perf_memory.usedJSHeapSize) if perf_memory is not None else None
    return {"wasm_bytes": wasm, "js_heap_used": heap}


class Client:
    """A streaming connection to an AI server speaking docs/PROTOCOL.md.

    >>> client = Client(transcript="transcript", tool_cards="tools")
    >>> @client.tool
    ... def clock() -> str: ...
    >>> await client.connect("/ws?scenario=chat")
    """

    def __init__(
        self,
        *,
        transport: str = "auto",
        transcript: Any = None,
        tool_cards: Any = None,
        audio: bool = True,
        audio_mode: str = "auto",
        ring_capacity: int = DEFAULT_RING_CAPACITY,
        prebuffer_ms: float = DEFAULT_PREBUFFER_MS,
        playback_speed: float = 1.0,
        audio_context_rate: str = "stream",
        credit: bool | str = True,
        credit_window: int = DEFAULT_CREDIT_WINDOW,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        tool_call_timeout: float = DEFAULT_OPEN_CALL_TIMEOUT,
        receive_queue_bytes: int = DEFAULT_RECEIVE_QUEUE_BYTES,
        send_high: int = DEFAULT_SEND_HIGH,
        send_low: int = DEFAULT_SEND_LOW,
        max_pending_tools: int = 16,
        max_tool_cards: int = 100,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT_S,
        assets_url: str = DEFAULT_ASSETS_URL,
        expose_stats: str | None = "pyclientStats",
        tools: ToolRegistry | None = None,
    ) -> None:
        if credit == "auto":  # the former default: credit is now offered on every transport
            credit = True
        if credit not in (True, False):
            raise UsageError(f"credit must be True or False, got {credit!r}")
        if drain_timeout <= 0:
            raise UsageError(f"drain_timeout must be positive, got {drain_timeout}")
        self.transport_preference = transport
        self.tools = tools if tools is not None else ToolRegistry()
        self.state = "idle"
        self.error: str | None = None
        self.url: str | None = None
        self._options = {
            "credit": credit,
            "credit_window": credit_window,
            "receive_queue_bytes": receive_queue_bytes,
            "send_high": send_high,
            "send_low": send_low,
            "max_pending_tools": max_pending_tools,
            "drain_timeout": drain_timeout,
        }
        self.demux = Demux(max_payload=max_payload, open_call_timeout=tool_call_timeout)
        self.renderer = TokenRenderer(resolve_element(transcript))
        self.cards = ToolCards(resolve_element(tool_cards), max_tool_cards)
        self.audio = (
            AudioSink(assets_url, audio_mode, ring_capacity, prebuffer_ms, audio_context_rate) if audio else None
        )
        if self.audio is not None and playback_speed != 1.0:
            self.audio.set_speed(playback_speed)
        self.executor = ToolExecutor(self.tools)
        self.mic = MicUplink(self._send, assets_url)
        self.transport: Any = None
        self.transport_name: str | None = None
        self._seq = Sequencer()
        self._send_lock = asyncio.Lock()
        self._pipe_owner = ProxyOwner()  # the demux transform: destroyed when the pipe ends
        self._listeners: list[Callable[[Event], Any]] = []
        self._credit: CreditWindow | None = None
        self._tool_tasks: set[asyncio.Task] = set()
        self._background: set[asyncio.Task] = set()
        self._cuts: set[asyncio.Task] = set()
        self._tool_slot = asyncio.Event()
        self._closed = asyncio.get_event_loop().create_future()
        self._inflight = 0
        self._buffered_max = 0
        self.bytes_in = 0
        self.messages_in = 0
        self.text_messages_in = 0
        self.tool_calls = 0
        self.tool_results_sent = 0
        self.tool_errors = 0
        self.tool_results_unsendable = 0
        self.tool_blocking_ms = 0.0  # main-thread time inside synchronous tools
        self.tool_blocking_ms_max = 0.0
        self.tool_over_timeout = 0  # sync tools that ran past their timeout (cannot be stopped)
        self.duplicate_interrupts = 0
        self.turns = 0
        self.server: dict[str, Any] = {}
        self.server_fields_ignored = 0
        self.peer_max_payload = DEFAULT_MAX_PAYLOAD  # the protocol's default until the hello says
        self._closing_by_us = False
        self._unsent: str | None = None
        self.server_errors: list[dict[str, str]] = []
        self.protocol_errors: list[str] = []
        self.internal_errors: list[str] = []
        self.done = False
        self.close_info: dict[str, Any] | None = None
        if expose_stats:
            self.expose_stats(expose_stats)

    # ------------------------------------------------------------------ public API

    def tool(self, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Register a tool: ``@client.tool`` or ``@client.tool(name=..., timeout=...)``."""
        return self.tools.register(fn, **options)

    def on_event(self, callback: Callable[[Event], Any]) -> None:
        """Call ``callback(event)`` for every event after its sink accepted it."""
        self._listeners.append(callback)

    def expose_stats(self, name: str = "pyclientStats") -> None:
        """Make ``window[name]()`` return this client's stats as a plain JS object (the page
        has one such function: a newer client replaces an older one's)."""
        _stats_owner.close()
        setattr(js.window, name, _stats_owner.proxy(lambda *_: to_js_plain(self.stats())))

    async def connect(self, url: str, protocols: list[str] | None = None) -> Client:
        """Open the connection and start streaming; returns once the socket is open."""
        if self.state != "idle":
            raise UsageError(f"connect() on a client in state {self.state!r}; make a new Client")
        self.state = "connecting"
        self.url = absolute_ws_url(url)
        try:
            self.transport_name = choose_transport(self.transport_preference)
            if protocols is None:
                # Credit is offered on every transport and the server picks: on WebSocketStream
                # TCP bounds what the page holds, credit also bounds how far the server runs
                # ahead (kernel buffers), which a barge-in would otherwise have to read and drop.
                protocols = [SUBPROTOCOL_CREDIT, SUBPROTOCOL] if self._options["credit"] else [SUBPROTOCOL]
            opts = {k: self._options[k] for k in ("receive_queue_bytes", "send_high", "send_low")}
            self.transport = make_transport(self.transport_name, classify=PyclientCodec().classify, **opts)
            await self.transport.open(self.url, protocols)
        except Exception as exc:
            if self.transport is not None:
                self.transport.dispose()  # a failed open must not leak its proxies
            self.renderer.close()
            self._fail(str(exc))
            raise
        self.state = "open"
        transform = js_object(transform=self._pipe_owner.proxy(self._transform))
        # The demux emits nothing downstream; a readable high-water mark of 1 keeps the
        # TransformStream from applying backpressure for a reader that does not exist.
        demux_stream = js.TransformStream.new(transform, js_object(highWaterMark=1), js_object(highWaterMark=1))
        self._pipe = self.transport.readable.pipeTo(demux_stream.writable)
        self._runner = asyncio.ensure_future(self._run())
        self._expiry = asyncio.ensure_future(self._expire_tool_calls())
        if self.transport.protocol == SUBPROTOCOL_CREDIT:
            self._credit = CreditWindow(self._options["credit_window"])
            await self._send(lambda seq: seq.credit(self._credit.initial()))
        await self._send(
            lambda seq: seq.control(
                "hello",
                client="pyclient",
                transport=self.transport_name,
                tools=self.tools.describe(),
                audio={"mode": self.audio.mode if self.audio else None},
            )
        )
        return self

    async def wait_closed(self) -> dict[str, Any]:
        """Wait until the connection has closed; returns ``{"code", "reason"}``."""
        await asyncio.shield(self._closed)
        return self.close_info or {}

    async def close(self, code: int = 1000, reason: str = "client closed") -> None:
        """Close now (a clean end chosen by the page): the microphone is released, queued
        audio is dropped, and nothing more is sent."""
        if self.state in ("idle", "closed", "error"):
            return
        self.state = "closing"
        self._closing_by_us = True
        await self.mic.abort()
        if self.transport is not None:
            self.transport.close(code, reason)
        if self.audio is not None:
            await self.audio.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._closed), 5)
        except TimeoutError:
            self._finish({"code": None, "reason": "close timed out"})

    async def interrupt(self) -> list[dict[str, Any]]:
        """Barge-in from the client: flush queued audio now and tell the server, per audio
        item, the exact playback position at the cut. Returns those reports."""
        return await self._cut(None, "client")

    async def start_microphone(self) -> None:
        """Capture the microphone and stream it to the server as 20 ms PCM16 frames."""
        if self.state != "open":
            raise UsageError(f"start_microphone() needs an open connection, not {self.state!r}")
        await self.mic.start()

    async def stop_microphone(self) -> dict[str, Any]:
        """Stop capturing; everything captured is sent, then ``input_audio_end``."""
        return await self.mic.stop()

    async def _cut(self, item_id: int | None, reason: str, pending: Any = None) -> list[dict[str, Any]]:
        if self.audio is None:
            return []
        if pending is None:
            pending = self.audio.request_interrupt(item_id, reason)
        reports = await self.audio.finish_interrupt(pending)
        for report in reports:
            try:
                await self._send(lambda seq, r=report: seq.control("playback_position", **r))
            except PyclientError as exc:
                self._remember(self.internal_errors, f"playback position not sent: {exc}")
        return reports

    def throttle_playback(self, factor: float) -> None:
        """Play audio at ``factor`` x real time (0 < factor <= 1) to simulate a slow device."""
        if self.audio is not None:
            self.audio.set_speed(factor)

    def stats(self) -> dict[str, Any]:
        d = self.demux.stats
        buffered = self.buffered_bytes()
        self._buffered_max = max(self._buffered_max, buffered)
        t = self.transport
        receive = t.receive_stats() if t is not None else {}
        audio = self.audio.stats() if self.audio is not None else {"mode": None}
        return {
            "transport": self.transport_name,
            "state": self.state,
            "url": self.url,
            "protocol": t.protocol if t is not None else None,
            "cross_origin_isolated": bool(getattr(js, "crossOriginIsolated", False)),
            "frames_in": d.frames,
            "bytes_in": self.bytes_in,
            "messages_in": self.messages_in,
            "frames_by_kind": dict(d.frames_by_kind),
            "text": {
                "frames": d.frames_by_kind.get("text", 0),
                "chars_rendered": self.renderer.chars_rendered,
                "pending_chars": self.renderer.pending_chars,
                "dom_appends": self.renderer.flushes,
            },
            "tools": {
                "calls": self.tool_calls,
                "results_sent": self.tool_results_sent,
                "errors": self.tool_errors,
                "unsendable": self.tool_results_unsendable,
                "running": len(self._tool_tasks),
                "open_calls": self.demux.tools.open_calls,
                "blocking_ms": round(self.tool_blocking_ms, 3),
                "blocking_ms_max": round(self.tool_blocking_ms_max, 3),
                "over_timeout": self.tool_over_timeout,
                "cards": self.cards.count,
                "registered": [tool["name"] for tool in self.tools.describe()],
            },
            "audio": audio,
            "mic": self.mic.stats(),
            "buffered_bytes": buffered,
            "buffered_bytes_max": max(self._buffered_max, receive.get("queued_bytes_max", 0)),
            "malformed": d.malformed,
            "seq_gaps": d.seq_gaps,
            "protocol_errors": list(self.protocol_errors),
            "send": t.send_stats.as_dict() if t is not None else {},
            "receive": receive,
            "credit": None
            if self._credit is None
            else {"window": self._credit.window, "granted": self._credit.granted, "in_flight": self._credit.in_flight},
            "server": {
                **self.server,
                "turns": self.turns,
                "done": self.done,
                "errors": list(self.server_errors),
                "fields_ignored": self.server_fields_ignored,
                "max_payload": self.peer_max_payload,
                "duplicate_interrupts": self.duplicate_interrupts,
            },
            "close": self.close_info,
            "error": self.error,
            "internal_errors": list(self.internal_errors),
            "memory": memory_stats(),
            "proxies": ProxyOwner.live,
            "background_tasks": len(self._background),
        }

    def buffered_bytes(self) -> int:
        """Bytes held between the socket and the sinks right now."""
        queued = self.transport.queued_bytes() if self.transport is not None else 0
        return queued + self._inflight + self.renderer.pending_bytes

    # ------------------------------------------------------------------ pipeline

    async def _transform(self, chunk: Any, controller: Any) -> None:
        # Never let an exception reject this promise: that would error the whole pipe.
        try:
            if isinstance(chunk, str):
                self.text_messages_in += 1
                self._remember(self.protocol_errors, "text WebSocket message ignored: the protocol is binary")
                return
            src = ArrayBufferSource(chunk)
            n = len(src)
            self.messages_in += 1
            self.bytes_in += n
            if self._credit is not None:
                self._credit.on_received(n)
            self._inflight = n
            self._buffered_max = max(self._buffered_max, self.buffered_bytes())
            if self.transport_name == WEBSOCKET:
                self.demux.forgive(self.transport.queue.take_dropped_seqs())
            for event in self.demux.feed_message(src):
                await self._dispatch(event)
            self._inflight = 0
            if self._credit is not None:
                grant = self._credit.on_consumed(n)
                if grant and self.state == "open":
                    await self._send(lambda seq: seq.credit(grant))
        except Exception as exc:
            self._remember(self.internal_errors, f"{type(exc).__name__}: {exc}")
        finally:
            self._inflight = 0

    async def _dispatch(self, event: Event) -> None:
        channel = event.channel
        if channel is Channel.AUDIO:
            assert isinstance(event, AudioChunk)
            if self.audio is not None:
                await self.audio.write(event)
        elif channel is Channel.TEXT:
            assert isinstance(event, TextDelta)
            await self.renderer.write(event.text)
        elif channel is Channel.TOOLS:
            await self._on_tool_event(event)
        else:
            await self._on_control(event)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception as exc:
                self._remember(self.internal_errors, f"event listener failed: {exc!r}")

    async def _on_tool_event(self, event: Event) -> None:
        if isinstance(event, ToolCallStarted):
            self.cards.started(event.call_id, event.name)
        elif isinstance(event, ToolCallArgumentsDelta):
            self.cards.arguments(event.call_id, event.delta)
        elif isinstance(event, (ToolCallReady, ToolCallInvalid)):
            self.tool_calls += 1
            # Bounded: at most max_pending_tools calls run at once; the stream waits for a slot.
            while len(self._tool_tasks) >= self._options["max_pending_tools"]:
                self._tool_slot.clear()
                await self._tool_slot.wait()
            task = asyncio.ensure_future(self._run_tool(event))
            self._tool_tasks.add(task)
            task.add_done_callback(self._tool_done)

    def _tool_done(self, task: asyncio.Task) -> None:
        self._tool_tasks.discard(task)
        self._tool_slot.set()

    async def _run_tool(self, call: ToolCallReady | ToolCallInvalid) -> None:
        # The executor checks that the result encodes, and fits what the server accepts;
        # otherwise the server gets a structured error result instead (never nothing).
        limit = self.peer_max_payload
        outcome: ToolOutcome = await self.executor.execute(call, max_payload=limit)
        if not outcome.ok:
            self.tool_errors += 1
        if outcome.blocking_ms:
            self.tool_blocking_ms += outcome.blocking_ms
            self.tool_blocking_ms_max = max(self.tool_blocking_ms_max, outcome.blocking_ms)
        if outcome.over_timeout:
            self.tool_over_timeout += 1
        payload = outcome.result if outcome.ok else outcome.error
        self.cards.finished(outcome, payload)
        try:
            await self._send(
                lambda seq: seq.tool_result(outcome.call_id, ok=outcome.ok, result=outcome.result, error=outcome.error)
            )
            self.tool_results_sent += 1
        except PyclientError as exc:
            self.tool_results_unsendable += 1
            self._remember(self.internal_errors, f"tool result for {outcome.call_id!r} not sent: {exc}")

    async def _on_control(self, event: Event) -> None:
        if isinstance(event, ServerHello):
            # Bounded: at most MAX_SERVER_FIELDS keys of at most MAX_SERVER_FIELD_BYTES each.
            fields = event.fields
            for key, value in fields.items():
                known = key in self.server
                if (known or len(self.server) < MAX_SERVER_FIELDS) and _small_json(value):
                    self.server[key] = value
                else:
                    self.server_fields_ignored += 1
            limit = fields.get("max_payload")
            if isinstance(limit, int) and not isinstance(limit, bool) and limit >= MIN_PEER_PAYLOAD:
                self.peer_max_payload = limit
        elif isinstance(event, TurnEnded):
            self.turns += 1
        elif isinstance(event, Interrupted):
            await self._on_interrupted(event)
        elif isinstance(event, ServerError):
            self._remember(self.server_errors, {"code": event.code, "message": event.message})
        elif isinstance(event, StreamDone):
            # The client closes, not the server (docs/PROTOCOL.md, "Ending a session"):
            # Chromium's WebSocketStream drops unread messages when the server closes first.
            # Audio already queued keeps playing.
            if not self.done:  # a second 'done' changes nothing
                self.done = True
                self._spawn(self._close_after_done())
        elif isinstance(event, ProtocolErrorEvent):
            self._remember(self.protocol_errors, event.reason)

    async def _on_interrupted(self, event: Interrupted) -> None:
        if self.audio is None:
            return
        if self.audio.is_interrupted(event.item_id):
            self.duplicate_interrupts += 1  # already cut and reported: nothing is queued for it
            return
        # Bounded: a flood of interruptions waits here (stalling the stream) rather than
        # piling up report tasks.
        while len(self._cuts) >= MAX_PENDING_CUTS:
            await asyncio.wait(self._cuts, return_when=asyncio.FIRST_COMPLETED)
        # Cut now, in stream order: what is queued goes, frames after this event stay.
        pending = self.audio.request_interrupt(event.item_id, "server")
        task = self._spawn(self._cut(event.item_id, "server", pending))
        self._cuts.add(task)
        task.add_done_callback(self._cuts.discard)

    async def _expire_tool_calls(self) -> None:
        """Fail streamed tool calls left unfinished past ``tool_call_timeout`` even while no
        message arrives (each message also checks): the server gets a failed result."""
        while True:
            await asyncio.sleep(TOOL_EXPIRY_CHECK_S)
            for event in self.demux.expire():
                await self._dispatch(event)

    def _spawn(self, coro: Any) -> asyncio.Task:
        """Run ``coro`` in the background, keeping a reference until it is done."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _close_after_done(self) -> None:
        """After 'done': send everything still owed (tool results, playback reports, the
        microphone's tail and ``input_audio_end``), wait for the socket to take it, then close.
        Bounded by ``drain_timeout``; past it, close anyway and say what was not sent."""
        try:
            await asyncio.wait_for(self._send_owed(), self._options["drain_timeout"])
        except TimeoutError:
            self._unsent = self._owed_summary()
        if self.transport is not None:
            self.transport.close(1000, "done")

    async def _send_owed(self) -> None:
        if self.mic.active:
            try:
                await self.mic.stop()
            except PyclientError as exc:
                self._remember(self.internal_errors, f"microphone end not sent: {exc}")
        me = asyncio.current_task()
        while pending := [t for t in (*self._tool_tasks, *self._background) if t is not me]:
            await asyncio.wait(pending)
        await self.transport.drain()

    def _owed_summary(self) -> str:
        me = asyncio.current_task()
        parts = []
        if self._tool_tasks:
            parts.append(f"{len(self._tool_tasks)} tool result(s)")
        if self._cuts:
            parts.append(f"{len(self._cuts)} playback report(s)")
        others = len([t for t in self._background if t is not me and t not in self._cuts])
        if others:
            parts.append(f"{others} other send(s)")
        if self.mic.active or self.mic.stats()["queued_frames"]:
            parts.append("the microphone's tail")
        queued = self.transport.unsent_bytes() if self.transport is not None else 0
        if queued:
            parts.append(f"{queued} bytes still buffered in the browser")
        what = ", ".join(parts) or "data still in flight"
        return f"closed {self._options['drain_timeout']:g} s after 'done' with {what} not sent"

    async def _send(self, build: Callable[[Sequencer], bytes]) -> None:
        # One sender at a time, so sequence numbers go out in order.
        async with self._send_lock:
            await self.transport.send(build(self._seq))

    async def _run(self) -> None:
        error = None
        try:
            await self._pipe
        except JsException as exc:
            error = f"stream failed: {exc}"
        self._pipe_owner.close()  # the pipe will not call the transform again
        self._expiry.cancel()
        await self.mic.abort()  # whatever ended the stream, the device is released now
        for event in self.demux.flush_text():
            await self.renderer.write(event.text)
        self.renderer.flush_now()
        code, reason = await self.transport.closed
        if self._tool_tasks:
            await asyncio.wait(list(self._tool_tasks), timeout=5)
        self._finish({"code": code, "reason": reason}, error=error)

    def _finish(self, info: dict[str, Any], error: str | None = None) -> None:
        """End the session: ``closed`` after a clean end, else ``error`` with one message
        that gives the socket's verdict first, whichever path saw the failure.

        A clean end (docs/PROTOCOL.md, "Ending a session") is a close with 1000/1005 after the
        server said ``done`` and everything owed was sent, or a close the page asked for."""
        if self._closed.done():
            return
        self.close_info = info
        code, reason = info["code"], info["reason"]
        said = f"code {code}{': ' + reason if reason else ''}"
        verdict = None
        if code not in CLEAN_CLOSE_CODES:
            verdict = f"connection closed abnormally ({said})"
        elif not self.done and not self._closing_by_us:
            verdict = f"connection closed before the server said 'done' ({said})"
        elif self._unsent is not None:
            verdict = self._unsent
        if verdict is not None:
            error = verdict if error is None or (reason and reason in error) else f"{verdict}; {error}"
        if error is None:
            self.state = "closed"
        else:
            self._fail(error)
        self.renderer.close()
        if self.transport is not None:
            self.transport.dispose()
        if not self._closed.done():
            self._closed.set_result(info)

    def _fail(self, message: str) -> None:
        self.state = "error"
        self.error = message
        self.close_info = self.close_info or {"code": None, "reason": message}
        if not self._closed.done():
            self._closed.set_result(self.close_info)

    @staticmethod
    def _remember(bucket: list[Any], item: Any) -> None:
        bucket.append(item)
        del bucket[:-MAX_REMEMBERED_ERRORS]
