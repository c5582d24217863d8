"""``Client``: the browser shell around one connection: transport, pipeline, sinks, stats.

The rules of the wire live in the sans-I/O core: ``pyclient.connection.Connection`` (state,
credit, readiness, the verdict on how it ended) around a codec from ``pyclient.protocols``
(pyclient.v1, OpenAI Realtime, Gemini Live). This module only pumps messages and events::

    socket ──▶ js/batch.js: every message already there, one batch (bounded) ──▶ Python, once
                                        │ connection.receive(message) → typed events
                                        │ each to its sink at once while it has room
                                        ├─ audio   → AudioSink  → AudioWorklet ring
                                        ├─ text    → TokenRenderer → #transcript
                                        ├─ tools   → ToolExecutor → codec.tool_result ─▶ send
                                        └─ control → client state (hello, turns, errors…)

A batch is taken synchronously, with no asyncio hop, while every sink has room. When one is
full (or an event needs a send), the rest of the batch waits for it and the transport hands
over nothing more meanwhile: on WebSocketStream the pipe stops reading, which reaches TCP; on
the classic WebSocket the messages wait in the bounded receive queue (and, with credit flow
control, the server runs out of credit).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import js
from pyodide.ffi import to_js

from ..approval import APPROVED, CANCELLED, DEFAULT_MAX_PENDING_APPROVALS, ApprovalQueue, ApprovalRequest, ask
from ..approval import needs_approval as _policy_says
from ..connection import Connection, State
from ..errors import PyclientError, TransportError, UsageError
from ..events import (
    AudioChunk,
    Channel,
    Event,
    GoAway,
    Interrupted,
    ProtocolErrorEvent,
    Reconnected,
    Reconnecting,
    ResponseDone,
    ResumeFailed,
    ResumptionUpdate,
    ServerError,
    ServerHello,
    SessionReady,
    SessionResumed,
    StreamDone,
    TextDelta,
    ToolCallArgumentsDelta,
    ToolCallCancelled,
    ToolCallInvalid,
    ToolCallReady,
    ToolCallStarted,
    TurnEnded,
    UsageReport,
    UserTranscript,
)
from ..flow import DEFAULT_CREDIT_WINDOW, DEFAULT_RECEIVE_QUEUE_BYTES, DEFAULT_SEND_HIGH, DEFAULT_SEND_LOW
from ..frames import DEFAULT_MAX_PAYLOAD
from ..protocols import PROTOCOLS, Message, SessionConfig, get_codec
from ..reconnect import DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_DELAY_S, RETRY, ReconnectPolicy, classify
from ..schema import spec_for
from ..tools import DEFAULT_OPEN_CALL_TIMEOUT, ToolExecutor, ToolOutcome, ToolRegistry
from .approval import ApprovalDialog
from .audio import DEFAULT_PREBUFFER_MS, DEFAULT_RING_CAPACITY, AudioSink
from .jsutil import ProxyOwner, import_module, to_js_plain
from .mic import MicUplink
from .render import DEFAULT_MAX_PENDING_CHARS, AudioUnlock, TokenRenderer, ToolCards, resolve_element
from .transport import choose_transport, make_transport

DEFAULT_ASSETS_URL = "/pyclient/browser/js/"
MAX_REMEMBERED_ERRORS = 20
MAX_REMEMBERED_USER_TEXT = 50
MAX_SERVER_FIELDS = 32  # hello fields kept
MAX_SERVER_FIELD_BYTES = 4096  # a hello field whose JSON is larger is ignored (counted)
MAX_PENDING_CUTS = 4  # barge-in reports in flight; more interruptions wait (stall the stream)
DEFAULT_DRAIN_TIMEOUT_S = 30.0  # after 'done': time to send what we still owe before closing
DEFAULT_SETUP_TIMEOUT_S = 30.0  # Gemini: time for the server to accept the set-up
TOOL_EXPIRY_CHECK_S = 1.0
CLOSE_LOCK_WAIT_S = 1.0  # a close waits this long at most for a send in progress to finish
DEFAULT_HEARTBEAT_S = 15.0  # pyclient.v1: ping after this much silence; no answer this long: dead

STATES = ("idle", "connecting", "open", "reconnecting", "closing", "closed", "error")
MAX_REMEMBERED_RESULTS = 256  # tool outcomes kept to answer a resumed server's 'awaiting' again
MAX_REMEMBERED_RESULT_BYTES = 4 * 1024 * 1024  # ... and their results' JSON in all
RESUME_FAILED = 4410  # pyclient.v1: the server cannot resume the session

TokenProvider = Callable[[], "str | dict[str, str] | Awaitable[str | dict[str, str]]"]

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


def _codec_options(protocol: str, options: dict[str, Any]) -> dict[str, Any]:
    """The codec's own constructor options among the Client's."""
    if protocol == "pyclient":
        return {"max_payload": options["max_payload"], "open_call_timeout": options["tool_call_timeout"]}
    if protocol == "pipecat":
        from .. import __version__

        return {"library_version": __version__}
    out: dict[str, Any] = {"model": options["model"]}
    if protocol == "openai-realtime":
        out["allow_long_lived_key"] = options["allow_long_lived_key"]
    else:
        out["api_key"] = options["api_key"]
    return out


class Client:
    """A streaming connection to an AI server: pyclient.v1 (docs/PROTOCOL.md), OpenAI
    Realtime or Gemini Live (``protocol=``).

    >>> client = Client(transcript="transcript", tool_cards="tools")
    >>> @client.tool
    ... def clock() -> str: ...
    >>> await client.connect("/ws?scenario=chat")
    """

    def __init__(
        self,
        *,
        protocol: str = "pyclient",
        transport: str = "auto",
        transcript: Any = None,
        tool_cards: Any = None,
        audio: bool = True,
        audio_mode: str = "auto",
        ring_capacity: int = DEFAULT_RING_CAPACITY,
        prebuffer_ms: float = DEFAULT_PREBUFFER_MS,
        playback_speed: float = 1.0,
        audio_context_rate: str = "stream",
        audio_unlock: bool = True,
        credit: bool | str = True,
        credit_window: int = DEFAULT_CREDIT_WINDOW,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        tool_call_timeout: float = DEFAULT_OPEN_CALL_TIMEOUT,
        receive_queue_bytes: int = DEFAULT_RECEIVE_QUEUE_BYTES,
        send_high: int = DEFAULT_SEND_HIGH,
        send_low: int = DEFAULT_SEND_LOW,
        max_pending_tools: int = 16,
        max_pending_approvals: int = DEFAULT_MAX_PENDING_APPROVALS,
        max_tool_cards: int = 100,
        max_pending_chars: int = DEFAULT_MAX_PENDING_CHARS,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT_S,
        setup_timeout: float = DEFAULT_SETUP_TIMEOUT_S,
        token: str | TokenProvider | None = None,
        model: str | None = None,
        instructions: str | None = None,
        voice: str | None = None,
        allow_long_lived_key: bool = False,
        api_key: bool = False,
        assets_url: str = DEFAULT_ASSETS_URL,
        expose_stats: str | None = "pyclientStats",
        tools: ToolRegistry | None = None,
        codec_options: dict[str, Any] | None = None,
        reconnect: bool = True,
        reconnect_attempts: int = DEFAULT_MAX_ATTEMPTS,
        reconnect_max_delay: float = DEFAULT_MAX_DELAY_S,
        session_renew_s: float | None = -1.0,
        heartbeat_s: float | None = DEFAULT_HEARTBEAT_S,
        idle_timeout_s: float | None = None,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise UsageError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        if credit == "auto":  # the former default: credit is now offered on every transport
            credit = True
        if credit not in (True, False):
            raise UsageError(f"credit must be True or False, got {credit!r}")
        if drain_timeout <= 0:
            raise UsageError(f"drain_timeout must be positive, got {drain_timeout}")
        self.protocol = protocol
        self.transport_preference = transport
        self.tools = tools if tools is not None else ToolRegistry()
        self.state = "idle"
        self.error: str | None = None
        self.url: str | None = None
        self._token = token
        self._options = {
            "credit_window": credit_window,
            "receive_queue_bytes": receive_queue_bytes,
            "send_high": send_high,
            "send_low": send_low,
            "max_pending_tools": max_pending_tools,
            "drain_timeout": drain_timeout,
            "setup_timeout": setup_timeout,
            "max_payload": max_payload,
            "tool_call_timeout": tool_call_timeout,
            "model": model,
            "allow_long_lived_key": allow_long_lived_key,
            "api_key": api_key,
        }
        self.session_config = {"model": model, "instructions": instructions, "voice": voice}
        # codec_options: the protocol codec's own options, e.g. {"barge_in_on_user_speech": False}
        # for a Pipecat bot whose interruption strategy may keep talking (docs/protocols/).
        self.codec = get_codec(protocol, **{**_codec_options(protocol, self._options), **(codec_options or {})})
        self._credit = bool(credit)
        self.conn = Connection(self.codec, credit=self._credit, credit_window=credit_window)
        # Lost connections: the policy decides whether and when to try again (pyclient/reconnect.py).
        self.reconnect = reconnect
        # The protocol's own session limit unless the page sets one (None: never renew).
        self.session_renew_s = self.codec.session_renew_s if session_renew_s == -1.0 else session_renew_s
        self._renew_timer: asyncio.TimerHandle | None = None
        self.renewals = 0
        # Dead sockets (half-open: no close ever comes): a ping after heartbeat_s of silence
        # where the protocol has one (pyclient.v1), and/or a silence the page allows.
        self.heartbeat_s = heartbeat_s if self.codec.has_heartbeat else None
        self.idle_timeout_s = idle_timeout_s
        self.pings_sent = 0
        self.dead_links = 0
        self._ping_at: float | None = None
        self._link_no = 0
        self._link_opened_at = 0.0
        self._dead = asyncio.Event()
        self._dead_reason = ""
        self._liveness: asyncio.Task | None = None
        self._dead_pipe: asyncio.Task | None = None
        self._link_heard = 0
        self._opening_sent = False
        self._closing = asyncio.Event()  # close() was called
        self._pings: set[asyncio.Task] = set()
        self.policy = ReconnectPolicy(max_attempts=reconnect_attempts, max_delay=reconnect_max_delay)
        self.resumes = 0
        self.rolled_back_turns = 0  # turns taken back after a loss (the server sends them again)
        self._go_away = False  # the server announced the end of this connection (Gemini)
        self._switching = False  # the client closed it to resume on a new one
        self.discarded_after_switch = 0  # messages that arrived after that point (sent again)
        self._url_arg: str | None = None
        self._lost_at: float | None = None
        self._protocols: list[str] = []
        self._answered: dict[str, ToolOutcome] = {}  # call_id -> outcome sent (bounded)
        self._answered_bytes: dict[str, int] = {}
        self._answered_total = 0
        self._forgotten: dict[str, None] = {}  # answered long ago: asked again, they never run again
        self.tool_results_resent = 0
        if max_pending_chars < 1:
            raise UsageError(f"max_pending_chars={max_pending_chars} must be at least 1")
        self.renderer = TokenRenderer(resolve_element(transcript), max_pending_chars)
        self.cards = ToolCards(resolve_element(tool_cards), max_tool_cards)
        self.audio = (
            AudioSink(assets_url, audio_mode, ring_capacity, prebuffer_ms, audio_context_rate) if audio else None
        )
        if self.audio is not None and playback_speed != 1.0:
            self.audio.set_speed(playback_speed)
        self._unlock: AudioUnlock | None = None
        self.audio_blocked = 0  # times playback waited for a user gesture to start the audio
        if self.audio is not None:
            self.audio.on_suspended = self._audio_suspended if audio_unlock else self._count_blocked
        self.executor = ToolExecutor(self.tools)
        self.approvals = ApprovalQueue(max_pending_approvals)
        self.approvals.on_change(self._on_approval_change)
        self._approval_callback: Callable[[ApprovalRequest], Any] | None = None
        self._dialog: ApprovalDialog | None = None  # made when the first call needs it
        self._asks: dict[str, asyncio.Task] = {}  # the page's approval callbacks still deciding
        self.mic = MicUplink(self._send, assets_url, self.codec, survives_loss=self._may_reconnect)
        self.transport: Any = None
        self.transport_name: str | None = None
        self._assets_url = assets_url
        self._batch_js: Any = None  # js/batch.js, imported with the first socket
        self._send_lock = asyncio.Lock()
        self._ready = asyncio.Event()
        self._pipe_owner = ProxyOwner()  # the demux transform: destroyed when the pipe ends
        self._listeners: list[Callable[[Event], Any]] = []
        self._tool_tasks: dict[str, asyncio.Task] = {}
        self._background: set[asyncio.Task] = set()
        self._cuts: set[asyncio.Task] = set()
        self._tool_slot = asyncio.Event()
        self._closed = asyncio.get_event_loop().create_future()
        self._inflight = 0  # bytes of the message whose events wait for a sink
        self._batch_left = 0  # bytes of the batch not handled yet
        # A run of messages that were text alone, not rendered yet: they go to the renderer as
        # one write, with one credit step (empty outside _receive_until_wait).
        self._text_run: list[TextDelta] = []
        self._text_run_bytes = 0
        self.batches_taken = 0  # batches of received messages handed to the client
        self.batches_waited = 0  # ... of which one had to wait for a sink (the rest took no asyncio hop)
        self._handling_s = 0.0  # main-thread time spent taking them (up to the first wait)
        self._drop_queue: Any = None  # classic: its receive queue (the frames it dropped are no gaps)
        self._drops_seen = 0
        self._first_message_at: float | None = None
        self._last_message_at: float | None = None
        self._buffered_max = 0
        self.text_deltas = 0
        self.tool_calls = 0
        self.tool_results_sent = 0
        self.tool_errors = 0
        self.tool_results_unsendable = 0
        self.tool_cancelled = 0
        self.tool_blocking_ms = 0.0  # main-thread time inside synchronous tools
        self.tool_blocking_ms_max = 0.0
        self.tool_over_timeout = 0  # sync tools that ran past their timeout (cannot be stopped)
        self.duplicate_calls = 0  # a call id reported again while its call ran or waited
        self.duplicate_interrupts = 0
        self.interruptions = 0
        self.turns = 0
        self.responses = 0
        self.server: dict[str, Any] = {}
        self.server_fields_ignored = 0
        self.session: dict[str, Any] = {}  # what the server said about the session (bounded)
        self.usage: dict[str, Any] = {}
        self.user_text: deque[str] = deque(maxlen=MAX_REMEMBERED_USER_TEXT)
        self._unsent: str | None = None
        self.server_errors: list[dict[str, str]] = []
        self.protocol_errors: list[str] = []
        self.internal_errors: list[str] = []
        self.close_info: dict[str, Any] | None = None
        self._gave_up: tuple[int | None, str] | None = None
        if expose_stats:
            self.expose_stats(expose_stats)

    # ------------------------------------------------------------------ public API

    @property
    def done(self) -> bool:
        """The server said it has nothing more to send (pyclient.v1's ``done``)."""
        return self.conn.done

    @property
    def peer_max_payload(self) -> int | None:
        return self.conn.peer_max_payload

    def tool(self, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Register a tool: ``@client.tool`` or ``@client.tool(name=..., timeout=...,
        needs_approval=True, approval_timeout=60)``; see ``ToolRegistry.register``."""
        return self.tools.register(fn, **options)

    def enable_audio(self) -> bool:
        """Resume audio playback; call it synchronously from a user gesture (a click handler)
        in browsers that require one (Safari). With ``audio_unlock=True`` (the default) the
        client shows its own "Click to enable audio" button when needed. Returns whether
        there was an audio context to resume."""
        return self.audio is not None and self.audio.resume() is not None

    def _count_blocked(self) -> None:
        self.audio_blocked += 1

    def _audio_suspended(self) -> None:
        """Playback is ready but the AudioContext waits for a user gesture: never silently."""
        self.audio_blocked += 1
        if self._unlock is not None:
            self._unlock.close()  # it belonged to an earlier context (a rate change)
        self._unlock = AudioUnlock(self.audio.player.ctx, self.enable_audio, anchor=self.renderer.element)

    def on_approval(self, callback: Callable[[ApprovalRequest], Any] | None) -> None:
        """Decide tool calls that need approval with the page's own UI instead of the
        built-in dialog. ``callback(request)`` gets an ``ApprovalRequest`` (``call_id``,
        ``name``, ``arguments``, ``timeout``) and either returns the decision (True or False,
        or an awaitable of one) or returns None and calls ``request.approve()`` /
        ``request.deny(reason)`` later. A callback that raises denies the call. None
        restores the built-in dialog for calls that arrive afterwards."""
        self._approval_callback = callback

    def on_event(self, callback: Callable[[Event], Any]) -> None:
        """Call ``callback(event)`` for every event after its sink accepted it."""
        self._listeners.append(callback)

    def expose_stats(self, name: str = "pyclientStats") -> None:
        """Make ``window[name]()`` return this client's stats as a plain JS object (the page
        has one such function: a newer client replaces an older one's)."""
        _stats_owner.close()
        setattr(js.window, name, _stats_owner.proxy(lambda *_: to_js_plain(self.stats())))

    async def connect(
        self, url: str | None = None, protocols: list[str] | None = None, *, token: str | TokenProvider | None = None
    ) -> Client:
        """Open the connection and start streaming; returns once the socket is open.

        ``url``: ``/ws?...`` (relative to the page) or ``ws(s)://...``; for OpenAI and Gemini
        it may be omitted (the provider's endpoint). ``token``: an ephemeral credential or a
        callable (sync or async) returning one, or a dict ``{"token", "url"}`` (a page's own
        token endpoint answers that way); it is asked again for every new connection.
        """
        if self.state != "idle":
            raise UsageError(f"connect() on a client in state {self.state!r}; make a new Client")
        self.state = "connecting"
        self._url_arg = url
        if token is not None:
            self._token = token
        try:
            token, url = await self._resolve_token(self._token, url)
            self.url = self._socket_url(token, url)
            self.transport_name = choose_transport(self.transport_preference)
            if protocols is None:
                # Credit is offered on every transport where the protocol has it, and the
                # server picks: on WebSocketStream TCP bounds what the page holds, credit also
                # bounds how far the server runs ahead (kernel buffers), which a barge-in would
                # otherwise have to read and drop.
                protocols = self.conn.subprotocols(token)
            self._protocols = protocols
            await self._open_socket(self.url)
        except Exception as exc:
            self.renderer.close()
            self._fail(str(exc))
            raise
        self.state = "open"
        opening = self._start_pipe()
        self._runner = asyncio.ensure_future(self._run())
        self._expiry = asyncio.ensure_future(self._expire_tool_calls())
        if self.heartbeat_s or self.idle_timeout_s:  # not a send the end waits for: its own task
            self._liveness = asyncio.ensure_future(self._watch_liveness())
        await self._send(lambda: opening, opening=True)
        self._opening_sent = True
        if self.conn.ready:
            self._ready.set()
        return self

    async def _open_socket(self, url: str) -> None:
        """Open one socket (the first, or the next one after a loss)."""
        opts = {k: self._options[k] for k in ("receive_queue_bytes", "send_high", "send_low")}
        if self._batch_js is None:
            self._batch_js = await import_module(self._assets_url + "batch.js")
        transport = make_transport(
            self.transport_name,
            self._batch_js,
            classify=self.codec.classify,
            audio_samples=self.codec.audio_samples,
            **opts,
        )
        try:
            await transport.open(url, self._protocols, early=await self._take_early(url))
        except BaseException:
            transport.dispose()  # a failed open must not leak its proxies
            raise
        self.transport = transport
        # Classic: numbered frames its queue dropped on purpose are no sequence gaps.
        self._drop_queue = getattr(transport, "queue", None) if hasattr(self.codec, "forgive") else None
        self._drops_seen = 0
        # The socket closed for good: calls waiting for a person can no longer be answered,
        # and a stream stalled on a full approval queue must not wait for a decision. (A
        # connection that will be resumed keeps them: the same session answers them.)
        transport.closed.add_done_callback(self._socket_closed)
        self.policy.opened()
        if self._renew_timer is not None:
            self._renew_timer.cancel()
        if self.session_renew_s and self.reconnect:
            self._renew_timer = asyncio.get_event_loop().call_later(self.session_renew_s, self._renew_due)

    async def _take_early(self, url: str) -> Any:
        """The socket the page opened for this session while Python booted (js/early.js), if
        it is the one this client would open now; every other early socket is closed."""
        if not getattr(js.globalThis, "pyclientEarly", None):
            return None
        early_js = await import_module(self._assets_url + "early.js")
        return early_js.takeEarly(url, to_js(self._protocols), self.transport_name)

    def _renew_due(self) -> None:
        """The session nears the protocol's maximum duration: move it to a new connection at
        the next turn boundary (OpenAI: a new session, the conversation replayed as text)."""
        self.renewals += 1
        self._go_away = True
        if self.codec.at_turn_boundary:
            self._switch_connection()

    def _socket_closed(self, closed: asyncio.Future) -> None:
        code, reason = closed.result() if not closed.cancelled() else (None, "")
        if not self._will_reconnect(code, reason):
            self.approvals.shut("the connection closed")

    def _start_pipe(self) -> list[Message]:
        """Pipe the socket through the demux; returns the protocol's opening messages."""
        self._link_no += 1
        self._opening_sent = False  # other sends wait for the opening messages to go first
        self._link_opened_at = time.monotonic()
        self._ping_at = None
        self._dead.clear()
        self._pipe_owner = ProxyOwner()  # this pipe's batch callback: destroyed when this pipe ends
        link = self._link_no
        self._pipe = self.transport.start(lambda messages, nbytes: self._take(messages, nbytes, link), self._pipe_owner)
        config = SessionConfig(
            tools=tuple(spec_for(t) for t in self.tools),
            model=self.session_config["model"],
            instructions=self.session_config["instructions"],
            voice=self.session_config["voice"],
            client={"transport": self.transport_name, "audio": {"mode": self.audio.mode if self.audio else None}},
        )
        opening = self.conn.opened(self.transport.protocol, config)
        if not self.conn.ready:
            self._spawn(self._watch_setup())
        return opening

    def _socket_url(self, token: str | None, url: str | None) -> str:
        """The protocol's socket URL for ``url`` (relative to the page, or the provider's
        default when None) with its credential."""
        return self.codec.url(absolute_ws_url(url) if url else "", token=token, model=self.session_config["model"])

    async def _resolve_token(self, token: Any, url: str | None) -> tuple[str | None, str | None]:
        if callable(token):
            token = token()
            if inspect.isawaitable(token):
                token = await token
        if isinstance(token, dict):
            url = url or token.get("url")
            token = token.get("token")
        if token is not None and not isinstance(token, str):
            raise UsageError(f"a token must be a string, got {type(token).__name__}")
        return token, url

    async def _watch_setup(self) -> None:
        """Protocols with a set-up step (Gemini): fail clearly if the server never accepts it."""
        try:
            await asyncio.wait_for(self._ready.wait(), self._options["setup_timeout"])
        except TimeoutError:
            self._remember(self.internal_errors, "the server did not accept the session set-up")
            self._setup_failed = True
            if self.transport is not None:
                self.transport.close(1000, "setup timed out")

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
        self._closing.set()
        self.conn.close_requested(by_page=True)
        await self.mic.abort()
        await self._close_socket(code, reason)
        if self.audio is not None:
            await self.audio.close()
        if self._unlock is not None:
            self._unlock.close()  # nothing is left to play
        try:
            await asyncio.wait_for(asyncio.shield(self._closed), 5)
        except TimeoutError:
            self._finish({"code": None, "reason": "close timed out"})

    async def interrupt(self) -> list[dict[str, Any]]:
        """Barge-in from the client: flush queued audio now and tell the server, per audio
        item, the exact playback position at the cut. Returns those reports."""
        return await self._cut(None, "client")

    async def send_text(self, text: str) -> None:
        """Typed user text (OpenAI: a user message and a response; Gemini: clientContent).
        While the client reconnects, it waits for the next connection."""
        if self.state not in ("open", "reconnecting"):
            raise UsageError(f"send_text() needs an open connection, not {self.state!r}")
        await self._send(lambda: self.codec.text(text))

    async def start_microphone(self) -> None:
        """Capture the microphone and stream it to the server in 20 ms frames, at the rate the
        protocol needs (OpenAI 24 kHz, Gemini 16 kHz; pyclient.v1: the device's)."""
        if self.state != "open":
            raise UsageError(f"start_microphone() needs an open connection, not {self.state!r}")
        await self.mic.start(self.codec.input_audio_rate)

    async def stop_microphone(self) -> dict[str, Any]:
        """Stop capturing; everything captured is sent, then the protocol's end of input."""
        return await self.mic.stop()

    async def _cut(self, item_id: Any, reason: str, pending: Any = None) -> list[dict[str, Any]]:
        if self.audio is None:
            return []
        if pending is None:
            pending = self.audio.request_interrupt(item_id, reason)
        positions = await self.audio.finish_interrupt(pending)
        if positions:
            try:
                await self._send(lambda: self.codec.cut(positions))
            except PyclientError as exc:
                self._remember(self.internal_errors, f"playback position not sent: {exc}")
        return [p.as_dict() for p in positions]

    def throttle_playback(self, factor: float) -> None:
        """Play audio at ``factor`` x real time (0 < factor <= 1) to simulate a slow device."""
        if self.audio is not None:
            self.audio.set_speed(factor)

    def stats(self) -> dict[str, Any]:
        wire = self.conn.stats()
        buffered = self.buffered_bytes()
        self._buffered_max = max(self._buffered_max, buffered)
        t = self.transport
        receive = t.receive_stats() if t is not None else {}
        audio = self.audio.stats() if self.audio is not None else {"mode": None}
        audio["blocked"] = self.audio_blocked  # times playback waited for a user gesture
        audio["unlock_shown"] = self._unlock is not None and self._unlock.shown
        by_kind = wire.get("frames_by_kind", {})
        return {
            "transport": self.transport_name,
            "state": self.state,
            "url": _redact(self.url),
            "protocol": t.protocol if t is not None else None,
            "wire": wire,
            "cross_origin_isolated": bool(getattr(js, "crossOriginIsolated", False)),
            "frames_in": wire.get("frames", self.conn.messages_in),
            "bytes_in": self.conn.bytes_in,
            "messages_in": self.conn.messages_in,
            "frames_by_kind": dict(by_kind),
            "text": {
                "frames": by_kind.get("text", self.text_deltas) if self.protocol == "pyclient" else self.text_deltas,
                "chars_rendered": self.renderer.chars_rendered,
                "pending_chars": self.renderer.pending_chars,
                "dom_appends": self.renderer.flushes,
                "waits": self.renderer.waits,
            },
            "user_text": list(self.user_text),
            "tools": {
                "calls": self.tool_calls,
                "results_sent": self.tool_results_sent,
                "errors": self.tool_errors,
                "unsendable": self.tool_results_unsendable,
                "cancelled": self.tool_cancelled,
                "running": len(self._tool_tasks),
                "open_calls": self._open_tool_calls(),
                "blocking_ms": round(self.tool_blocking_ms, 3),
                "blocking_ms_max": round(self.tool_blocking_ms_max, 3),
                "over_timeout": self.tool_over_timeout,
                "executed": self.executor.executed,
                "duplicate_calls": self.duplicate_calls,
                "results_resent": self.tool_results_resent,
                "cards": self.cards.count,
                **self.approvals.stats(),
                "registered": [tool["name"] for tool in self.tools.describe()],
            },
            "audio": audio,
            "mic": self.mic.stats(),
            "buffered_bytes": buffered,
            "buffered_bytes_max": max(self._buffered_max, receive.get("queued_bytes_max", 0)),
            "malformed": self.conn.malformed_count,
            "seq_gaps": wire.get("seq_gaps", 0),
            "interruptions": self.interruptions,
            "protocol_errors": list(self.protocol_errors),
            "send": t.send_stats.as_dict() if t is not None else {},
            "receive": {
                **receive,
                "batches_taken": self.batches_taken,
                "batches_waited": self.batches_waited,
                "handling_ms": round(self._handling_s * 1000, 3),
                "first_message_ms": None if self._first_message_at is None else self._first_message_at * 1000,
                "last_message_ms": None if self._last_message_at is None else self._last_message_at * 1000,
            },
            "credit": None
            if self.conn.credit is None
            else {
                "window": self.conn.credit.window,
                "granted": self.conn.credit.granted,
                "in_flight": self.conn.credit.in_flight,
            },
            "server": {
                **self.server,
                "turns": self.turns,
                "responses": self.responses,
                "done": self.done,
                "errors": list(self.server_errors),
                "fields_ignored": self.server_fields_ignored,
                "max_payload": self.peer_max_payload,
                "duplicate_interrupts": self.duplicate_interrupts,
            },
            "session": dict(self.session),
            "usage": dict(self.usage),
            "close": self.close_info,
            "reconnects": self.policy.reconnects,
            "connections": self.policy.stats()["connections"],
            "resumes": self.resumes,
            "renewals": self.renewals,
            "heartbeat": {"pings": self.pings_sent, "dead_links": self.dead_links},
            "rolled_back": {
                "turns": self.rolled_back_turns,
                "chars": self.renderer.rolled_back_chars,
                "discarded_after_switch": self.discarded_after_switch,
            },
            "error": self.error,
            "internal_errors": list(self.internal_errors),
            "memory": memory_stats(),
            "proxies": ProxyOwner.live,
            "background_tasks": len(self._background),
        }

    def _open_tool_calls(self) -> int:
        demux = getattr(self.codec, "demux", None)
        return demux.tools.open_calls if demux is not None else 0

    def buffered_bytes(self, in_js: bool = True) -> int:
        """Bytes held between the socket and the sinks right now (``in_js``: with what waits in
        the JS batching stage, one FFI read)."""
        queued = self.transport.queued_bytes(in_js) if self.transport is not None else 0
        return queued + max(0, self._batch_left) + self._inflight + self.renderer.pending_bytes

    # ------------------------------------------------------------------ pipeline

    def _take(self, messages: Any, nbytes: int, link: int) -> Awaitable[None] | None:
        """A batch of received messages (in order): handled now while every sink has room,
        with no asyncio hop; when one must wait, returns a task that finishes the batch (the
        transport delivers nothing more until it is done: backpressure). Never raises."""
        if link != self._link_no:
            _skip(messages)  # a socket given up for dead: its session goes on on another
            return None
        self._batch_left = nbytes
        # Nothing waits in the JS stage right now (it handed everything over): no FFI read.
        self._buffered_max = max(self._buffered_max, self.buffered_bytes(in_js=False))
        self.batches_taken += 1
        now = time.monotonic()
        if self._first_message_at is None:
            self._first_message_at = now
        self._last_message_at = now
        if self._link_heard != link:  # the first message on this socket: it works
            self._link_heard = link
            self.policy.confirmed()
        messages = iter(messages)
        waiting = self._receive_until_wait(messages)
        self._handling_s += time.monotonic() - now
        if waiting is None:
            self._batch_left = 0
            return None
        self.batches_waited += 1
        return asyncio.ensure_future(self._take_rest(waiting, messages, link))

    def _receive_until_wait(self, messages: Any) -> Awaitable[None] | None:
        """Take messages from the iterator until one must wait; returns that wait (the rest of
        the iterator stays for after it), or None when all were taken."""
        for message in messages:
            waiting = self._receive(message)
            if waiting is not None:
                return waiting  # (a run of text before it went first)
        if not self._text_run:
            return None
        try:
            return self._flush_run()
        except Exception as exc:
            self._remember(self.internal_errors, f"{type(exc).__name__}: {exc}")
            return None

    async def _take_rest(self, waiting: Awaitable[None] | None, messages: Any, link: int) -> None:
        while waiting is not None:
            await self._guarded(waiting)
            if link != self._link_no:
                _skip(messages)  # given up for dead meanwhile
                break
            waiting = self._receive_until_wait(messages)
        self._last_message_at = time.monotonic()
        self._buffered_max = max(self._buffered_max, self.buffered_bytes())
        self._batch_left = 0

    async def _guarded(self, waiting: Awaitable[None]) -> None:
        try:
            await waiting
        except Exception as exc:
            self._remember(self.internal_errors, f"{type(exc).__name__}: {exc}")
        finally:
            self._inflight = 0

    def _receive(self, message: Any) -> Awaitable[None] | None:
        """One message: its events go to their sinks now when they have room; returns what
        must still be awaited (a full sink, a send, a control event), or None."""
        try:
            n = len(message)
            self._batch_left -= n
            if self._switching:
                # Past the handle we resume from: the new connection sends all of it again.
                self.discarded_after_switch += 1
                return None
            queue = self._drop_queue
            if queue is not None and queue.dropped_frames != self._drops_seen:
                self._drops_seen = queue.dropped_frames
                self.codec.forgive(queue.take_dropped_seqs())  # dropped on purpose: no gaps
            conn = self.conn
            events = conn.receive(message, n)
            if len(events) == 1 and type(events[0]) is TextDelta and not conn.outgoing and self._ready.is_set():
                # Text alone (most of a chat stream): rendered with the run it belongs to.
                self._text_run.append(events[0])  # type: ignore[arg-type]
                self._text_run_bytes += n
                return None
            if self._text_run:
                held = self._text_run_bytes
                waiting = self._flush_run()
                if waiting is not None:
                    return self._receive_slowly(events, 0, n, waiting=waiting, held=held)
            if not self._ready.is_set() and self._opening_sent and conn.ready:
                return self._receive_slowly(events, 0, n, becomes_ready=True)
            for i, event in enumerate(events):
                waiting = self._dispatch_now(event)
                if waiting is not None:
                    self._inflight = n
                    return self._receive_slowly(events, i + 1, n, waiting=waiting)
            return self._after_message(n)
        except Exception as exc:
            self._remember(self.internal_errors, f"{type(exc).__name__}: {exc}")
            return None

    async def _receive_slowly(
        self,
        events: list[Event],
        start: int,
        n: int,
        waiting: Awaitable[None] | None = None,
        becomes_ready: bool = False,
        held: int = 0,
    ) -> None:
        self._inflight = n + held  # held: bytes of a run of text that waits before this message
        if becomes_ready:
            # Set up now (Gemini's setupComplete): what the protocol sends at once (the user
            # turns a resumed session needs again) goes before the sends that waited.
            await self._open_up()
        if waiting is not None:
            await waiting
        for event in events[start:]:
            await self._dispatch(event)
        self._inflight = 0
        after = self._after_message(n)
        if after is not None:
            await after

    def _flush_run(self) -> Awaitable[None] | None:
        """The run of text messages to the renderer as one write (and to listeners, delta by
        delta), credit for all of it; returns what must still be awaited (a full renderer)."""
        run, n = self._text_run, self._text_run_bytes
        self._text_run, self._text_run_bytes = [], 0
        text = run[0].text if len(run) == 1 else "".join([e.text for e in run])
        self.text_deltas += len(run)
        if not self.renderer.write_now(text):
            self._inflight = n
            return self._write_run(text, run, n)
        if self._listeners:
            for event in run:
                self._notify(event)
        return self._after_message(n)

    async def _write_run(self, text: str, run: list[TextDelta], n: int) -> None:
        await self.renderer.write(text)
        for event in run:
            self._notify(event)
        after = self._after_message(n)
        if after is not None:
            await after

    def _after_message(self, n: int) -> Awaitable[None] | None:
        """The protocol's own messages due after one received message, and credit for it."""
        # Set up before the opening went out: _send_opening sends these first, then opens up.
        outgoing = [] if not self._ready.is_set() and self.conn.ready else self.conn.take_outgoing()
        grants = self.conn.consumed(n) if self.conn.credit is not None else []
        if not outgoing and not (grants and self.state == "open"):
            return None
        return self._send_after(outgoing, grants)

    async def _send_after(self, outgoing: list[Message], grants: list[Message]) -> None:
        if outgoing:
            await self._send(lambda: outgoing)
        if grants and self.state == "open":
            await self._send(lambda: grants, opening=True)

    def _dispatch_now(self, event: Event) -> Awaitable[None] | None:
        """Text and audio go to a sink with room at once; anything else, or a full sink,
        returns the awaitable that finishes the job."""
        channel = event.channel
        if channel is Channel.TEXT:
            assert isinstance(event, TextDelta)
            if not self.renderer.write_now(event.text):
                return self._dispatch(event)
            self.text_deltas += 1
        elif channel is Channel.AUDIO:
            assert isinstance(event, AudioChunk)
            rest = self.audio.write_now(event) if self.audio is not None else None
            if rest is not None:
                return self._notify_after(rest, event)
        else:
            return self._dispatch(event)
        self._notify(event)
        return None

    async def _notify_after(self, rest: Awaitable[None], event: Event) -> None:
        await rest
        self._notify(event)

    def _notify(self, event: Event) -> None:
        """Tell the page's listeners (events of the stream, and the client's own: reconnects)."""
        for listener in self._listeners:
            try:
                listener(event)
            except Exception as exc:
                self._remember(self.internal_errors, f"event listener failed: {exc!r}")

    async def _dispatch(self, event: Event) -> None:
        channel = event.channel
        if channel is Channel.AUDIO:
            assert isinstance(event, AudioChunk)
            if self.audio is not None:
                await self.audio.write(event)
        elif channel is Channel.TEXT:
            assert isinstance(event, TextDelta)
            self.text_deltas += 1
            await self.renderer.write(event.text)
        elif channel is Channel.TOOLS:
            await self._on_tool_event(event)
        else:
            await self._on_control(event)
            if self.codec.is_resume_point(event):
                self.renderer.mark()  # a session resumed after a loss goes on from here
                if self.audio is not None:
                    self.audio.mark()
                if self._go_away and self.reconnect:
                    self._switch_connection()  # announced end (goAway, renewal): switch now
        self._notify(event)

    async def _on_tool_event(self, event: Event) -> None:
        if isinstance(event, ToolCallStarted):
            self.cards.started(event.call_id, event.name)
        elif isinstance(event, ToolCallArgumentsDelta):
            self.cards.arguments(event.call_id, event.delta)
        elif isinstance(event, ToolCallCancelled):
            for call_id in event.call_ids:
                task = self._tool_tasks.get(call_id)
                if task is not None and not task.done():
                    # Possibly before it even started: then its body never runs.
                    task.cancel()
                    self.tool_cancelled += 1
                self.approvals.cancel(call_id)  # waiting for a person: it leaves the queue now
                self.cards.cancelled(call_id)  # only a card still running says so
        elif isinstance(event, (ToolCallReady, ToolCallInvalid)):
            if event.call_id in self._tool_tasks:
                self.duplicate_calls += 1  # the same id again while it runs or waits: one answer
                return
            answered = self._answered.get(event.call_id)
            if answered is None and event.call_id in self._forgotten:
                message = "answered before a reconnect; the result is no longer kept"
                error = {"type": "already_answered", "message": message}
                answered = ToolOutcome(event.call_id, getattr(event, "name", None), ok=False, error=error)
            if answered is not None:
                # Sent again by a resumed session (the turn a lost connection cut short): it
                # never runs twice; the server gets the same answer again.
                self.duplicate_calls += 1
                self.tool_results_resent += 1
                self._spawn(self._send_quietly(lambda: self.codec.tool_result(answered)))
                return
            self.tool_calls += 1
            request = None
            if isinstance(event, ToolCallReady) and self._needs_approval(event):
                # Waiting for a person never stalls the stream; only a full queue does.
                if not await self.approvals.wait_for_room():
                    return  # the connection ended while the stream waited: nobody to answer
                self.cards.awaiting(event.call_id, event.name)
                request = self.approvals.add(event, self.tools.get(event.name).approval_timeout)
            else:
                # Bounded: at most max_pending_tools calls run at once; the stream waits for a slot.
                while len(self._tool_tasks) - len(self.approvals) >= self._options["max_pending_tools"]:
                    self._tool_slot.clear()
                    await self._tool_slot.wait()
            task = asyncio.ensure_future(self._run_tool(event, request))
            self._tool_tasks[event.call_id] = task
            task.add_done_callback(lambda _t, call_id=event.call_id: self._tool_done(call_id))

    def _remember_answer(self, outcome: ToolOutcome) -> None:
        """Keep an answer to give again if a resumed server asks (bounded in count and bytes:
        past them the oldest go; a call asked again after that gets a structured error)."""
        payload = outcome.result if outcome.ok else outcome.error
        try:
            size = len(json.dumps(payload, default=str))
        except (TypeError, ValueError, RecursionError):
            size = MAX_REMEMBERED_RESULT_BYTES
        self._answered[outcome.call_id] = outcome
        self._answered_bytes[outcome.call_id] = size
        self._answered_total += size
        while self._answered and (
            len(self._answered) > MAX_REMEMBERED_RESULTS or self._answered_total > MAX_REMEMBERED_RESULT_BYTES
        ):
            oldest = next(iter(self._answered))
            del self._answered[oldest]
            self._answered_total -= self._answered_bytes.pop(oldest)
            self._forgotten[oldest] = None
            while len(self._forgotten) > MAX_REMEMBERED_RESULTS * 4:
                del self._forgotten[next(iter(self._forgotten))]

    def _tool_done(self, call_id: str) -> None:
        self._tool_tasks.pop(call_id, None)
        self._tool_slot.set()

    def _needs_approval(self, call: ToolCallReady) -> bool:
        """Ask a person only for a call that could run: one that would fail anyway (unknown
        tool, arguments that do not fit) is answered at once."""
        tool = self.tools.get(call.name)
        if tool is None or tool.needs_approval is False:
            return False
        return _policy_says(tool.needs_approval, call) and self.executor.check(call) is None

    def _on_approval_change(self, request: ApprovalRequest) -> None:
        """A request was added (show it: the page's callback or the built-in dialog) or
        decided (the dialog lets it go)."""
        if not request.pending:
            if self._dialog is not None:
                self._dialog.remove(request)
            asking = self._asks.pop(request.call_id, None)
            if asking is not None and not asking.done() and asking is not asyncio.current_task():
                asking.cancel()  # decided otherwise (timeout, withdrawn, ended): stop waiting on the page
            return
        if self._approval_callback is None:
            if self._dialog is None:
                self._dialog = ApprovalDialog(self.approvals, anchor=self.cards.container)
            self._dialog.add(request)
            return
        task = asyncio.ensure_future(ask(request, self._approval_callback))
        if not task.done():
            self._asks[request.call_id] = task

    async def _run_tool(self, call: ToolCallReady | ToolCallInvalid, request: ApprovalRequest | None = None) -> None:
        # The executor checks that the result encodes, and fits what the server accepts;
        # otherwise the server gets a structured error result instead (never nothing).
        try:
            if request is None:
                outcome: ToolOutcome = await self.executor.execute(call, max_payload=self.peer_max_payload)
            else:
                decision = await self.approvals.decision(request)
                if decision == CANCELLED:  # the connection ended while it waited
                    self.cards.cancelled(call.call_id, why=request.reason)
                    return
                if decision == APPROVED:
                    self.cards.approved(call.call_id)
                    outcome = await self.executor.execute(call, max_payload=self.peer_max_payload)
                else:  # denied, or nobody decided in time: nothing runs, the server is told why
                    outcome = self.executor.refused(call, request.error() or {})
        except asyncio.CancelledError:
            return  # the server withdrew the call (Gemini toolCallCancellation): no result is sent
        if not outcome.ok:
            self.tool_errors += 1
        if outcome.blocking_ms:
            self.tool_blocking_ms += outcome.blocking_ms
            self.tool_blocking_ms_max = max(self.tool_blocking_ms_max, outcome.blocking_ms)
        if outcome.over_timeout:
            self.tool_over_timeout += 1
        payload = outcome.result if outcome.ok else outcome.error
        self.cards.finished(outcome, payload)
        self._remember_answer(outcome)
        try:
            if await self._send(lambda: self.codec.tool_result(outcome)):
                self.tool_results_sent += 1
            else:  # the protocol sends nothing for it: the server cancelled it meanwhile
                self.tool_cancelled += 1
                self.cards.cancelled(outcome.call_id, ran=True)
        except PyclientError as exc:
            self.tool_results_unsendable += 1
            self._remember(self.internal_errors, f"tool result for {outcome.call_id!r} not sent: {exc}")

    async def _on_control(self, event: Event) -> None:
        if isinstance(event, ServerHello):
            # Bounded: at most MAX_SERVER_FIELDS keys of at most MAX_SERVER_FIELD_BYTES each.
            for key, value in event.fields.items():
                known = key in self.server
                if (known or len(self.server) < MAX_SERVER_FIELDS) and _small_json(value):
                    self.server[key] = value
                else:
                    self.server_fields_ignored += 1
        elif isinstance(event, TurnEnded):
            self.turns += 1
        elif isinstance(event, ResponseDone):
            self.responses += 1
        elif isinstance(event, Interrupted):
            await self._on_interrupted(event)
        elif isinstance(event, ServerError):
            self._remember(self.server_errors, {"code": event.code, "message": event.message})
            if event.code == "session_expired":  # OpenAI's limit: the close that follows is not final
                self._go_away = True
        elif isinstance(event, StreamDone):
            # The client closes, not the server (docs/PROTOCOL.md, "Ending a session"):
            # Chromium's WebSocketStream drops unread messages when the server closes first.
            # Audio already queued keeps playing. A second 'done' changes nothing.
            if not getattr(self, "_draining", False):
                self._draining = True
                self._spawn(self._close_after_done())
        elif isinstance(event, UserTranscript):
            self.user_text.append(event.text[:MAX_SERVER_FIELD_BYTES])
        elif isinstance(event, UsageReport):
            if _small_json(event.fields):
                self.usage[event.kind] = event.fields
        elif isinstance(event, SessionReady):
            self.session["ready"] = True
        elif isinstance(event, GoAway):
            self.session["goaway_time_left_ms"] = event.time_left_ms
            self.session["goaways"] = self.session.get("goaways", 0) + 1
            self._go_away = True
            if self.reconnect and self.codec.at_turn_boundary and self.codec.resume_url(self.url or "") is not None:
                self._switch_connection()  # between turns: switch now; else at the turn's end
        elif isinstance(event, ResumptionUpdate):
            self.session["resumable"] = event.resumable
            if event.resumable and event.handle is not None and len(event.handle) <= MAX_SERVER_FIELD_BYTES:
                self.session["resumption_handle"] = event.handle

        elif isinstance(event, SessionResumed):
            self.resumes += 1
            conn_id = event.fields.get("connection_id")
            if isinstance(conn_id, int) and not isinstance(conn_id, bool):
                self.server["connection_id"] = conn_id  # a restarted server gives the session a new id
            await self._answer_again(event.fields.get("awaiting"))
        elif isinstance(event, ProtocolErrorEvent):
            self._remember(self.protocol_errors, event.reason)

    async def _answer_again(self, awaiting: Any) -> None:
        """A resumed server still waits for these calls: results sent on the lost socket may
        not have arrived. Answered ones are sent again (the server takes each call's first
        result: idempotent by call_id); running ones answer when they finish; none runs twice."""
        if not isinstance(awaiting, list):
            return
        for call_id in awaiting[:MAX_REMEMBERED_RESULTS]:
            outcome = self._answered.get(call_id) if isinstance(call_id, str) else None
            if outcome is not None:
                self.tool_results_resent += 1
                self._spawn(self._send_quietly(lambda outcome=outcome: self.codec.tool_result(outcome)))

    async def _on_interrupted(self, event: Interrupted) -> None:
        self.interruptions += 1
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
        expire = getattr(self.codec, "expire", None)
        if expire is None:
            return
        while True:
            await asyncio.sleep(TOOL_EXPIRY_CHECK_S)
            for event in expire():
                await self._dispatch(event)

    def _spawn(self, coro: Any) -> asyncio.Task:
        """Run ``coro`` in the background, keeping a reference until it is done."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _close_after_done(self) -> None:
        """After 'done': send everything still owed (tool results, playback reports, the
        microphone's tail and its end of input), wait for the socket to take it, then close.
        Bounded by ``drain_timeout``; past it, close anyway and say what was not sent."""
        try:
            await asyncio.wait_for(self._send_owed(), self._options["drain_timeout"])
        except TimeoutError:
            self._unsent = self._owed_summary()
        self.conn.close_requested(by_page=False)
        await self._close_socket(1000, "done")

    async def _send_owed(self) -> None:
        if self.mic.active:
            try:
                await self.mic.stop()
            except PyclientError as exc:
                self._remember(self.internal_errors, f"microphone end not sent: {exc}")
        me = asyncio.current_task()
        while pending := [t for t in (*self._tool_tasks.values(), *self._background) if t is not me]:
            await asyncio.wait(pending)
        await self.transport.drain()

    def _owed_summary(self) -> str:
        me = asyncio.current_task()
        parts = []
        if self._tool_tasks:
            waiting = f" ({len(self.approvals)} awaiting approval)" if len(self.approvals) else ""
            parts.append(f"{len(self._tool_tasks)} tool result(s){waiting}")
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

    async def _send(self, build: Callable[[], list[Message]], *, opening: bool = False) -> int:
        """Send the messages ``build()`` makes; returns how many. One sender at a time, and
        ``build`` runs inside the lock, so numbered frames go out in the order they were
        numbered. Until the server accepted the session set-up (Gemini), only the opening
        messages go; other sends wait for it."""
        if not opening and not self._ready.is_set():
            await self._wait_ready()
        async with self._send_lock:
            messages = build()
            if messages and self.transport is None:
                raise TransportError("cannot send: not connected")
            for message in messages:
                await self.transport.send(message)
            return len(messages)

    async def _wait_ready(self) -> None:
        """Until the connection takes sends (set up, or back after a loss); raises if the
        session ends first (a reconnect given up, the page closed it): nothing waits forever."""
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait({ready, self._closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not self._ready.is_set():
            raise TransportError("cannot send: the session ended")

    def _may_reconnect(self) -> bool:
        """A lost socket may be followed by another (the page did not close the client)."""
        return bool(self.reconnect) and self.state in ("open", "reconnecting") and not self._closing.is_set()

    def _will_reconnect(self, code: int | None, reason: str) -> bool:
        """Whether a socket that ended with ``code``/``reason`` is followed by another: the
        page did not close it, the server did not finish, the policy says the loss is worth a
        retry, and the protocol can continue the session (pyclient.v1: a resume token)."""
        if not self.reconnect or self.state not in ("open", "reconnecting") or self.conn.done:
            return False
        if getattr(self, "_setup_failed", False) or self.url is None:
            return False
        go_away = self._go_away or self._switching or self.codec.ended_by_limit(code, reason)
        return classify(code, reason, go_away=go_away)[0] == RETRY and self.codec.resume_url(self.url) is not None

    async def _pipe_ended(self, pipe: Any, owner: ProxyOwner) -> str | None:
        try:
            await pipe
            return None
        except Exception as exc:  # JsException (WebSocketStream's pipe), or the classic pump's
            return f"stream failed: {exc}"
        finally:
            owner.close()  # the pipe will not call the transform again

    async def _run(self) -> None:
        while True:
            pipe = asyncio.ensure_future(self._pipe_ended(self._pipe, self._pipe_owner))
            dead = asyncio.ensure_future(self._dead.wait())
            await asyncio.wait({pipe, dead}, return_when=asyncio.FIRST_COMPLETED)
            dead.cancel()
            if pipe.done():
                error = pipe.result()
                code, reason = await self.transport.closed
            else:  # half-open: no close will come; the old pipe ends on its own (its messages are ignored)
                self._link_no += 1  # from now on: its late messages must not move the resume point
                self._dead_pipe = pipe
                self.transport.abandon(self._dead_reason)
                for task in list(self._pings):
                    task.cancel()
                error, (code, reason) = None, await self.transport.closed
            if code == RESUME_FAILED and self.policy.reconnects:
                self._notify(ResumeFailed(reason or "the server cannot resume the session"))
            # A stream error that comes with a lost socket is that loss (WebSocketStream's
            # readable errors when the connection drops): the socket's code decides.
            if not self._will_reconnect(code, reason) or not await self._reconnect(code, reason):
                break
        self._expiry.cancel()
        if self._liveness is not None:
            self._liveness.cancel()
        await self.mic.abort()  # whatever ended the stream, the device is released now
        self.approvals.shut("the connection ended")  # nobody is left to answer
        for event in self.conn.finish():
            if isinstance(event, TextDelta):
                await self.renderer.write(event.text)
        self.renderer.flush_now()
        code, reason = await self.transport.closed
        if self._gave_up is not None:
            code, reason = self._gave_up
        if self._tool_tasks:
            await asyncio.wait(list(self._tool_tasks.values()), timeout=5)
        if getattr(self, "_setup_failed", False) and error is None:
            error = f"the server did not accept the session set-up within {self._options['setup_timeout']:g} s"
        if self._gave_up is not None and error is None and code != 1000:
            error = self._gave_up[1]
        self._finish({"code": code, "reason": reason}, error=error)

    async def _reconnect(self, code: int | None, reason: str) -> bool:
        """The socket was lost mid-session: open another that resumes it. Returns False when
        the policy gives up or the page closed meanwhile (then the session ends)."""
        go_away = self._go_away or self._switching or self.codec.ended_by_limit(code, reason)
        self.policy.closed(code, reason, go_away=go_away)
        self.state = "reconnecting"
        self._ready.clear()  # sends wait for the next socket: nothing goes into a dead one
        self._lost_at = time.monotonic()
        self.mic.paused = True
        await self._take_back_lost_turn()
        while True:
            delay = self.policy.next_delay(immediate=go_away and self.policy.attempts == 0)
            if delay is None:
                why = f"gave up reconnecting after {self.policy.max_attempts} attempts"
                self._gave_up = (code, f"connection lost ({'code ' + str(code) if code else 'no code'}); {why}")
                return False
            self._notify(Reconnecting(self.policy.attempts, round(delay, 3), code, reason))
            with contextlib.suppress(TimeoutError):  # close() ends the wait at once
                await asyncio.wait_for(self._closing.wait(), delay)
            if self.state != "reconnecting":
                self._gave_up = (1000, "client closed while reconnecting")  # the page closed it meanwhile
                return False
            try:
                # The token provider is asked again for every socket: tokens are single-use or short-lived.
                token, url = await self._resolve_token(self._token, self._url_arg)
                self.url = self._socket_url(token, url)
                self._protocols = self.conn.subprotocols(token)
                resume_url = self.codec.resume_url(self.url)
                if resume_url is None:
                    raise TransportError("the session can no longer be resumed")
                self._dispose_when_piped(self.transport)
                await asyncio.wait_for(self._open_socket(resume_url), self._options["setup_timeout"])
            except Exception as exc:
                code, reason = None, f"could not open: {exc or type(exc).__name__}"
                self.policy.closed(code, reason)
                continue
            if self.state != "reconnecting":  # the page closed the client while the socket opened
                self.transport.close(1000, "client closed")
                self._gave_up = (1000, "client closed while reconnecting")
                return False
            break
        self.conn = Connection(self.codec, credit=self._credit, credit_window=self._options["credit_window"])
        self._go_away = self._switching = False
        self.state = "open"
        self.mic.paused = False
        self._notify(Reconnected(self.policy.reconnects, round(time.monotonic() - self._lost_at, 3)))
        opening = self._start_pipe()
        # Not awaited here: a socket lost again at once (or refused, 4410) must not hold the
        # loop that notices it.
        self._spawn(self._send_opening(opening))
        return True

    async def _send_opening(self, opening: list[Message]) -> None:
        """The protocol's opening messages first; only then may waiting sends go (a result
        finished during the gap must not precede OpenAI's replay and session.update, nor a
        numbered frame go before pyclient.v1's hello)."""
        try:
            await self._send(lambda: opening, opening=True)
            self._opening_sent = True
            if self.conn.ready and not self._ready.is_set():
                await self._open_up()  # set up while the opening went out
        except PyclientError as exc:
            self._remember(self.internal_errors, f"opening messages not sent: {exc}")

    async def _open_up(self) -> None:
        """The session is set up: what the protocol sends first goes first, then every send
        waiting for the session may go."""
        outgoing = self.conn.take_outgoing()
        if outgoing:
            await self._send(lambda: outgoing, opening=True)
        self._ready.set()

    async def _take_back_lost_turn(self) -> None:
        """A protocol that resumes at a turn boundary (Gemini) sends the turn the loss cut
        short again from its start: its text goes from the transcript and its queued audio
        from the ring, so nothing is shown or heard twice. (pyclient.v1 replays exactly what
        was not consumed: nothing to take back.)"""
        cut_short = not self.codec.at_turn_boundary
        self.codec.link_lost()
        if self.codec.resumes_exactly or not cut_short:
            return  # between turns (a goAway switch): queued audio of finished turns plays on
        taken = self.renderer.rollback()
        if taken:
            self.rolled_back_turns += 1
        if taken < 0:
            self._remember(self.internal_errors, "a turn cut by a lost connection could not be taken back")
        if self.audio is not None:
            # Only the cut turn's audio goes: the finished turns queued before it play out
            # first (the worklet drops the rest when it gets there; not awaited: the next
            # socket need not wait for that).
            pending = self.audio.request_interrupt(None, "reconnect", keep_marked=True)
            if pending is not None:
                self._spawn(self.audio.finish_interrupt(pending))

    def _switch_connection(self) -> None:
        """After goAway, at a turn boundary: close this socket to resume on a new one (Gemini
        refuses a resume while the old socket is still open)."""
        if self._switching or self.state != "open" or self.transport is None:
            return
        self._switching = True
        self._spawn(self._close_socket(1000, self.codec.switch_reason))

    async def _close_socket(self, code: int, reason: str) -> None:
        """Close the socket between two sends, never during one: a credit grant or a result
        written while the closing handshake starts crashed Chromium's renderer (WebSocketStream).
        A send stuck on backpressure does not hold the close for more than a second."""
        transport = self.transport
        if transport is None:
            return
        try:
            await asyncio.wait_for(self._send_lock.acquire(), CLOSE_LOCK_WAIT_S)
        except TimeoutError:
            transport.close(code, reason)
            return
        try:
            transport.close(code, reason)
        finally:
            self._send_lock.release()

    def _dispose_when_piped(self, transport: Any) -> None:
        """Free a lost socket's callbacks once its pipe no longer calls them (a socket given up
        for dead may still be piping)."""
        pipe, self._dead_pipe = self._dead_pipe, None
        if pipe is None or pipe.done():
            transport.dispose()
        else:
            pipe.add_done_callback(lambda _: transport.dispose())

    async def _watch_liveness(self) -> None:
        """Half-open sockets never close: while the client is ready to read (no message in its
        sinks), silence longer than ``idle_timeout_s``, or a ping unanswered for
        ``heartbeat_s``, gives the socket up as dead (then the session resumes on a new one)."""
        period = min(x for x in (self.heartbeat_s, self.idle_timeout_s) if x) / 4
        while not self._closed.done():
            await asyncio.sleep(period)
            if self.state != "open" or self._switching or self._dead.is_set() or self._inflight:
                continue
            now = time.monotonic()
            # Classic: a batch JavaScript handed over is heard, even while the client is busy
            # with earlier ones (they wait in the queue, not in the socket).
            arrived = getattr(self.transport, "last_arrival", 0.0)
            heard = max(self._last_message_at or 0.0, self._link_opened_at, arrived)
            if self.idle_timeout_s and now - heard >= self.idle_timeout_s:
                self._give_up_link(f"nothing received for {self.idle_timeout_s:g} s")
            elif self.heartbeat_s and self._ping_at is not None and heard < self._ping_at:
                if now - self._ping_at >= self.heartbeat_s:
                    self._give_up_link(f"no answer to a ping within {self.heartbeat_s:g} s")
            elif self.heartbeat_s and now - heard >= self.heartbeat_s:
                self._ping_at = now
                self.pings_sent += 1
                task = asyncio.ensure_future(self._send_quietly(lambda: self.codec.ping(self.pings_sent)))
                self._pings.add(task)
                task.add_done_callback(self._pings.discard)

    async def _send_quietly(self, build: Callable[[], list[Message]]) -> None:
        try:
            await self._send(build)
        except PyclientError as exc:
            self._remember(self.internal_errors, f"not sent: {exc}")

    def _give_up_link(self, why: str) -> None:
        self.dead_links += 1
        self._dead_reason = f"connection given up for dead: {why}"
        self._dead.set()

    def _finish(self, info: dict[str, Any], error: str | None = None) -> None:
        """End the session with the connection core's verdict (``closed`` or ``error``)."""
        if self._closed.done():
            return
        if self._renew_timer is not None:
            self._renew_timer.cancel()
        self.close_info = info
        error = self.conn.verdict(info["code"], info["reason"], error=error, unsent=self._unsent)
        if error is None:
            self.state = "closed"
        else:
            self._fail(error)
        self.renderer.close()
        self.approvals.shut("the connection ended")
        if self._dialog is not None:
            self._dialog.close()
            self._dialog = None
        if self.transport is not None:
            self.transport.dispose()
        if not self._closed.done():
            self._closed.set_result(info)

    def _fail(self, message: str) -> None:
        self.state = "error"
        self.error = message
        if self.conn.state is not State.ERROR:
            self.conn.state = State.ERROR
        self.close_info = self.close_info or {"code": None, "reason": message}
        if not self._closed.done():
            self._closed.set_result(self.close_info)

    @staticmethod
    def _remember(bucket: list[Any], item: Any) -> None:
        bucket.append(item)
        del bucket[:-MAX_REMEMBERED_ERRORS]


def _skip(messages: Any) -> None:
    """Use up a batch's messages unread (the classic transport's queue hands them out as they
    are taken)."""
    for _ in messages:
        pass


def _redact(url: str | None) -> str | None:
    """A URL for stats and logs: credentials in the query string are not shown."""
    if not url or "?" not in url:
        return url
    base, _, query = url.partition("?")
    parts = []
    for part in query.split("&"):
        key = part.split("=", 1)[0]
        parts.append(f"{key}=…" if key in ("key", "access_token", "token", "resume") else part)
    return base + "?" + "&".join(parts)
