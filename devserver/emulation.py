"""Emulated AI-provider sockets: what the OpenAI Realtime and Gemini Live emulations share.

Theory of operation. A scenario (devserver/scenarios.py) is a coroutine that calls a small set of
*steps* on its session: ``text(str | bytes)``, ``audio(pcm, sample_rate=, item_id=, final=)``,
``tool_call(name, arguments, expect)``, ``control("end_of_turn" | "interrupted" | "error", ...)``,
plus ``cut_items`` (the items the client cut: stop sending them), ``pause_reading()`` /
``resume_reading()``, ``wait_mic_end()`` and ``stats``. ``devserver.session.Session`` renders
those steps as pyclient.v1 frames (``/ws``, unchanged); an ``EmulatedSession`` subclass renders
the *same* steps as a provider's messages, so one seeded scenario produces the same words, the
same PCM samples and the same tool calls (hence the same ``text_sha256``, ``audio_checksum``
and tool expectations in ``/stats``) on every protocol:

===============  ==========================================  ==========================================
step             OpenAI Realtime (openai_realtime.py)        Gemini Live (gemini_live.py)
===============  ==========================================  ==========================================
text             ``response.output_text.delta`` (text         ``modelTurn.parts[].text`` (text scenarios)
                 scenarios) or ``..._audio_transcript.delta`` or ``outputTranscription`` (audio scenarios)
                 (audio scenarios)
audio            ``response.output_audio.delta``, 20 ms each  ``inlineData`` ``audio/pcm;rate=N``, 20 ms
tool_call        a ``function_call`` item, arguments          a whole ``toolCall.functionCalls[]``
                 streamed in 3 fragments
end_of_turn      ``response.done`` (+ ``rate_limits.updated``) ``generationComplete``, ``turnComplete``
                                                              + ``usageMetadata``
interrupted      server VAD: ``speech_started``, the          ``serverContent.interrupted``
                 response is cancelled
===============  ==========================================  ==========================================

Which scenarios answer in audio: ``voice`` and ``flood`` (``AUDIO_SCENARIOS``); the others answer
in text. ``faults`` has a version per protocol (its faults are the protocol's own); ``hostile``
is pyclient.v1 only.

Concurrency: two tasks use a session, the scenario (steps, then ``finish`` and ``linger``) and
the receive loop (client messages, some of which the server answers at once: an ``error``, a
``session.updated``, a cancelled response). Every send goes through ``lock`` so that the two
never interleave inside one protocol exchange; nothing waits for the client while holding it.

A client mistake is recorded in ``/stats`` ``errors`` and answered as the provider would
(OpenAI: an ``error`` event, the session goes on; Gemini: the socket is closed with 1007).
Memory bounds: per connection, ``KEEP`` entries in each list the emulation records, client
values summarised (``stats.summarise``), ``MAX_ITEMS`` items and calls remembered.
"""

from __future__ import annotations

import array
import asyncio
import codecs
import contextlib
import hmac
import json
import logging
import math
import operator
import secrets
import socket
import sys
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aiohttp import WSCloseCode, WSMsgType, web

from pyclient.frames import ToolResultFrame

from .scenarios import SCENARIOS, ParamError, Params
from .secret import sign
from .security import AccessPolicy, text_error
from .session import ClosedEarly, Session, close_first
from .stats import KEEP_CONTROLS, ConnectionStats, StatsRegistry, clip
from .tokens import MintedToken, TokenStore, origin_refusal, redact_query

log = logging.getLogger("pyclient.devserver")

AUDIO_SCENARIOS = frozenset({"voice", "flood"})
EMULATED_SCENARIOS = ("chat", "voice", "flood", "faults", "upload")
KEEP = KEEP_CONTROLS  # entries kept in each list an emulation records
MAX_ITEMS = 4096  # items / calls / handles remembered per connection
MAX_CLIENT_MESSAGE = 16 * 1024 * 1024  # OpenAI accepts input_audio_buffer.append up to 15 MiB
MAX_TYPES_COUNTED = 64
LINGER_S = 300.0  # after the scenario, how long the server waits for the client to close
OPEN_WAIT_S = 10.0  # how long the server waits for session.update / setup
MIC_IDLE_S = 0.5  # no microphone audio for this long (after some): the microphone stopped
VAD_THRESHOLD = 1000  # RMS (PCM16 units, about -30 dBFS) above which the emulated VAD hears speech
VAD_START_MS = 60  # speech this long starts a turn (interrupts the server's)
VAD_STOP_MS = 500  # silence this long ends it
CLOSE_REASON_BYTES = 123
RESUME_POINT_PREFIX = "pyclient."
EPOCH = secrets.token_hex(2)  # this server process: resume points made by another are foreign


