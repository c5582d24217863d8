"""OpenAI Realtime over WebSocket, GA protocol only: a sans-I/O codec (no ``js`` import).

Sources (read at the commits named in tests/unit/fixtures/openai_realtime/README.md):
openai-node ``src/realtime/websocket.ts`` (URL, subprotocols), ``src/resources/realtime/realtime.ts``
(every client and server event); openai-agents-js ``packages/agents-realtime/src/
openaiRealtimeWebsocket.ts`` (``ek_`` rule, integer ``audio_end_ms``), ``openaiRealtimeBase.ts``
(the GA ``session.update``), ``responseCreateSequencer.ts`` (one response at a time).

Connecting: ``wss://api.openai.com/v1/realtime?model=...`` with the subprotocols ``realtime`` and
``openai-insecure-api-key.<key>``. A browser page should only ever hold an ephemeral ``ek_`` key
(minted by its backend); any other key is refused with ``UsageError`` unless the codec was made
with ``allow_long_lived_key=True``. The beta (``OpenAI-Beta: realtime=v1`` header, its
subprotocol) is switched off at OpenAI and never sent; beta event *names* are still accepted on
receive (``response.audio.delta``, ``response.text.delta``, ``response.audio_transcript.delta``,
``conversation.item.created``...) because compatible servers still send them.

Rules this codec keeps (where the sources leave a choice):

* **One transcript source.** A response renders the words of its audio transcript
  (``response.output_audio_transcript.*``) when its output modality is audio, its text
  (``response.output_text.*``) when it is text; the other source is dropped and counted
  (``text_dropped``). The modality is the response's ``output_modalities`` if
  ``response.created`` names it, else the session's (from ``session.created/updated``, else the
  constructor's ``audio_output``). A ``.done`` event renders its full text only for an item
  that had no deltas (a server that skips deltas).
* **Audio item end.** ``response.output_audio.done`` becomes an ``AudioChunk`` of 0 samples with
  ``final=True`` for that item; ``response.done`` does the same for any audio item of the
  response that did not get one (a cancelled response).
* **User transcript.** ``conversation.item.input_audio_transcription.delta`` becomes a
  ``UserTranscript``; ``.completed`` becomes one only for an item that had no deltas.
* **Tool calls.** ``ToolCallStarted`` when ``response.output_item.added`` names a function call,
  ``ToolCallArgumentsDelta`` per argument fragment, then ``ToolCallReady`` (or
  ``ToolCallInvalid``) when the call's item is done (``response.function_call_arguments.done``
  or ``response.output_item.done``, whichever comes first; the full ``arguments`` they carry are
  authoritative). Arguments are validated against the registered tool's JSON Schema
  (``tool_schemas``, set from ``SessionConfig.tools`` by ``start``): a call that does not fit is
  ``ToolCallInvalid`` with ``invalid_arguments`` and the validator's messages, and nothing runs.
  A call whose response ends (``response.done``) before its item is done is withdrawn
  (``ToolCallCancelled``): the server holds no complete call to answer. A response that ends
  ``cancelled`` (a barge-in) withdraws its complete calls not answered yet too (waiting for the
  user's approval, or an async tool still running): the user spoke over them.
* **One response in flight.** ``response.create`` is sent only when no response is in flight (one
  we asked for and the server has not yet created, or one created and not yet done); a request
  made while one is in flight waits and is sent once, when that response is done. Requests
  coalesce: many waiting requests send one ``response.create``. Tool results: each becomes a
  ``function_call_output`` item at once; the response that made the calls gets one
  ``response.create`` after *all* its calls have their output *and* it is done (whichever comes
  last triggers it). A ``response.create`` the server refuses because a response is already
  active is retried once, after that response is done; other refusals drop it (as agents-js).
  Because such sends happen while *receiving* (at ``response.done``), the codec queues them:
  **the connection core must call ``take_outgoing()`` after every ``decode()``** and send what it
  returns.
* **A new session after a lost one** (no resume exists) gets the conversation as text items
  (user ``input_text``, assistant ``output_text``: audio items came back empty for peers), then
  ``session.update``; if the lost session was answering or had been asked to (and there is a
  conversation to replay), one ``response.create`` follows (a new session never speaks on its
  own, and the answer the loss cut short is owed). The function calls of completed responses
  are not replayed.
* **Barge-in.** ``input_audio_buffer.speech_started`` is ``Interrupted(None, "speech_started")``.
  ``cut(positions)`` sends, for the items that were actually cut (fewer samples played than
  received, known items only, each at most once), one ``response.cancel`` if the response of a
  cut item is still in flight, then ``conversation.item.truncate`` with ``audio_end_ms =
  played_samples * 1000 // sample_rate`` (an int from samples rendered, never wall-clock).
* **Microphone end.** With server VAD (the default) ``audio_end`` sends nothing: the server
  decides turns. With ``turn_detection=None`` it commits the buffer and asks for a response.

Memory bounds: audio items, text items, tool calls and responses tracked are each capped
(``max_tracked``, oldest forgotten first); ``stats()["by_type"]`` counts at most 64 event types
(the rest under ``"other"``).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import EncodeError, UsageError
from ..events import (
    AudioChunk,
    Event,
    Ignored,
    Interrupted,
    ProtocolErrorEvent,
    ResponseDone,
    ServerError,
    SessionReady,
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
from ..frames import MAX_TOOL_NAME_CHARS, call_id_problem, decode_json, encode_json, internal_error_reason
from ..playback import PlaybackPosition
from ..schema import validate
from ..tools import DEFAULT_MAX_ARGUMENT_BYTES, DEFAULT_MAX_OPEN_CALLS, ToolOutcome
from .base import Capabilities, Codec, Incoming, Message, SessionConfig
from .jsonwire import Bounded as _Bounded
from .jsonwire import Counter as _Counter
from .jsonwire import b64 as _b64
from .jsonwire import base64_samples as _base64_samples
from .jsonwire import message as _message
from .jsonwire import pcm_from_base64 as _pcm_from_base64
from .jsonwire import text_of as _text_of

DEFAULT_URL = "wss://api.openai.com/v1/realtime"
DEFAULT_MODEL = "gpt-realtime"
DEFAULT_TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"
DEFAULT_TURN_DETECTION: dict[str, Any] = {"type": "server_vad"}
SAMPLE_RATE = 24_000  # GA audio/pcm is 24 kHz only
SUBPROTOCOL = "realtime"
KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."
EPHEMERAL_KEY_PREFIX = "ek_"
DEFAULT_MAX_TRACKED = 256  # audio items, text items, tool calls, responses remembered
DROPPABLE_SCAN_CHARS = 160
# The conversation kept for a new session (replayed as text items): bounded in items and chars.
MAX_HISTORY_ITEMS = 100
MAX_HISTORY_CHARS = 64 * 1024
MAX_HISTORY_ITEM_CHARS = 16 * 1024
MAX_ITEM_ID_CHARS = 32  # OpenAI's limit on a client-chosen item id
SESSION_RENEW_S = 55 * 60  # a session ends at 60 minutes (session_expired): renew before
RENEW_REASON = "renewing the session before its maximum duration"

AUDIO_DELTA_TYPES = frozenset({"response.output_audio.delta", "response.audio.delta"})

# Beta event names some compatible servers still send -> the GA name handled here.
BETA_NAMES = {
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "conversation.item.created": "conversation.item.added",
}

# Known server events this client has no use for: counted in by_type, no event, not "ignored".
QUIET_TYPES = frozenset(
    {
        "conversation.created",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.deleted",
        "conversation.item.retrieved",
        "conversation.item.truncated",
        "conversation.item.input_audio_transcription.failed",
        "conversation.item.input_audio_transcription.segment",
        "input_audio_buffer.committed",
        "input_audio_buffer.cleared",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.dtmf_event_received",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
        "response.content_part.added",
        "response.content_part.done",
    }
)

_TYPE_PREFIX = re.compile(r'"type"\s*:\s*"([^"\\]{1,80})"')
_SUBPROTOCOL_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 6455 / RFC 7230 token


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


@dataclass
class _AudioItem:
    response_id: str
    content_index: int = 0
    samples: int = 0
    final: bool = False
    truncated: bool = False


@dataclass
class _Call:
    call_id: str
    item_id: str
    response_id: str
    name: str | None
    parts: list[str] = field(default_factory=list)
    size: int = 0
    started: bool = False  # ToolCallStarted emitted
    failed: bool = False  # ToolCallInvalid emitted while streaming: swallow the rest


@dataclass
class _Response:
    done: bool = False
    pending: set[str] = field(default_factory=set)  # calls reported Ready/Invalid, no output sent yet
    had_calls: bool = False
    create_requested: bool = False  # its one response.create (after its tool outputs) was requested


class OpenAIRealtimeCodec(Codec):
    """The OpenAI Realtime GA protocol (see the module docstring for the rules it keeps)."""

    name: ClassVar[str] = "openai-realtime"
    capabilities: ClassVar[Capabilities] = Capabilities(streamed_tool_arguments=True, truncate=True)
    session_renew_s: ClassVar[float | None] = SESSION_RENEW_S
    switch_reason: ClassVar[str] = RENEW_REASON
    input_audio_rate: ClassVar[int | None] = SAMPLE_RATE

    def __init__(
        self,
        *,
        allow_long_lived_key: bool = False,
        model: str | None = None,
        audio_output: bool = True,
        transcription_model: str | None = DEFAULT_TRANSCRIPTION_MODEL,
        turn_detection: dict[str, Any] | None = DEFAULT_TURN_DETECTION,
        max_tracked: int = DEFAULT_MAX_TRACKED,
        max_open_calls: int = DEFAULT_MAX_OPEN_CALLS,
        max_argument_bytes: int = DEFAULT_MAX_ARGUMENT_BYTES,
    ) -> None:
        if max_tracked < 1 or max_open_calls < 1 or max_argument_bytes < 1:
            raise UsageError(
                f"limits must be positive: max_tracked={max_tracked}, max_open_calls={max_open_calls}, "
                f"max_argument_bytes={max_argument_bytes}"
            )
        self.allow_long_lived_key = allow_long_lived_key
        self.model = model
        self.audio_output = audio_output
        self.transcription_model = transcription_model
        self.turn_detection = dict(turn_detection) if turn_detection is not None else None
        self.max_open_calls = max_open_calls
        self.max_argument_bytes = max_argument_bytes
        self.tool_schemas: dict[str, dict[str, Any]] = {}

        self._session_audio = audio_output
        self._response_audio = _Bounded(max_tracked)  # response_id -> audio modality (from response.created)
        self._audio_items = _Bounded(max_tracked)  # item_id -> _AudioItem
        self._text_items = _Bounded(max_tracked)  # item_id -> True: rendered deltas already
        self._user_items = _Bounded(max_tracked)  # item_id -> True: user transcript deltas seen
        self._calls: dict[str, _Call] = {}  # open calls by call_id
        self._call_by_item: dict[str, str] = {}  # item_id -> call_id of open calls
        self._closed_calls = _Bounded(max_tracked)  # call_id -> response_id of finished calls
        self._cancelled_calls = _Bounded(max_tracked)  # call_id -> True
        self._responses = _Bounded(max_tracked)  # response_id -> _Response
        self._max_tracked = max_tracked
        self._active: dict[str, None] = {}  # responses created and not done (ordered, bounded)
        self._create_event_id: str | None = None  # our response.create not yet answered
        self._last_create_id: str | None = None  # the last one sent (a refusal may name it late)
        self._want_create = False
        self._create_retried = False
        self._wait_for_done = False
        self._cancelled_responses = _Bounded(max_tracked)
        self._outbox: list[Message] = []
        # The conversation so far as text, for a new session after this one ends (no resume
        # exists): user texts and each finished response's text, bounded.
        self._history: deque[dict[str, str]] = deque()
        self._history_chars = 0
        self._replies: dict[str, list[str]] = {}  # response_id -> [first message item id, text...]
        self._reply_chars: dict[str, int] = {}  # response_id -> characters kept in its reply
        self.replayed_items = 0
        self.responses_asked_again = 0  # response.create after a replay: the loss cut a response
        self._answer_again = False

        self._by_type = _Counter()
        self._events = 0
        self._ignored = 0
        self._bad_json = 0
        self._protocol_errors = 0
        self._text_dropped = 0
        self._audio_samples = 0
        self._response_create_sent = 0
        self._response_create_failed = 0
        self._cancels_sent = 0
        self._truncates_sent = 0
        self._truncates_skipped = 0
        self._tool_calls = 0
        self._rate_limits: list[Any] | None = None
        self._usage: dict[str, int] = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
        self._errors = 0

    # ------------------------------------------------------------------ connecting

    def url(self, url: str, *, token: str | None = None, model: str | None = None) -> str:
        """``url`` (``""``/``"default"``: OpenAI's) with ``?model=``; other query parameters kept.

        An explicit ``model`` replaces one already in the URL; otherwise the URL's is kept, else
        the codec's, else ``DEFAULT_MODEL``.
        """
        base = DEFAULT_URL if url in ("", "default") else url
        parts = urlsplit(base)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        has_model = any(k == "model" for k, _ in query)
        chosen = model or (None if has_model else self.model or DEFAULT_MODEL)
        if chosen is not None:
            query = [(k, v) for k, v in query if k != "model"] + [("model", chosen)]
        return urlunsplit(parts._replace(query=urlencode(query)))

    def subprotocols(self, *, token: str | None = None, credit: bool = False) -> list[str]:
        """``["realtime", "openai-insecure-api-key.<token>"]`` (just ``["realtime"]`` without a token)."""
        if token is None or token == "":
            return [SUBPROTOCOL]
        if not token.startswith(EPHEMERAL_KEY_PREFIX) and not self.allow_long_lived_key:
            shown = token[:3] + "..." if len(token) > 3 else "?"
            raise UsageError(
                f"OpenAI Realtime in a browser takes an ephemeral client secret (ek_...), got a key starting "
                f"{shown!r}: mint one on your backend (POST /v1/realtime/client_secrets); pass "
                "allow_long_lived_key=True only if you accept exposing this key to the page"
            )
        if not _SUBPROTOCOL_TOKEN.match(token):
            raise UsageError("the OpenAI key holds characters a WebSocket subprotocol cannot carry")
        return [SUBPROTOCOL, KEY_SUBPROTOCOL_PREFIX + token]

    def start(self, config: SessionConfig, subprotocol: str) -> list[Message]:
        """One ``session.update`` in the GA shape; remembers the tools' schemas for validation."""
        self.tool_schemas = {t.name: t.parameters for t in config.tools}
        audio_input: dict[str, Any] = {"format": {"type": "audio/pcm", "rate": SAMPLE_RATE}}
        if self.transcription_model:
            audio_input["transcription"] = {"model": self.transcription_model}
        audio_input["turn_detection"] = self.turn_detection
        audio_output: dict[str, Any] = {"format": {"type": "audio/pcm", "rate": SAMPLE_RATE}}
        if config.voice:
            audio_output["voice"] = config.voice
        session: dict[str, Any] = {
            "type": "realtime",
            "model": config.model or self.model or DEFAULT_MODEL,
            "output_modalities": ["audio" if self.audio_output else "text"],
            "audio": {"input": audio_input, "output": audio_output},
        }
        if config.instructions is not None:
            session["instructions"] = config.instructions
        if config.tools:
            session["tools"] = [
                {"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}
                for t in config.tools
            ]
            session["tool_choice"] = "auto"
        # A new session of the same conversation: the conversation so far goes first, as text
        # items (audio items came back empty for peers), then the session's configuration.
        replay = [_message({"type": "conversation.item.create", "item": item}) for item in self._replay_items()]
        self.replayed_items += len(replay)
        out = [*replay, _message({"type": "session.update", "session": session})]
        ask_again, self._answer_again = self._answer_again and bool(replay), False
        if ask_again:
            # The lost session was answering (or was asked to): a new session never speaks on
            # its own, so ask it for the answer the loss cut short (with no conversation to
            # replay there is nothing it could answer).
            self.responses_asked_again += 1
            out += self._request_response()
        return out

    def _replay_items(self) -> list[dict[str, Any]]:
        items = []
        for entry in self._history:
            kind = "input_text" if entry["role"] == "user" else "output_text"
            content = [{"type": kind, "text": entry["text"]}]
            item: dict[str, Any] = {"type": "message", "role": entry["role"], "content": content}
            if entry.get("id"):
                item["id"] = entry["id"]
            items.append(item)
        return items

    def _remember(self, role: str, text: str, item_id: str | None = None) -> None:
        if not text:
            return
        entry = {"role": role, "text": text[:MAX_HISTORY_ITEM_CHARS]}
        if item_id and len(item_id) <= MAX_ITEM_ID_CHARS:
            entry["id"] = item_id
        self._history.append(entry)
        self._history_chars += len(entry["text"])
        while len(self._history) > MAX_HISTORY_ITEMS or self._history_chars > MAX_HISTORY_CHARS:
            self._history_chars -= len(self._history.popleft()["text"])

    def ended_by_limit(self, code: int | None, reason: str) -> bool:
        """OpenAI closes with 1001 "Your session hit the maximum duration of 60 minutes." after
        ``session_expired`` (Chromium may drop that last event when the server closes first)."""
        return code == 1001 and "maximum duration" in reason

    def resume_url(self, url: str) -> str | None:
        """No resume exists: a lost session goes on as a new session on the same URL, with the
        conversation replayed as text (``start``)."""
        return url

    @property
    def at_turn_boundary(self) -> bool:
        return not self._active

    def link_lost(self) -> None:
        """The session is gone: what the server tracked of it (responses in flight, open calls,
        the one-response rule) starts afresh with the next session; the conversation stays. A
        response in flight or asked for is asked for again in the next session (``start``)."""
        self._answer_again = bool(self._active) or self._create_event_id is not None or self._want_create
        self._active.clear()
        self._audio_items = _Bounded(self._max_tracked)  # the new session cannot truncate them
        self._replies.clear()
        self._reply_chars.clear()
        self._calls.clear()
        self._call_by_item.clear()
        self._closed_calls = _Bounded(self._max_tracked)
        self._cancelled_calls = _Bounded(self._max_tracked)
        self._responses = _Bounded(self._max_tracked)
        self._create_event_id = None
        self._want_create = self._wait_for_done = self._create_retried = False
        self._outbox.clear()

    # ------------------------------------------------------------------ receiving

    def droppable(self, message: Incoming) -> bool:
        """True only for an audio delta, told from the first ``"type"`` in the message's first chars."""
        if isinstance(message, str):
            head = message[:DROPPABLE_SCAN_CHARS]
        else:
            try:
                if isinstance(message, (bytes, bytearray, memoryview)):
                    raw = bytes(message[:DROPPABLE_SCAN_CHARS])
                else:
                    raw = message.bytes_at(0, min(len(message), DROPPABLE_SCAN_CHARS))
            except Exception:
                return False
            head = raw.decode("latin-1")
        m = _TYPE_PREFIX.search(head)
        return m is not None and m.group(1) in AUDIO_DELTA_TYPES

    def audio_samples(self, message: Incoming) -> int:
        return _base64_samples(message, "delta") if self.droppable(message) else 0

    def decode(self, message: Incoming) -> list[Event]:
        """Events of one server event. Never raises: bad input becomes ``ProtocolErrorEvent``."""
        try:
            return self._decode(message)
        except Exception as exc:  # a bug: report it as a peer error, keep going
            self._protocol_errors += 1
            return [ProtocolErrorEvent(internal_error_reason(exc))]

    def take_outgoing(self) -> list[Message]:
        """Messages decided while receiving (a deferred ``response.create``): send them now."""
        out, self._outbox = self._outbox, []
        return out

    def _decode(self, message: Incoming) -> list[Event]:
        text = _text_of(message)
        if isinstance(text, ProtocolErrorEvent):
            self._bad_json += 1
            return [text]
        try:
            event = decode_json(text)
        except ValueError as exc:
            self._bad_json += 1
            return [ProtocolErrorEvent(f"invalid JSON ({len(text)} characters): {str(exc)[:200]}", len(text))]
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self._protocol_errors += 1
            what = "an object without a string 'type'" if isinstance(event, dict) else f"a JSON {type(event).__name__}"
            return [ProtocolErrorEvent(f"server event is {what}", len(text))]
        kind: str = event["type"]
        self._events += 1
        self._by_type.add(kind[:80])
        kind = BETA_NAMES.get(kind, kind)
        handler = _HANDLERS.get(kind)
        if handler is not None:
            return handler(self, event)
        if kind in QUIET_TYPES:
            return []
        self._ignored += 1
        return [Ignored(kind[:80])]

    # --- session and responses

    def _on_session(self, event: dict[str, Any]) -> list[Event]:
        session = event.get("session")
        session = session if isinstance(session, dict) else {}
        modalities = session.get("output_modalities", session.get("modalities"))
        if isinstance(modalities, list):
            self._session_audio = "audio" in modalities
        return [SessionReady(session)]

    def _on_response_created(self, event: dict[str, Any]) -> list[Event]:
        response = event.get("response")
        response = response if isinstance(response, dict) else {}
        rid = _str(response.get("id"))
        modalities = response.get("output_modalities", response.get("modalities"))
        if isinstance(modalities, list):
            self._response_audio[rid] = "audio" in modalities
        self._active[rid] = None
        while len(self._active) > self._max_tracked:  # a server that never says done cannot grow it
            del self._active[next(iter(self._active))]
        if rid not in self._responses:
            self._responses[rid] = _Response()
        self._create_event_id = None  # the slot is taken: by ours, or by one the server started
        self._create_retried = False
        return []

    def _on_response_done(self, event: dict[str, Any]) -> list[Event]:
        response = event.get("response")
        response = response if isinstance(response, dict) else {}
        rid = _str(response.get("id"))
        out: list[Event] = []
        for item_id, item in list(self._audio_items.items()):
            if item.response_id == rid and not item.final:
                item.final = True
                out.append(AudioChunk(item_id, SAMPLE_RATE, b"", 0, True))
        ended = [c for c in self._calls.values() if c.response_id == rid]
        withdrawn = tuple(c.call_id for c in ended if not c.failed)  # a failed call was answered already
        for call in ended:
            self._drop_call(call.call_id)
        for call_id in withdrawn:
            self._cancelled_calls[call_id] = True
        if withdrawn:
            out.append(ToolCallCancelled(withdrawn))
        self._active.pop(rid, None)
        self._wait_for_done = False
        reply = self._replies.pop(rid, None)
        self._reply_chars.pop(rid, None)
        if reply is not None:
            self._remember("assistant", "".join(reply[1:]), reply[0])
        state = self._responses.get(rid)
        if state is None:
            state = self._responses[rid] = _Response()
        state.done = True
        if response.get("status") == "cancelled" and state.pending:
            # A barge-in cancelled the response: its calls still waiting (for approval, or an
            # async tool still running) are withdrawn, as Gemini's toolCallCancellation does.
            # The user spoke over them; answering them would start a stale response.
            late = tuple(sorted(state.pending))
            for call_id in late:
                self._cancelled_calls[call_id] = True
            state.pending.clear()
            state.create_requested = True
            out.append(ToolCallCancelled(late))
        if state.had_calls and not state.pending and not state.create_requested:
            state.create_requested = True
            self._want_create = True
        self._outbox.extend(self._flush_create())
        fields = {k: response[k] for k in ("id", "status", "status_details") if k in response}
        out.append(ResponseDone(fields))
        usage = response.get("usage")
        if isinstance(usage, dict):
            for key in self._usage:
                value = usage.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    self._usage[key] += value
            out.append(UsageReport("usage", usage))
        out.append(TurnEnded(fields))
        return out

    def _on_rate_limits(self, event: dict[str, Any]) -> list[Event]:
        limits = event.get("rate_limits")
        self._rate_limits = limits if isinstance(limits, list) else []
        return [UsageReport("rate_limits", {"rate_limits": self._rate_limits})]

    def _on_error(self, event: dict[str, Any]) -> list[Event]:
        self._errors += 1
        error = event.get("error")
        error = error if isinstance(error, dict) else {}
        code = _str(error.get("code")) or _str(error.get("type")) or "error"
        message = _str(error.get("message"))
        linked = _str(error.get("event_id"))
        ours = (linked and linked in (self._create_event_id, self._last_create_id)) or (
            not linked and self._create_event_id is not None and "response.create" in message
        )
        if ours:  # (a response the server started may have taken the slot before ours arrived)
            self._create_event_id = self._last_create_id = None
            self._response_create_failed += 1
            if code == "conversation_already_has_active_response" and not self._create_retried:
                self._create_retried = True
                self._want_create = True  # once more, after the active response is done
                self._wait_for_done = True  # even if we have not seen that response start
            self._outbox.extend(self._flush_create())
        return [ServerError(code[:200], message[:2000])]

    # --- audio

    def _on_audio_delta(self, event: dict[str, Any]) -> list[Event]:
        delta = event.get("delta")
        item_id = event.get("item_id")
        if not isinstance(delta, str) or not isinstance(item_id, str):
            self._protocol_errors += 1
            return [ProtocolErrorEvent("audio delta without a string 'delta' and 'item_id'")]
        if not delta:
            return []
        try:
            pcm = _pcm_from_base64(delta)
        except ValueError as exc:
            self._protocol_errors += 1
            return [ProtocolErrorEvent(f"audio delta of {len(delta)} characters is not base64: {exc}", len(delta))]
        samples = len(pcm) // 2
        item = self._audio_items.get(item_id)
        if item is None:
            content_index = event.get("content_index")
            item = self._audio_items[item_id] = _AudioItem(
                _str(event.get("response_id")), content_index if type(content_index) is int else 0
            )
        item.samples += samples
        self._audio_samples += samples
        return [AudioChunk(item_id, SAMPLE_RATE, pcm, samples, False)]

    def _on_audio_done(self, event: dict[str, Any]) -> list[Event]:
        item_id = event.get("item_id")
        item = self._audio_items.get(item_id) if isinstance(item_id, str) else None
        if item is None or item.final:
            return []
        item.final = True
        return [AudioChunk(item_id, SAMPLE_RATE, b"", 0, True)]  # type: ignore[arg-type]

    def _on_speech_started(self, event: dict[str, Any]) -> list[Event]:
        return [Interrupted(None, "speech_started")]

    # --- text

    def _audio_mode(self, event: dict[str, Any]) -> bool:
        rid = event.get("response_id")
        mode = self._response_audio.get(rid) if isinstance(rid, str) else None
        return self._session_audio if mode is None else mode

    def _text_delta(self, event: dict[str, Any], from_audio: bool) -> list[Event]:
        delta = event.get("delta")
        if not isinstance(delta, str):
            self._protocol_errors += 1
            return [ProtocolErrorEvent("text delta without a string 'delta'")]
        if self._audio_mode(event) != from_audio:
            self._text_dropped += 1
            return []
        item_id = event.get("item_id")
        if isinstance(item_id, str):
            self._text_items[item_id] = True
        self._note_reply(event, delta)
        return [TextDelta(delta)] if delta else []

    def _note_reply(self, event: dict[str, Any], text: str) -> None:
        """Keep the text a response rendered (the conversation to replay in a new session)."""
        rid, item_id = event.get("response_id"), event.get("item_id")
        if not isinstance(rid, str) or not text:
            return
        reply = self._replies.get(rid)
        if reply is None:
            if len(self._replies) >= self._max_tracked:
                return
            reply = self._replies[rid] = [item_id if isinstance(item_id, str) else ""]
        kept = self._reply_chars.get(rid, 0)  # a running total: a sum per delta made long replies quadratic
        if kept < MAX_HISTORY_ITEM_CHARS:
            reply.append(text)
            self._reply_chars[rid] = kept + len(text)

    def _text_done(self, event: dict[str, Any], from_audio: bool, key: str) -> list[Event]:
        full = event.get(key)
        item_id = event.get("item_id")
        if not isinstance(full, str) or not full or self._audio_mode(event) != from_audio:
            return []
        if isinstance(item_id, str):
            if item_id in self._text_items:
                return []
            self._text_items[item_id] = True
        self._note_reply(event, full)
        return [TextDelta(full)]

    def _on_transcript_delta(self, event: dict[str, Any]) -> list[Event]:
        return self._text_delta(event, True)

    def _on_text_delta(self, event: dict[str, Any]) -> list[Event]:
        return self._text_delta(event, False)

    def _on_transcript_done(self, event: dict[str, Any]) -> list[Event]:
        return self._text_done(event, True, "transcript")

    def _on_text_done(self, event: dict[str, Any]) -> list[Event]:
        return self._text_done(event, False, "text")

    def _on_user_delta(self, event: dict[str, Any]) -> list[Event]:
        delta = event.get("delta")
        item_id = event.get("item_id")
        if isinstance(item_id, str):
            self._user_items[item_id] = True
        return [UserTranscript(delta)] if isinstance(delta, str) and delta else []

    def _on_user_completed(self, event: dict[str, Any]) -> list[Event]:
        transcript = event.get("transcript")
        item_id = event.get("item_id")
        if isinstance(item_id, str) and self._user_items.pop(item_id, None):
            return []
        return [UserTranscript(transcript)] if isinstance(transcript, str) and transcript else []

    # --- tool calls

    def _on_item_added(self, event: dict[str, Any]) -> list[Event]:
        item = event.get("item")
        if not isinstance(item, dict) or item.get("type") != "function_call":
            return []
        call_id = item.get("call_id")
        if not isinstance(call_id, str) or call_id in self._calls or call_id in self._closed_calls:
            return []
        return self._open_call(call_id, _str(item.get("id")), _str(event.get("response_id")), item.get("name"))

    def _open_call(self, call_id: str, item_id: str, response_id: str, name: Any) -> list[Event]:
        problem = call_id_problem(call_id)
        if problem is not None:
            self._protocol_errors += 1
            return [ProtocolErrorEvent(problem)]
        if len(self._calls) >= self.max_open_calls:
            self._closed_calls[call_id] = response_id
            self._pending(response_id, call_id)
            msg = f"{len(self._calls)} calls already open, limit is {self.max_open_calls}"
            return [ToolCallInvalid(call_id, _str(name) or None, {"type": "too_many_open_calls", "message": msg})]
        call = self._calls[call_id] = _Call(call_id, item_id, response_id, name if isinstance(name, str) else None)
        if item_id:
            self._call_by_item[item_id] = call_id
        if call.name:
            call.started = True
            return [ToolCallStarted(call_id, call.name)]
        return []

    def _find_call(self, event: dict[str, Any]) -> _Call | None:
        call_id = event.get("call_id")
        if isinstance(call_id, str) and call_id in self._calls:
            return self._calls[call_id]
        item_id = event.get("item_id")
        if isinstance(item_id, str) and item_id in self._call_by_item:
            return self._calls.get(self._call_by_item[item_id])
        return None

    def _on_arguments_delta(self, event: dict[str, Any]) -> list[Event]:
        delta = event.get("delta")
        if not isinstance(delta, str):
            self._protocol_errors += 1
            return [ProtocolErrorEvent("function call arguments delta without a string 'delta'")]
        out: list[Event] = []
        call = self._find_call(event)
        if call is None:
            call_id = event.get("call_id")
            if not isinstance(call_id, str) or call_id in self._closed_calls:
                return []
            out += self._open_call(
                call_id, _str(event.get("item_id")), _str(event.get("response_id")), event.get("name")
            )
            call = self._calls.get(call_id)
            if call is None:
                return out
        if call.failed or not delta:
            return out
        size = call.size + len(delta.encode("utf-8", "surrogatepass"))
        if size > self.max_argument_bytes:
            call.failed = True
            call.parts.clear()
            self._closed_calls[call.call_id] = call.response_id  # answered from now on: see tool_result
            self._pending(call.response_id, call.call_id)
            msg = f"arguments reached {size} bytes, limit is {self.max_argument_bytes}"
            out.append(ToolCallInvalid(call.call_id, call.name, {"type": "arguments_too_large", "message": msg}))
            return out
        call.size = size
        call.parts.append(delta)
        if call.started:
            out.append(ToolCallArgumentsDelta(call.call_id, delta))
        return out

    def _on_arguments_done(self, event: dict[str, Any]) -> list[Event]:
        call = self._find_call(event)
        if call is None:
            call_id = event.get("call_id")
            if not isinstance(call_id, str) or call_id in self._closed_calls:
                return []
            out = self._open_call(
                call_id, _str(event.get("item_id")), _str(event.get("response_id")), event.get("name")
            )
            call = self._calls.get(call_id)
            if call is None:
                return out
            return out + self._finish(call, event.get("arguments"), event.get("name"))
        return self._finish(call, event.get("arguments"), event.get("name"))

    def _on_item_done(self, event: dict[str, Any]) -> list[Event]:
        item = event.get("item")
        if not isinstance(item, dict) or item.get("type") != "function_call":
            return []
        call_id = item.get("call_id")
        call = self._calls.get(call_id) if isinstance(call_id, str) else None
        if call is None:
            if not isinstance(call_id, str) or call_id in self._closed_calls:
                return []
            out = self._open_call(call_id, _str(item.get("id")), _str(event.get("response_id")), item.get("name"))
            call = self._calls.get(call_id)
            return out + self._finish(call, item.get("arguments"), item.get("name")) if call is not None else out
        return self._finish(call, item.get("arguments"), item.get("name"))

    def _finish(self, call: _Call, arguments: Any, name: Any) -> list[Event]:
        """The call's item is done: one ToolCallReady or ToolCallInvalid (unless it failed already)."""
        self._drop_call(call.call_id)
        self._closed_calls[call.call_id] = call.response_id
        self._tool_calls += 1
        out: list[Event] = []
        if not call.name and isinstance(name, str) and name:
            call.name = name
        if call.failed:  # reported (and pending) when it failed
            return out
        if not call.started and call.name:
            out.append(ToolCallStarted(call.call_id, call.name))
        self._pending(call.response_id, call.call_id)
        raw = arguments if isinstance(arguments, str) else "".join(call.parts)
        out.append(self._ready(call.call_id, call.name, raw))
        return out

    def _ready(self, call_id: str, name: str | None, raw: str) -> ToolCallReady | ToolCallInvalid:
        if not name:
            return ToolCallInvalid(call_id, None, {"type": "missing_name", "message": "the call does not name a tool"})
        if len(name) > MAX_TOOL_NAME_CHARS:
            msg = f"name of {len(name)} characters, limit is {MAX_TOOL_NAME_CHARS}"
            return ToolCallInvalid(call_id, name[:MAX_TOOL_NAME_CHARS] + "…", {"type": "invalid_name", "message": msg})
        return parse_arguments(call_id, name, raw, self.tool_schemas.get(name), self.max_argument_bytes)

    def _drop_call(self, call_id: str) -> None:
        call = self._calls.pop(call_id, None)
        if call is not None and self._call_by_item.get(call.item_id) == call_id:
            del self._call_by_item[call.item_id]

    def _pending(self, response_id: str, call_id: str) -> None:
        state = self._responses.get(response_id)
        if state is None:
            state = self._responses[response_id] = _Response()
        state.had_calls = True
        state.pending.add(call_id)

    # ------------------------------------------------------------------ sending

    def _flush_create(self) -> list[Message]:
        """``response.create`` if one is owed and none is in flight (the one-in-flight rule)."""
        if not self._want_create or self._active or self._create_event_id is not None or self._wait_for_done:
            return []
        self._want_create = False
        self._response_create_sent += 1
        self._create_event_id = self._last_create_id = f"pyclient_response_create_{self._response_create_sent}"
        return [_message({"type": "response.create", "event_id": self._create_event_id})]

    def _request_response(self) -> list[Message]:
        self._want_create = True
        return self._flush_create()

    def tool_result(self, outcome: ToolOutcome) -> list[Message]:
        """A ``function_call_output`` item; ``response.create`` once all the response's calls have one."""
        if call_id_problem(outcome.call_id) is not None:
            return []  # an id that cannot be sent back (the decoder never reports one): nobody to answer
        if outcome.call_id in self._cancelled_calls:
            return []
        if outcome.ok:
            try:
                output = encode_json(outcome.result).decode("utf-8")
            except EncodeError as exc:
                output = _message({"error": {"type": "result_not_json", "message": str(exc)}})
        else:
            output = _message({"error": outcome.error or {"type": "tool_error", "message": ""}})
        item = {"type": "function_call_output", "call_id": outcome.call_id, "output": output}
        out = [_message({"type": "conversation.item.create", "item": item})]
        rid = self._closed_calls.get(outcome.call_id)
        state = self._responses.get(rid) if rid is not None else None
        if state is None:  # a call we never saw (or forgot): answer it and ask for a response
            return out + self._request_response()
        state.pending.discard(outcome.call_id)
        if state.done and not state.pending and not state.create_requested:
            state.create_requested = True
            out += self._request_response()
        return out

    def audio(self, pcm: bytes, sample_rate: int, item_id: int) -> list[Message]:
        """``input_audio_buffer.append`` of PCM16 LE mono at 24 kHz (resample before)."""
        if sample_rate != SAMPLE_RATE:
            raise UsageError(f"OpenAI Realtime takes microphone audio at {SAMPLE_RATE} Hz, got {sample_rate} Hz")
        # base64 needs no JSON escaping: build the text directly (one C call for the payload)
        return ['{"type":"input_audio_buffer.append","audio":"' + _b64(pcm) + '"}']

    def audio_end(self, item_id: int, samples: int, sample_rate: int) -> list[Message]:
        """Nothing with server VAD; without turn detection, commit the buffer and ask for a response."""
        if self.turn_detection is not None or samples <= 0:
            return []
        return [_message({"type": "input_audio_buffer.commit"}), *self._request_response()]

    def cut(self, positions: list[PlaybackPosition]) -> list[Message]:
        """``response.cancel`` (if the cut response is in flight) + one truncate per item actually cut."""
        cut: list[tuple[PlaybackPosition, _AudioItem]] = []
        seen: set[Any] = set()
        for p in positions:
            item = self._audio_items.get(p.item_id) if isinstance(p.item_id, str) else None
            if item is not None and (p.item_id in seen or call_id_problem(p.item_id) is not None):
                item = None  # twice in one cut, or an id that cannot be sent back (lone surrogate)
            seen.add(p.item_id)
            played = p.played_samples
            if (
                item is None
                or item.truncated
                or type(played) is not int
                or not 0 <= played < item.samples
                or type(p.sample_rate) is not int
                or p.sample_rate <= 0
            ):
                self._truncates_skipped += 1
                continue
            cut.append((p, item))
        out: list[Message] = []
        # A cut the server started (speech_started under server VAD) already cancelled the
        # response there: a response.cancel now only draws `response_cancel_not_active`. Only
        # a cut the page asked for (``Client.interrupt()``) cancels.
        by_page = any(p.reason == "client" for p, _ in cut)
        # A response id that cannot be sent back (not valid Unicode; found by the fuzzer) is
        # not cancelled: its items are still truncated below.
        running = [
            item.response_id
            for _, item in cut
            if item.response_id in self._active and call_id_problem(item.response_id) is None
        ]
        if by_page and running and running[0] not in self._cancelled_responses:
            self._cancelled_responses[running[0]] = True
            self._cancels_sent += 1
            out.append(_message({"type": "response.cancel", "response_id": running[0]}))
        for p, item in cut:
            item.truncated = True
            self._truncates_sent += 1
            end_ms = p.played_samples * 1000 // p.sample_rate
            out.append(
                _message(
                    {
                        "type": "conversation.item.truncate",
                        "item_id": p.item_id,
                        "content_index": item.content_index,
                        "audio_end_ms": end_ms,
                    }
                )
            )
        return out

    def text(self, text: str) -> list[Message]:
        """A user ``message`` item with ``input_text``, then ``response.create`` (one in flight)."""
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        self._remember("user", text)
        return [_message({"type": "conversation.item.create", "item": item}), *self._request_response()]

    def stats(self) -> dict[str, Any]:
        return {
            "events": self._events,
            "by_type": self._by_type.as_dict(),
            "ignored": self._ignored,
            "bad_json": self._bad_json,
            "protocol_errors": self._protocol_errors,
            "server_errors": self._errors,
            "text_dropped": self._text_dropped,
            "audio_samples": self._audio_samples,
            "tool_calls": self._tool_calls,
            "open_tool_calls": len(self._calls),
            "responses_in_flight": len(self._active) + (self._create_event_id is not None),
            "response_create_sent": self._response_create_sent,
            "response_create_failed": self._response_create_failed,
            "responses_asked_again": self.responses_asked_again,
            "response_create_waiting": self._want_create,
            "cancels_sent": self._cancels_sent,
            "truncates_sent": self._truncates_sent,
            "truncates_skipped": self._truncates_skipped,
            "rate_limits": self._rate_limits,
            "usage": dict(self._usage),
        }


def parse_arguments(
    call_id: str, name: str, raw: str, schema: dict[str, Any] | None, max_bytes: int = DEFAULT_MAX_ARGUMENT_BYTES
) -> ToolCallReady | ToolCallInvalid:
    """Whole JSON arguments -> ``ToolCallReady``, or ``ToolCallInvalid`` saying why (with the numbers)."""

    def invalid(kind: str, message: str) -> ToolCallInvalid:
        return ToolCallInvalid(call_id, name, {"type": kind, "message": message[:2000]})

    size = len(raw.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        return invalid("arguments_too_large", f"arguments of {size} bytes, limit is {max_bytes}")
    if not raw.strip():
        args: Any = {}
    else:
        try:
            args = decode_json(raw)
        except ValueError as exc:
            return invalid("invalid_arguments", f"arguments are not JSON: {exc}")
    if not isinstance(args, dict):
        return invalid("invalid_arguments", f"arguments are a JSON {type(args).__name__}, expected an object")
    if "\\u" in raw:  # a \udXXX escape can decode to a lone surrogate
        try:
            encode_json(args)
        except EncodeError as exc:
            return invalid("invalid_arguments", f"arguments are not valid Unicode: {exc}")
    if schema is not None:
        problems = validate(args, schema)
        if problems:
            return invalid("invalid_arguments", f"{name}: " + "; ".join(problems))
    return ToolCallReady(call_id, name, args)


_HANDLERS = {
    "session.created": OpenAIRealtimeCodec._on_session,
    "session.updated": OpenAIRealtimeCodec._on_session,
    "response.created": OpenAIRealtimeCodec._on_response_created,
    "response.done": OpenAIRealtimeCodec._on_response_done,
    "rate_limits.updated": OpenAIRealtimeCodec._on_rate_limits,
    "error": OpenAIRealtimeCodec._on_error,
    "response.output_audio.delta": OpenAIRealtimeCodec._on_audio_delta,
    "response.output_audio.done": OpenAIRealtimeCodec._on_audio_done,
    "input_audio_buffer.speech_started": OpenAIRealtimeCodec._on_speech_started,
    "response.output_audio_transcript.delta": OpenAIRealtimeCodec._on_transcript_delta,
    "response.output_audio_transcript.done": OpenAIRealtimeCodec._on_transcript_done,
    "response.output_text.delta": OpenAIRealtimeCodec._on_text_delta,
    "response.output_text.done": OpenAIRealtimeCodec._on_text_done,
    "conversation.item.input_audio_transcription.delta": OpenAIRealtimeCodec._on_user_delta,
    "conversation.item.input_audio_transcription.completed": OpenAIRealtimeCodec._on_user_completed,
    "response.output_item.added": OpenAIRealtimeCodec._on_item_added,
    "response.output_item.done": OpenAIRealtimeCodec._on_item_done,
    "response.function_call_arguments.delta": OpenAIRealtimeCodec._on_arguments_delta,
    "response.function_call_arguments.done": OpenAIRealtimeCodec._on_arguments_done,
}
