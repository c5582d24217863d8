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
from collections.abc import Callable
from typing import Any

import js
from pyodide.ffi import JsException

from ..demux import Demux
from ..errors import TransportError, UsageError
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
from ..tools import ToolExecutor, ToolOutcome, ToolRegistry
from .audio import DEFAULT_PREBUFFER_MS, DEFAULT_RING_CAPACITY, AudioSink
from .jsutil import ArrayBufferSource, ProxyOwner, js_object, to_js_plain
from .mic import MicUplink
from .render import TokenRenderer, ToolCards, resolve_element
from .transport import WEBSOCKET, choose_transport, make_transport

SUBPROTOCOL = "pyclient.v1"
SUBPROTOCOL_CREDIT = "pyclient.v1.credit"
DEFAULT_ASSETS_URL = "/pyclient/browser/js/"
MAX_REMEMBERED_ERRORS = 20

STATES = ("idle", "connecting", "open", "closing", "closed", "error")
CLEAN_CLOSE_CODES = (1000, 1005)  # normal closure; no status code given


def absolute_ws_url(url: str) -> str:
    """Accept ``/ws?...`` relative to the page as well as full ``ws://`` URLs."""
    if url.startswith(("ws://", "wss://")):
        return url
    loc = js.window.location
    scheme = "wss:" if loc.protocol == "https:" else "ws:"
    return js.URL.new(url, f"{scheme}//{loc.host}{loc.pathname}").href


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
        credit: bool | str = "auto",
        credit_window: int = DEFAULT_CREDIT_WINDOW,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        receive_queue_bytes: int = DEFAULT_RECEIVE_QUEUE_BYTES,
        send_high: int = DEFAULT_SEND_HIGH,
        send_low: int = DEFAULT_SEND_LOW,
        max_pending_tools: int = 16,
        assets_url: str = DEFAULT_ASSETS_URL,
        expose_stats: str | None = "pyclientStats",
        tools: ToolRegistry | None = None,
    ) -> None:
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
        }
        self.demux = Demux(max_payload=max_payload)
        self.renderer = TokenRenderer(resolve_element(transcript))
        self.cards = ToolCards(resolve_element(tool_cards))
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
        self._owner = ProxyOwner()  # proxies that live as long as the client (stats)
        self._pipe_owner = ProxyOwner()  # the demux transform: destroyed when the pipe ends
        self._listeners: list[Callable[[Event], Any]] = []
        self._credit: CreditWindow | None = None
        self._tool_tasks: set[asyncio.Task] = set()
        self._background: set[asyncio.Task] = set()
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
        self.turns = 0
        self.server: dict[str, Any] = {}
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
        """Make ``window[name]()`` return this client's stats as a plain JS object."""
        previous = getattr(js.window, "_pyclientStatsProxy", None)
        proxy = self._owner.proxy(lambda *_: to_js_plain(self.stats()))
        setattr(js.window, name, proxy)
        js.window._pyclientStatsProxy = proxy
        if previous is not None:
            try:
                previous.destroy()
            except Exception:
                pass

    async def connect(self, url: str, protocols: list[str] | None = None) -> Client:
        """Open the connection and start streaming; returns once the socket is open."""
        if self.state != "idle":
            raise UsageError(f"connect() on a client in state {self.state!r}; make a new Client")
        self.state = "connecting"
        self.url = absolute_ws_url(url)
        try:
            self.transport_name = choose_transport(self.transport_preference)
            if protocols is None:
                protocols = [SUBPROTOCOL]
                credit = self._options["credit"]
                if credit is True or (credit == "auto" and self.transport_name == WEBSOCKET):
                    protocols.insert(0, SUBPROTOCOL_CREDIT)
            opts = {k: self._options[k] for k in ("receive_queue_bytes", "send_high", "send_low")}
            self.transport = make_transport(self.transport_name, **opts)
            await self.transport.open(self.url, protocols)
        except Exception as exc:
            self._fail(str(exc))
            raise
        self.state = "open"
        transform = js_object(transform=self._pipe_owner.proxy(self._transform))
        # The demux emits nothing downstream; a readable high-water mark of 1 keeps the
        # TransformStream from applying backpressure for a reader that does not exist.
        demux_stream = js.TransformStream.new(transform, js_object(highWaterMark=1), js_object(highWaterMark=1))
        self._pipe = self.transport.readable.pipeTo(demux_stream.writable)
        self._runner = asyncio.ensure_future(self._run())
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
        if self.state in ("idle", "closed", "error"):
            return
        self.state = "closing"
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
            except TransportError as exc:
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
                "running": len(self._tool_tasks),
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
            "server": {**self.server, "turns": self.turns, "done": self.done, "errors": list(self.server_errors)},
            "close": self.close_info,
            "error": self.error,
            "internal_errors": list(self.internal_errors),
            "memory": memory_stats(),
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
                if grant:
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
            self._on_control(event)
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
        outcome: ToolOutcome = await self.executor.execute(call)
        if not outcome.ok:
            self.tool_errors += 1
        payload = outcome.result if outcome.ok else outcome.error
        self.cards.finished(outcome.call_id, outcome.name, outcome.ok, payload, outcome.duration_ms)
        try:
            await self._send(
                lambda seq: seq.tool_result(outcome.call_id, ok=outcome.ok, result=outcome.result, error=outcome.error)
            )
            self.tool_results_sent += 1
        except TransportError as exc:
            self._remember(self.internal_errors, f"tool result for {outcome.call_id} not sent: {exc}")

    def _on_control(self, event: Event) -> None:
        if isinstance(event, ServerHello):
            self.server.update(event.fields)
        elif isinstance(event, TurnEnded):
            self.turns += 1
        elif isinstance(event, Interrupted):
            if self.audio is not None:
                # Cut now, in stream order: what is queued goes, frames after this event stay.
                pending = self.audio.request_interrupt(event.item_id, "server")
                self._spawn(self._cut(event.item_id, "server", pending))
        elif isinstance(event, ServerError):
            self._remember(self.server_errors, {"code": event.code, "message": event.message})
        elif isinstance(event, StreamDone):
            # The client closes, not the server (docs/PROTOCOL.md, "Ending a session"):
            # Chromium's WebSocketStream drops unread messages when the server closes first.
            # Audio already queued keeps playing.
            self.done = True
            self._spawn(self._close_after_done())
        elif isinstance(event, ProtocolErrorEvent):
            self._remember(self.protocol_errors, event.reason)

    def _spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background, keeping a reference until it is done."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _close_after_done(self) -> None:
        # Reports still being made (playback positions of a cut) go out before we close.
        pending = [t for t in self._background if t is not asyncio.current_task()]
        if pending:
            await asyncio.wait(pending, timeout=5)
        if self.transport is not None:
            self.transport.close(1000, "done")

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
        for event in self.demux.flush_text():
            await self.renderer.write(event.text)
        self.renderer.flush_now()
        code, reason = await self.transport.closed
        if self._tool_tasks:
            await asyncio.wait(list(self._tool_tasks), timeout=5)
        self._finish({"code": code, "reason": reason}, error=error)

    def _finish(self, info: dict[str, Any], error: str | None = None) -> None:
        """End the session: ``closed`` after a clean close, else ``error`` with one message
        that gives the socket's verdict first, whichever path saw the failure."""
        if self._closed.done():
            return
        self.close_info = info
        code, reason = info["code"], info["reason"]
        if code not in CLEAN_CLOSE_CODES:
            lost = f"connection closed abnormally (code {code}{': ' + reason if reason else ''})"
            error = lost if error is None or (reason and reason in error) else f"{lost}; {error}"
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