class SessionEnd(Exception):
    """The emulated server ends the connection with ``code`` and ``reason``, as the provider would."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"{code} {reason}")
        self.code, self.reason = code, reason


@dataclass(frozen=True)
class Refusal:
    """A connection the provider would refuse: close ``code``/``reason`` (after ``error``, if any)."""

    code: int
    reason: str
    why: str  # for /stats
    error: dict[str, Any] | None = None  # OpenAI's error event body


def resume_point(prefix: str, conn_id: int, root: int, turns: int, nonce: str) -> str:
    """A signed, self-describing resume point (a Gemini handle, an OpenAI assistant item id):
    which connection sent it, the session's first connection, how many turns it closes. A
    restarted server, which remembers nothing, still trusts it (devserver/secret.py)."""
    body = f"{prefix}{EPOCH}.{conn_id:x}.{root:x}.{turns:x}.{nonce}"
    return f"{body}.{sign(body)[:10]}"


def parse_resume_point(prefix: str, text: str) -> tuple[int, int, int, bool] | None:
    """``(conn_id, turns, root, foreign)`` of a point ``resume_point`` made, or None (not
    ours, forged). ``foreign``: a server before a restart made it (its ids mean nothing here)."""
    if not text.startswith(prefix) or len(text) > 64:
        return None
    body, _, signature = text.rpartition(".")
    parts = body[len(prefix) :].split(".")
    if len(parts) != 5 or not verify_prefix(body, signature):
        return None
    try:
        conn_id, root, turns = (int(p, 16) for p in parts[1:4])
    except ValueError:
        return None
    return conn_id, turns, root, parts[0] != EPOCH


def verify_prefix(body: str, signature: str) -> bool:
    return len(signature) == 10 and hmac.compare_digest(sign(body)[:10], signature)


class HandleStore:
    """Gemini session-resumption handles: which connection issued each, whether it is still open."""

    def __init__(self, limit: int = MAX_ITEMS, ttl_s: float = 2 * 3600.0) -> None:
        self.limit, self.ttl_s = limit, ttl_s
        self._handles: OrderedDict[str, tuple[int, float, int, int, bool]] = OrderedDict()
        self._open: set[int] = set()

    def issue(self, handle: str, conn_id: int, turns: int = 0, root: int | None = None, foreign: bool = False) -> None:
        """``handle`` resumes the session ``conn_id`` carries (first connection: ``root``)
        after its first ``turns`` turns (``foreign``: on a server before a restart)."""
        root = conn_id if root is None else root
        self._handles[handle] = (conn_id, time.monotonic() + self.ttl_s, turns, root, foreign)
        while len(self._handles) > self.limit:
            self._handles.popitem(last=False)

    def find(self, handle: str) -> int | None:
        """The connection that issued ``handle`` (None: unknown or expired)."""
        found = self._handles.get(handle)
        if found is None:
            return self._restore(handle)
        return found[0] if found[1] > time.monotonic() else None

    def _restore(self, handle: str) -> int | None:
        """A handle a server before a restart issued (signed, self-describing): known again."""
        point = parse_resume_point(RESUME_POINT_PREFIX, handle)
        if point is None:
            return None
        conn_id, turns, root, foreign = point
        self.issue(handle, conn_id, turns, root, foreign)
        return conn_id

    def foreign(self, handle: str) -> bool:
        """Whether ``handle`` came from a server before a restart."""
        found = self._handles.get(handle)
        return found is not None and found[4]

    def turns(self, handle: str) -> tuple[int, int]:
        """How many turns of the session ``handle`` covers, and the session's first connection."""
        if handle not in self._handles:
            self._restore(handle)
        found = self._handles.get(handle)
        return (found[2], found[3]) if found is not None else (0, 0)

    def opened(self, conn_id: int) -> None:
        self._open.add(conn_id)

    def closed(self, conn_id: int) -> None:
        self._open.discard(conn_id)

    def is_open(self, conn_id: int) -> bool:
        return conn_id in self._open


@dataclass
class EmulationContext:
    """What the emulated sockets share with the app (make_app builds it)."""

    stats: StatsRegistry
    store: TokenStore
    policy: AccessPolicy
    sessions: weakref.WeakSet  # type: ignore[type-arg]
    sndbuf: int
    tool_result_idle_s: float
    tool_result_cap_s: float
    # Keys the emulated providers accept (their REST endpoints, Gemini's ?key=): None accepts any
    # key of the provider's shape (sk-..., AIza...), a set only those.
    provider_keys: Mapping[str, frozenset[str]] | None = None
    handles: HandleStore = field(default_factory=HandleStore)
    linger_s: float = LINGER_S
    # session root -> its latest connection (what a new connection of the session reads of
    # the one before: how did it end?), bounded
    latest: OrderedDict[int, ConnectionStats] = field(default_factory=OrderedDict)

    def latest_of(self, root: int, stats: ConnectionStats) -> ConnectionStats | None:
        """The session's connection before this one (None: unknown, such as one of a server
        before a restart); ``stats``' connection becomes the session's latest."""
        before = self.latest.pop(root, None)
        self.latest[root] = stats
        while len(self.latest) > MAX_ITEMS:
            self.latest.popitem(last=False)
        return before

    def key_ok(self, provider: str, key: str, shape: Callable[[str], bool]) -> bool:
        if self.provider_keys is None:
            return shape(key)
        return key in self.provider_keys.get(provider, frozenset())


EMULATION = web.AppKey("emulation", EmulationContext)


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def close_reason(text: str) -> bytes:
    raw = text.encode()
    return raw if len(raw) <= CLOSE_REASON_BYTES else raw[: CLOSE_REASON_BYTES - 3] + b"..."


def rms(pcm: bytes) -> float:
    """Root mean square of PCM16 LE samples."""
    samples = array.array("h", pcm[: len(pcm) & ~1])
    if not samples:
        return 0.0
    if sys.byteorder == "big":
        samples.byteswap()
    return math.sqrt(sum(map(operator.mul, samples, samples)) / len(samples))


class EnergyVad:
    """The emulated server VAD: speech starts after ``start_ms`` above ``threshold`` and stops
    after ``stop_ms`` below it. ``feed`` returns ``("start" | "stop", ms into the stream)``."""

    def __init__(self, rate: int, threshold: float = VAD_THRESHOLD) -> None:
        self.rate, self.threshold = rate, threshold
        self.position = 0  # samples fed
        self.speaking = False
        self._run = 0  # samples of the current loud (or quiet) run

    def feed(self, pcm: bytes) -> list[tuple[str, int]]:
        n = len(pcm) // 2
        loud = rms(pcm) > self.threshold
        self.position += n
        if loud != self.speaking:
            self._run += n
            limit = VAD_START_MS if loud else VAD_STOP_MS
            if self._run * 1000 >= limit * self.rate:
                self.speaking, self._run = loud, 0
                return [("start" if loud else "stop", self.position * 1000 // self.rate)]
        else:
            self._run = 0
        return []


def _frame(payload: bytes, binary: bool) -> bytes:
    """One unmasked, final, uncompressed WebSocket frame (server to client)."""
    first = 0x80 | (0x2 if binary else 0x1)
    n = len(payload)
    if n < 126:
        header = bytes((first, n))
    elif n < 1 << 16:
        header = bytes((first, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((first, 127)) + n.to_bytes(8, "big")
    return header + payload


class Counter:
    """Counts by name, at most ``MAX_TYPES_COUNTED`` names (the rest under ``other``)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, name: str) -> None:
        key = name[:80] if name in self.counts or len(self.counts) < MAX_TYPES_COUNTED else "other"
        self.counts[key] = self.counts.get(key, 0) + 1


def parse_tool_output(output: Any) -> tuple[bool, Any, dict[str, Any] | None]:
    """``(ok, result, error)`` of a tool answer the way pyclient's codecs encode it: an object
    whose only key is ``error`` is a failure; anything else is the result."""
    if isinstance(output, dict) and set(output) == {"error"}:
        error = output["error"]
        return False, None, error if isinstance(error, dict) else {"type": "tool_error", "message": str(error)}
    return True, output, None


def limit_send_buffer(request: web.Request, nbytes: int) -> None:
    """Small kernel buffers, as app.py keeps for /ws: a stalled reader stalls our sends quickly."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport else None
    if sock is not None and nbytes > 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, nbytes)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, nbytes)
    if transport is not None:
        transport.set_write_buffer_limits(high=nbytes or 64 * 1024)


ScenarioFn = Callable[[Any, Params], Awaitable[None]]


class EmulatedSession(Session):
    """One emulated provider connection. Subclasses render the steps and handle client messages."""

    protocol: ClassVar[str]
    faults: ClassVar[ScenarioFn]  # the protocol's own faults scenario

    def __init__(
        self,
        ws: web.WebSocketResponse,
        stats: ConnectionStats,
        ctx: EmulationContext,
        query: dict[str, str],
        request: web.Request,
        auth: MintedToken | Refusal | None,
    ) -> None:
        super().__init__(ws, stats, credit=False, transport=request.transport)
        self.ctx = ctx
        self.query = query
        self.auth = auth
        self.scenario = query.get("scenario", "chat")
        self.audio_scenario = self.scenario in AUDIO_SCENARIOS
        self.lock = asyncio.Lock()
        self.binary = False  # send JSON in binary frames (Gemini binary=1)
        self.phase = "opening"  # opening -> scenario -> finish -> linger
        self.server_end: SessionEnd | None = None  # set when the receive loop decided to close
        self.dropping = False  # the current turn was cancelled: its remaining steps are not sent
        self._changed = asyncio.Event()  # set after every client message is handled
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._mic_last = 0.0
        self.client_types = Counter()
        self.skip_turns = 0  # a resumed session: turns its earlier connections delivered
        self.turns = 0  # turns ended in this session (across its connections)
        self.turn_call_count = 0  # tool calls in the current turn (stable call ids)
        self.client_close_reason: str | None = None
        self.carried: dict[str, bool | None] = {}  # calls answered on those connections
        self.turns_skipped = 0
        self.rec: dict[str, Any] = {
            "scenario_done": False,
            "client_messages": self.client_types.counts,
            "interruptions": 0,
            "mic_rate": None,
        }
        stats.emulation = self.rec
        self.param_error: str | None = None
        p = Params(query)
        self.hangup, self.vad_threshold = 0.0, float(VAD_THRESHOLD)
        self.read_params(Params({}))  # the defaults, then what the query says
        self.drops = 1
        try:
            self.hangup = p.num("hangup", 0.0, 0.0, 3600.0)
            self.vad_threshold = p.num("vad_threshold", VAD_THRESHOLD, 1, 32768)
            self.drop_after = p.num("drop_after", 0, 0, 10**9, int)  # as on /ws: abort TCP after N messages
            self.drops = p.num("drops", 1, 0, 1000, int)  # ... on the first `drops` connections of a session
            self.close_after = p.num("close_after", 0, 0, 10**9, int)  # close (1000) after N, mid-scenario
            self.read_params(p)
        except ParamError as exc:
            self.param_error = str(exc)

    # ------------------------------------------------------------------ hooks for subclasses

    def read_params(self, p: Params) -> None:
        """Read the protocol's own query parameters (raise ParamError)."""

    @classmethod
    def server_protocols(cls, request: web.Request) -> tuple[str, ...]:
        return ()

    @classmethod
    def authenticate(cls, ctx: EmulationContext, request: web.Request) -> MintedToken | Refusal | None:
        raise NotImplementedError

    async def refuse(self, refusal: Refusal) -> None:
        """Tell the client why it was refused (as the provider does), then end."""
        self.stats.error(f"refused: {refusal.why}")
        raise SessionEnd(refusal.code, refusal.reason)

    async def open_session(self) -> None:
        """The provider's opening exchange (session.created/update, setup/setupComplete)."""

    def check_open(self) -> None:
        """Raise if the connection ended while the server waited for the client (opening)."""
        if self.server_end is not None:
            raise self.server_end
        if self.closed.is_set():
            raise ConnectionResetError("the client closed the connection during the opening phase")

    async def on_message(self, data: str | bytes) -> None:
        """One client message (the receive loop has counted it)."""

    async def scenario_error(self, code: str, message: str) -> None:
        """A scenario that cannot run (unknown name, bad parameters)."""

    async def finish(self) -> None:
        """After the scenario: end what is open, wait for the tool results."""
        await self.control("end_of_turn")
        await self.wait_results()

    def closed_as_told(self) -> bool:
        """The client closed after the server announced the connection's end (Gemini's
        ``goAway``): what a client should do, not a lost connection."""
        return False

    async def watchdog(self) -> None:
        """The provider's session limit (returns never, or raises SessionEnd)."""
        await asyncio.Event().wait()

    async def lingering(self) -> None:
        """Called while lingering whenever the client sent something."""

    # ------------------------------------------------------------------ running

    def scenario_fn(self) -> ScenarioFn | None:
        if self.scenario == "faults":
            return type(self).faults
        return SCENARIOS.get(self.scenario) if self.scenario in EMULATED_SCENARIOS else None

    async def main(self) -> None:
        await self.open_session()
        self.phase = "scenario"
        run = self.scenario_fn()
        if self.param_error is not None:
            await self.scenario_error("bad_params", self.param_error)
        elif run is None:
            names = ", ".join(EMULATED_SCENARIOS)
            await self.scenario_error("unknown_scenario", f"no scenario {self.scenario[:40]!r} here; try {names}")
        else:
            try:
                await run(self, Params(self.query))
            except ParamError as exc:
                await self.scenario_error("bad_params", str(exc))
        self.phase = "finish"
        await self.finish()
        self.rec["scenario_done"] = True
        self.phase = "linger"
        await self.linger()

    async def run(self) -> None:
        """The scenario against the provider's limit and the client's close."""
        tasks = {
            "main": asyncio.ensure_future(self.main()),
            "dog": asyncio.ensure_future(self.watchdog()),
            "closed": asyncio.ensure_future(self.closed.wait()),
        }
        try:
            await asyncio.wait(set(tasks.values()), return_when=asyncio.FIRST_COMPLETED)
            if tasks["closed"].done() and not tasks["main"].done() and self.phase in ("finish", "linger"):
                # The client closed while the server wrapped up: let it record what never came
                # (every wait there ends when the socket has).
                await asyncio.wait({tasks["main"], tasks["dog"]}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks.values():
                if not task.done():
                    task.cancel()
            for task in tasks.values():
                with contextlib.suppress(BaseException):
                    await task
        for name in ("main", "dog"):
            task = tasks[name]
            if task.done() and not task.cancelled():
                task.result()  # raises SessionEnd, ClosedEarly, a scenario's bug...
                if name == "main":
                    return
        if self.server_end is not None:
            raise self.server_end
        if self.phase in ("opening", "scenario"):
            raise ConnectionResetError(f"the client closed the connection during the {self.phase} phase")

    async def linger(self) -> None:
        """Wait for the client to close (the provider keeps a session open), or hang up after
        ``hangup`` seconds; meanwhile answer what the client asks (``lingering``)."""
        limit = self.hangup or self.ctx.linger_s
        deadline = time.monotonic() + limit
        while not self.closed.is_set():
            self._changed.clear()
            await self.lingering()
            left = deadline - time.monotonic()
            if left <= 0:
                if not self.hangup:
                    self.stats.error(f"client did not close within {limit:.0f} s of the scenario's end")
                raise SessionEnd(WSCloseCode.OK, "")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``condition()`` holds (checked after every client message), ``timeout`` s at most."""
        deadline = time.monotonic() + timeout
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0 or self.closed.is_set():
                return condition()
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True

    async def wait_progress(self, condition: Callable[[], bool]) -> bool:
        """Wait until ``condition()`` holds while the client makes progress: as
        ``wait_tool_results``, until nothing arrived for ``tool_result_idle_s``, capped."""
        t0 = time.monotonic()
        idle, cap = self.ctx.tool_result_idle_s, self.ctx.tool_result_cap_s
        while not condition() and not self.closed.is_set():
            now = time.monotonic()
            left = min(max(self.last_received, t0) + idle, t0 + cap) - now
            if left <= 0:
                break
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return condition()

    async def wait_results(self) -> None:
        config = self.ctx
        if not await self.wait_tool_results(config.tool_result_idle_s, config.tool_result_cap_s):
            self.stats.error(
                f"{self.stats.tool_results_missing_count} tool result(s) never arrived "
                f"(waited {self.stats.tool_wait_s:.1f} s; no progress for {config.tool_result_idle_s:g} s)"
            )

    # ------------------------------------------------------------------ sending

    async def write(self, message: str | bytes, binary: bool | None = None) -> None:
        """Send one message with the accounting of ``Session.send`` (call it under ``lock``).
        ``str`` goes as a text frame (or binary, when the session sends binary), ``bytes`` as is."""
        if self.server_end is not None:  # the receive loop decided to close: stop the scenario
            raise self.server_end
        if self.ws.closed:
            raise ConnectionResetError("socket closed")
        raw = message.encode() if isinstance(message, str) else message
        opcode = WSMsgType.BINARY if (binary if binary is not None else self.binary) else WSMsgType.TEXT
        t0 = self.stats.send_blocked_since = time.monotonic()
        try:
            await self.ws.send_frame(raw, opcode)
        finally:
            self.stats.send_blocked_since = None
        now = time.monotonic()
        self.stats.on_sent(len(raw), now - t0)
        resumed = len(self.stats.resumed_connections)
        if self.drop_after and self.stats.frames_sent >= self.drop_after and resumed < self.drops:
            self.drop()
        if self.close_after and self.stats.frames_sent >= self.close_after:
            raise ClosedEarly(
                f"closed after {self.stats.frames_sent} messages without the scenario's end (close_after)"
            )
        if now - self._ran_since >= 0.002:
            await self.yield_to_loop()

    async def write_together(self, messages: list[str]) -> None:
        """Several messages in one write to the socket (call it under ``lock``): the client reads
        them together, so it decodes the last before it can act on the first (Gemini's call and
        its cancellation). Frames are built here, unmasked and uncompressed (RFC 6455 5.2)."""
        transport = self.transport
        if self.ws.closed or transport is None or transport.is_closing():
            raise ConnectionResetError("socket closed")
        raws = [m.encode() for m in messages]
        transport.write(b"".join(_frame(raw, self.binary) for raw in raws))
        for raw in raws:
            self.stats.on_sent(len(raw), 0.0)

    async def emit(self, obj: dict[str, Any]) -> None:
        """Send one JSON message (call it under ``lock``)."""
        await self.write(compact(obj))

    def take_text(self, data: str | bytes) -> tuple[bytes, str]:
        """A text step as bytes (for the hash) and as the characters complete so far: a step may
        end inside a UTF-8 character (chat splits one on purpose); JSON carries whole characters."""
        raw = data.encode() if isinstance(data, str) else data
        return raw, self._utf8.decode(raw)

    # The steps (see the module docstring). A step the protocol drops (the turn was cancelled)
    # still takes its time: a dropped audio frame its duration, anything else a turn of the loop,
    # so that a scenario that does not look at ``cut_items`` (flood) never spins.

    #
    # A resumed session (Gemini's handle, OpenAI's replayed conversation) goes on where the
    # session it continues stopped: the seeded scenario runs again and its first
    # ``skip_turns`` turns are *skipped*: accounted (so /stats covers the whole session's text,
    # samples and calls), not sent, not paced. See ``resume_from``.

    @property
    def skipping(self) -> bool:
        return self.turns_skipped < self.skip_turns

    def resume_from(self, issuer: int, turns: int, foreign: bool = False) -> None:
        """Continue the session of connection ``issuer`` after its first ``turns`` turns: its
        tool accounting carries over, and those turns are skipped. ``foreign``: ``issuer`` was
        a connection of a server before a restart (nothing of it is known here)."""
        self.skip_turns = turns
        self.rec["resumed_from"] = issuer
        self.rec["skipped_turns"] = turns
        before = None if foreign else self.ctx.stats.get(issuer)
        if before is not None:
            self.carried = dict(before.answered_calls)
            self.stats.resumed_connections = [*before.resumed_connections, issuer][-KEEP:]
            self.stats.restored_from = before.restored_from
        else:  # a server before a restart carried it: its answers are not known here
            self.stats.restored_from = issuer

    def skipped_turn(self) -> None:
        """An ``end_of_turn`` step while skipping: the turn counts (handles, call ids go on)."""
        self.turns_skipped += 1
        self.turns += 1
        self.turn_call_count = 0

    async def sleep(self, seconds: float) -> None:
        if not self.skipping:
            await asyncio.sleep(seconds)

    async def text(self, data: str | bytes) -> None:
        if self.skipping:
            raw, _ = self.take_text(data)
            self.stats.on_text(raw)
        elif not await self.render_text(data):
            await self.yield_to_loop()

    async def audio(self, pcm: bytes, *, sample_rate: int, item_id: int, final: bool = False) -> None:
        if self.skipping:
            self.stats.on_audio(pcm)
        elif not await self.render_audio(pcm, sample_rate, item_id, final):
            await asyncio.sleep(len(pcm) / 2 / sample_rate)

    def call_id_for(self, name: str) -> str | None:
        """The id the protocol gives the scenario's next call (None: not reproducible)."""
        return None

    def skipped_call(self, name: str) -> None:
        """A call of a skipped turn: answered on an earlier connection; counted here again, with
        that answer, so that this connection's /stats cover the whole session."""
        call_id = self.call_id_for(name)
        self.stats.tool_calls_sent += 1
        if call_id is not None and call_id in self.carried:
            self.stats.count_carried_result(call_id, self.carried[call_id])
        elif self.stats.restored:
            self.stats.tool_results_before_restart += 1  # answered to a server before a restart
        else:
            self.stats.error(f"a call of a skipped turn ({name}) has no answer from the earlier connections")

    async def tool_call(self, name: str, arguments: dict[str, Any], expect: Any = None) -> str:
        if self.skipping:
            self.skipped_call(name)
            return "call_skipped"
        call_id = await self.render_tool_call(name, arguments, expect)
        if call_id is None:
            await self.yield_to_loop()
            return "call_dropped"
        return call_id

    async def render_text(self, data: str | bytes) -> bool:
        """Send a text step; False if the protocol dropped it."""
        raise NotImplementedError

    async def render_audio(self, pcm: bytes, sample_rate: int, item_id: int, final: bool) -> bool:
        raise NotImplementedError

    async def render_tool_call(self, name: str, arguments: Any, expect: Any) -> str | None:
        """Send a tool call; its id, or None if the protocol dropped it."""
        raise NotImplementedError

    async def raw(self, frame: bytes) -> None:
        raise ParamError("this scenario forges pyclient.v1 frames; it runs on /ws only")

    # ------------------------------------------------------------------ receiving

    async def receive_loop(self) -> None:
        """Read client messages until the socket ends; no client input ends it earlier (except
        what the provider itself closes for, recorded in ``server_end``)."""
        try:
            while True:
                await self._reading.wait()
                msg = await self.ws.receive()
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    if msg.type == WSMsgType.CLOSE:
                        self.rec["client_closed"] = True
                    if msg.type == WSMsgType.CLOSE and isinstance(msg.extra, str):
                        self.client_close_reason = msg.extra[:CLOSE_REASON_BYTES]
                    break
                if msg.type == WSMsgType.ERROR:
                    self.stats.error(f"socket error: {self.ws.exception()!r}")
                    break
                self.last_received = time.monotonic()
                data = msg.data
                self.stats.bytes_received += len(data) if isinstance(data, bytes) else len(data.encode())
                self.stats.frames_received += 1
                try:
                    await self.on_message(data)
                except SessionEnd as end:
                    self.server_end = end
                    break
                except (ConnectionResetError, ClosedEarly):
                    break
                except Exception as exc:
                    log.warning("connection %s: failed on a client message: %r", self.stats.id, exc)
                    self.stats.error(f"server failed on a client message: {exc!r}")
                finally:  # after handling: waiters see the message's effect
                    self._received.set()
                    self._changed.set()
        except Exception as exc:  # aiohttp itself failed: the socket is unusable
            log.exception("receive loop of connection %s failed", self.stats.id)
            self.stats.error(f"receive loop failed: {exc!r}")
        finally:
            self.closed.set()
            self._changed.set()
            self._received.set()

    def conclude(self) -> None:
        """At the end: calls still awaiting a result that no wait recorded are missing."""
        if self._pending and not self.stats.tool_results_missing_count:
            missing = [{"call_id": call_id, "name": p["name"]} for call_id, p in self._pending.items()]
            self.stats.on_missing_results(missing, 0.0)
            if self.stats.dropped or self.closed_as_told():
                # The session goes on on another connection, which asks for these again.
                self.rec["unanswered_at_end"] = len(missing)
            else:
                self.stats.error(f"{len(missing)} tool result(s) never arrived (the connection ended first)")

    def client_error(self, message: str) -> None:
        """A client mistake: recorded in /stats ``errors``."""
        self.stats.error(message)

    def tool_result(self, call_id: str, ok: bool, result: Any, error: Any) -> None:
        """A tool answer, matched and checked as on /ws (``Session._on_tool_result``)."""
        err = error if isinstance(error, dict) or error is None else {"type": "tool_error", "message": str(error)}
        self._on_tool_result(ToolResultFrame(0, clip(call_id, 10_000), ok, result, err))

    def remember(self, key: str, entry: Any) -> None:
        """Append to a bounded list in the record."""
        bucket = self.rec.setdefault(key, deque(maxlen=KEEP))
        bucket.append(entry)

    # ------------------------------------------------------------------ microphone

    def on_mic(self, pcm: bytes, rate: int, samples: int | None = None) -> None:
        """Microphone audio received (PCM16: ``samples`` is half the bytes)."""
        samples = len(pcm) // 2 if samples is None else samples
        self.stats.on_mic(samples, rate, pcm)
        self._mic_rate = rate
        self._mic_last = time.monotonic()
        self.rec["mic_rate"] = rate

    def mic_ms(self) -> int:
        rate = self._mic_rate or 1
        return self.stats.mic_samples_received * 1000 // rate if self._mic_rate else 0

    async def wait_mic_end(self, timeout: float) -> dict[str, Any]:
        """The microphone's end: the protocol's own signal (``_mic_end``), or no microphone audio
        for ``MIC_IDLE_S`` after some arrived; at most ``timeout``."""

        def ended() -> bool:
            if self._mic_end.is_set():
                return True
            return self.stats.mic_frames_received > 0 and time.monotonic() - self._mic_last >= MIC_IDLE_S

        deadline = time.monotonic() + timeout
        while not ended() and not self.closed.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                self.stats.error(f"the microphone did not end within {timeout} s")
                break
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, MIC_IDLE_S / 2))
        samples = self.stats.mic_samples_received
        rate = self._mic_rate or 1
        return {"samples": samples, "rate": self._mic_rate, "ms": samples * 1000 / rate}


def socket_handler(cls: type[EmulatedSession]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler of one emulated provider socket."""

    async def handle(request: web.Request) -> web.StreamResponse:
        ctx = request.app[EMULATION]
        refusal = origin_refusal(ctx.policy, request, required=False)
        if refusal is not None:
            return text_error(403, f"403: {refusal}")
        auth = cls.authenticate(ctx, request)
        ws = web.WebSocketResponse(
            protocols=cls.server_protocols(request), max_msg_size=MAX_CLIENT_MESSAGE, heartbeat=None
        )
        await ws.prepare(request)
        limit_send_buffer(request, ctx.sndbuf)
        query = dict(request.query)
        st = ctx.stats.open(query.get("scenario", "chat"), redact_query(query), ws.ws_protocol, cls.protocol)
        session = cls(ws, st, ctx, query, request, auth)
        ctx.sessions.add(session)
        receiver = asyncio.create_task(session.receive_loop())
        close_code, reason = int(WSCloseCode.OK), b""
        try:
            if isinstance(auth, Refusal):
                await session.refuse(auth)
            await session.run()
        except SessionEnd as end:
            close_code, reason = end.code, close_reason(end.reason)
        except ClosedEarly as exc:
            st.error(str(exc))
            reason = b"close_after"
        except (ConnectionResetError, ConnectionError) as exc:
            if session.closed_as_told():
                session.rec["closed_after_goaway"] = True  # the client moved to a new connection
            elif not st.dropped:
                st.error(f"connection lost: {exc}")
        except asyncio.CancelledError:  # aiohttp cancels handlers of lost connections when so configured
            if st.dropped or session.closed_as_told():
                pass
            elif session.closed.is_set() and session.phase in ("opening", "scenario"):
                st.error(f"connection lost: the client closed the connection during the {session.phase} phase")
            elif not session.closed.is_set():
                st.error("connection lost: the handler was cancelled")
            raise
        except Exception as exc:  # a bug in a scenario or the emulation: 1011, never 1000
            log.exception("emulated %s scenario %s failed", cls.protocol, session.scenario)
            st.error(f"server bug: {exc!r}")
            close_code = int(WSCloseCode.INTERNAL_ERROR)
            reason = close_reason(f"server bug: {type(exc).__name__} (see /stats?id={st.id})")
        finally:
            st.sample()
            session.resume_reading()
            closed_by_us = not ws.closed
            try:
                if closed_by_us:
                    await close_first(ws, receiver, close_code, reason)
                try:
                    await asyncio.wait_for(receiver, 5)
                except TimeoutError:
                    receiver.cancel()
            finally:
                session.conclude()
                session.release()
                ctx.handles.closed(st.id)
                st.ended = time.time()
                ctx.stats.close(st)
                if st.dropped:
                    st.close_code = int(WSCloseCode.ABNORMAL_CLOSURE)
                elif closed_by_us:
                    st.close_code = close_code
                else:
                    st.close_code = ws.close_code
                st.sample()
        return ws

    return handle
