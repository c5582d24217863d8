"""Gemini Live (``BidiGenerateContent`` over WebSocket): a sans-I/O codec (no ``js`` import).

Sources (read at the commit named in tests/unit/fixtures/gemini_live/README.md): googleapis/js-genai
``src/live.ts`` (URL and method per credential, JSON in text *or* binary frames, ``setup`` first,
wait for ``setupComplete``), ``src/converters/_live_converters.ts`` (where each setting goes in
``setup``), ``src/types.ts`` (every server message, ``FunctionResponse``, ``Schema``),
``src/_transformers.ts`` (``processJsonSchema``: JSON Schema -> Gemini ``Schema``), and the
recorded sessions under ``test/system/recordings/live_ML_Dev_*.websocket.log``.

Connecting: an ephemeral token (``auth_tokens/...``, minted by the page's backend) goes to
``v1alpha...BidiGenerateContentConstrained?access_token=``; an API key to
``v1beta...BidiGenerateContent?key=`` (a token on ``?key=`` or on v1beta fails). No subprotocol.

Rules this codec keeps (where the sources leave a choice):

* **Audio items are turns.** Gemini has no item ids: the codec numbers them (int, from 1). All
  audio of one model turn is one item; ``turnComplete`` ends it with an ``AudioChunk`` of 0
  samples and ``final=True`` (only if the turn had audio), then ``TurnEnded``. ``interrupted``
  is ``Interrupted(item)`` for the item playing, and later audio of the same turn starts a new item
  (never appended to a flushed one). ``generationComplete`` is ``ResponseDone``.
* **One transcript source per turn.** With audio output on (the default), the words come as
  ``outputTranscription``; a turn renders the first source that arrives in it: audio or
  ``outputTranscription`` lock the turn to the transcription, a ``modelTurn`` text part arriving
  first (a server answering in text) locks it to text parts. The other source's text in that
  turn is dropped and counted (``text_dropped``). With ``audio_output=False`` only text parts
  render. Thought parts (``thought: true``) never render.
* **Tool calls are whole.** Each ``toolCall.functionCalls[]`` entry is ``ToolCallStarted`` +
  ``ToolCallReady`` (arguments validated against the registered tool's JSON Schema: a mismatch
  is ``ToolCallInvalid`` ``invalid_arguments``). ``toolCallCancellation.ids`` is
  ``ToolCallCancelled``; a result for a cancelled call is never sent (``tool_result`` returns
  ``[]``; the codec remembers the last ``max_tracked`` cancelled ids).
* **Tool results** are ``toolResponse.functionResponses[{id, name, response}]`` with ``response``
  ``{"output": result}`` or ``{"error": {...}}`` (the keys ``FunctionResponse.response`` documents).
* **Set-up first.** ``start`` sends ``setup``; ``ready`` stays False until ``setupComplete``
  arrives, and the connection core holds every other message until then.
* **Tools' schemas** are converted to Gemini's OpenAPI-subset ``Schema`` as js-genai's
  ``processJsonSchema`` does (upper-case types, ``anyOf`` with ``null`` -> ``nullable``, no
  ``additionalProperties``), with enum values as strings (``format: "enum"`` for non-string
  types); ``json_schema_parameters=True`` sends them unchanged as ``parametersJsonSchema`` instead.
* ``cut`` sends nothing: Gemini truncates server-side. ``goAway`` and ``sessionResumptionUpdate``
  are kept in ``stats()`` (the latest resumable handle resumes the session on a new socket).
* **A resumed session hears the user again.** A handle holds the session as it was when the
  handle was made; a user turn (``text``) sent after it is not in it, and Gemini does not
  regenerate a turn a lost connection cut short. The Gemini API refuses
  ``sessionResumption.transparent`` (Vertex only: js-genai throws "transparent parameter is not
  supported in Gemini API"), so the server never says which client messages a handle covers.
  The codec keeps each user turn until a resumable handle arrives after a model turn began
  after it (the server consumed it before that turn began); after any change of connection (a
  loss or a ``goAway`` switch) the turns still kept are sent again, in order, right after
  ``setupComplete`` (``take_outgoing``).
  Bounded: ``MAX_KEPT_TURNS`` turns, ``MAX_KEPT_CHARS`` characters (the oldest go first,
  counted). Microphone audio is not kept: it is live, and the microphone pauses during the gap.
"""

from __future__ import annotations

import binascii
import re
from collections import deque
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ..errors import EncodeError, UsageError
from ..events import (
    AudioChunk,
    Event,
    GoAway,
    Ignored,
    Interrupted,
    ProtocolErrorEvent,
    ResponseDone,
    ResumptionUpdate,
    SessionReady,
    TextDelta,
    ToolCallCancelled,
    ToolCallInvalid,
    ToolCallReady,
    ToolCallStarted,
    TurnEnded,
    UsageReport,
    UserTranscript,
)
from ..frames import (
    MAX_SAMPLE_RATE,
    MAX_TOOL_NAME_CHARS,
    MIN_SAMPLE_RATE,
    call_id_problem,
    decode_json,
    encode_json,
    internal_error_reason,
)
from ..playback import PlaybackPosition
from ..schema import validate
from ..tools import ToolOutcome
from .base import Capabilities, Codec, Incoming, Message, SessionConfig
from .jsonwire import Bounded as _Bounded
from .jsonwire import Counter as _Counter
from .jsonwire import base64_samples as _base64_samples
from .jsonwire import message as _message
from .jsonwire import pcm_from_base64 as _pcm_from_base64
from .jsonwire import text_of as _text_of

DEFAULT_HOST = "wss://generativelanguage.googleapis.com"
TOKEN_PATH = "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained"
KEY_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
TOKEN_PREFIX = "auth_tokens/"
DEFAULT_MODEL = "gemini-2.5-flash-native-audio-latest"  # js-genai sdk-samples/live_server.ts (Gemini API)
INPUT_RATE = 16_000
OUTPUT_RATE = 24_000  # when a mimeType names no rate
DEFAULT_MAX_TRACKED = 256
MAX_KEPT_TURNS = 32  # user turns kept to send again after a change of connection
MAX_KEPT_CHARS = 256 * 1024
MAX_SCHEMA_DEPTH = 32

# Known top-level messages this client has no use for: counted in by_type, no event.
QUIET_KEYS = frozenset({"voiceActivity", "voiceActivityDetectionSignal"})

_RATE = re.compile(r"rate=(\d{1,6})")
_DURATION = re.compile(r"^\s*(-?\d{1,12})(?:\.(\d{1,9}))?s\s*$")
_AUDIO_ONLY_PREFIX = re.compile(
    r'^\s*\{\s*"serverContent"\s*:\s*\{\s*"modelTurn"\s*:\s*\{\s*"(?:parts|role)"\s*:\s*[\["]'
)
_KEY = re.compile(r'"([A-Za-z_]\w{0,40})"\s*:')
_MIME = re.compile(r'"mimeType"\s*:\s*"([^"]*)"')
_AUDIO_ONLY_KEYS = frozenset({"serverContent", "modelTurn", "parts", "role", "inlineData", "mimeType", "data"})
_GEMINI_TYPES = frozenset({"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT"})

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_duration_ms(value: Any) -> int | None:
    """A protobuf JSON Duration (``"30s"``, ``"1.5s"``) in whole milliseconds; None if it is not one."""
    if not isinstance(value, str):
        return None
    m = _DURATION.match(value)
    if m is None:
        return None
    seconds = int(m.group(1))
    frac = (m.group(2) or "").ljust(9, "0")
    nanos = int(frac)
    ms = abs(seconds) * 1000 + nanos // 1_000_000
    return -ms if value.strip().startswith("-") else ms


def gemini_schema(schema: Any, depth: int = 0) -> dict[str, Any]:
    """Our JSON Schema in Gemini's ``Schema`` dialect, as js-genai's ``processJsonSchema`` converts it."""
    if not isinstance(schema, dict) or depth > MAX_SCHEMA_DEPTH:
        return {}
    out: dict[str, Any] = {}
    any_of = schema.get("anyOf")
    if isinstance(any_of, list) and len(any_of) == 2 and all(isinstance(b, dict) for b in any_of):
        if any_of[0].get("type") == "null":
            out["nullable"] = True
            schema = any_of[1]
        elif any_of[1].get("type") == "null":
            out["nullable"] = True
            schema = any_of[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        names = [k for k in kind if isinstance(k, str)]
        if "null" in names:
            out["nullable"] = True
        rest = [k for k in names if k != "null"]
        if len(rest) == 1:
            out["type"] = _gemini_type(rest[0])
        elif rest:
            out["anyOf"] = [{"type": _gemini_type(k)} for k in rest]
    for key, value in schema.items():
        if value is None or key == "additionalProperties":
            continue  # Gemini's Schema has no additionalProperties
        if key == "type":
            if isinstance(value, str):
                if value == "null":
                    out["nullable"] = True
                else:
                    out["type"] = _gemini_type(value)
        elif key == "items":
            out["items"] = gemini_schema(value, depth + 1)
        elif key == "anyOf" and isinstance(value, list):
            branches = []
            for branch in value:
                if isinstance(branch, dict) and branch.get("type") == "null":
                    out["nullable"] = True
                else:
                    branches.append(gemini_schema(branch, depth + 1))
            if branches:
                out["anyOf"] = branches
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {str(k): gemini_schema(v, depth + 1) for k, v in value.items()}
        elif key == "enum" and isinstance(value, list):
            if None in value:
                out["nullable"] = True
            out["enum"] = [v if isinstance(v, str) else encode_json(v).decode("utf-8") for v in value if v is not None]
        else:
            out[key] = value
    if "enum" in out and out.get("type") not in (None, "STRING"):
        out["format"] = "enum"
    return out


def _gemini_type(name: str) -> str:
    upper = name.upper()
    return upper if upper in _GEMINI_TYPES else "TYPE_UNSPECIFIED"


class GeminiLiveCodec(Codec):
    """The Gemini Live protocol (see the module docstring for the rules it keeps)."""

    name: ClassVar[str] = "gemini-live"
    capabilities: ClassVar[Capabilities] = Capabilities(resume=True)
    input_audio_rate: ClassVar[int | None] = INPUT_RATE

    def __init__(
        self,
        *,
        api_key: bool = False,
        model: str | None = None,
        resume_handle: str | None = None,
        audio_output: bool = True,
        context_window_compression: dict[str, Any] | None = None,
        json_schema_parameters: bool = False,
        max_tracked: int = DEFAULT_MAX_TRACKED,
    ) -> None:
        if max_tracked < 1:
            raise UsageError(f"max_tracked must be positive, got {max_tracked}")
        self.api_key = api_key
        self.model = model
        self.resume_handle = resume_handle
        self.audio_output = audio_output
        self.context_window_compression = context_window_compression
        self.json_schema_parameters = json_schema_parameters
        self.tool_schemas: dict[str, dict[str, Any]] = {}

        self._ready = False
        self._item = 1  # audio item (turn) numbering
        self._item_samples = 0
        self._item_rate = OUTPUT_RATE
        self._text_source: str | None = None  # "transcript" | "parts" for the current turn
        self._call_names = _Bounded(max_tracked)  # call_id -> name of calls not yet answered
        self._cancelled = _Bounded(max_tracked)  # call_id -> True
        self._has_escapes = False

        self._by_type = _Counter()
        self._messages = 0
        self._ignored = 0
        self._bad_json = 0
        self._protocol_errors = 0
        self._text_dropped = 0
        self._audio_samples = 0
        self._turns = 0
        self._interruptions = 0
        self._tool_calls = 0
        self._cancelled_calls = 0
        self._results_suppressed = 0
        self._usage: dict[str, int] = {"promptTokenCount": 0, "responseTokenCount": 0, "totalTokenCount": 0}
        self._goaways = 0
        self._goaway_ms: int | None = None
        self._latest_handle: str | None = None
        self._resumable: bool | None = None
        self._in_turn = False  # model content arrived since the latest resumable handle
        self._turn_began = False  # model content arrived since the last turnComplete
        # User turns a resumed session may not hold: [message, answered by a turn in progress]
        self._kept: deque[list[Any]] = deque()
        self._kept_chars = 0
        self._resend: list[str] = []  # to send again once the next connection is set up
        self._outbox: list[str] = []
        self._turns_resent = 0
        self._turns_not_kept = 0

    # ------------------------------------------------------------------ connecting

    def _is_key(self, token: str | None) -> bool:
        return self.api_key or (token is not None and token != "" and not token.startswith(TOKEN_PREFIX))

    def url(self, url: str, *, token: str | None = None, model: str | None = None) -> str:
        """Google's endpoint (or ``url``'s scheme, host and path) with ``access_token=`` or ``key=``."""
        key = self._is_key(token)
        path = KEY_PATH if key else TOKEN_PATH
        parts = urlsplit(DEFAULT_HOST if url in ("", "default") else url)
        if parts.path in ("", "/"):
            parts = parts._replace(path=path)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("key", "access_token")]
        if token:
            query.append(("key" if key else "access_token", token))
        return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote, safe="/")))

    def subprotocols(self, *, token: str | None = None, credit: bool = False) -> list[str]:
        return []

    def start(self, config: SessionConfig, subprotocol: str) -> list[Message]:
        """The ``setup`` message; nothing else may be sent until ``setupComplete`` (``ready``)."""
        self.tool_schemas = {t.name: t.parameters for t in config.tools}
        self._ready = False
        model = config.model or self.model or DEFAULT_MODEL
        setup: dict[str, Any] = {"model": model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"}
        generation: dict[str, Any] = {"responseModalities": ["AUDIO" if self.audio_output else "TEXT"]}
        if config.voice:
            generation["speechConfig"] = {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": config.voice}}}
        setup["generationConfig"] = generation
        if config.instructions:
            setup["systemInstruction"] = {"role": "user", "parts": [{"text": config.instructions}]}
        if config.tools:
            declarations = []
            for t in config.tools:
                decl: dict[str, Any] = {"name": t.name, "description": t.description}
                if self.json_schema_parameters:
                    decl["parametersJsonSchema"] = t.parameters
                elif t.parameters.get("properties") or t.parameters.get("type") not in ("object", None):
                    decl["parameters"] = gemini_schema(t.parameters)  # a function without parameters has none
                declarations.append(decl)
            setup["tools"] = [{"functionDeclarations": declarations}]
        setup["inputAudioTranscription"] = {}
        if self.audio_output:
            setup["outputAudioTranscription"] = {}
        # A new connection of the same session resumes with the latest resumable handle.
        handle = self._latest_handle or self.resume_handle
        setup["sessionResumption"] = {"handle": handle} if handle else {}
        if self.context_window_compression is not None:
            setup["contextWindowCompression"] = self.context_window_compression
        return [_message({"setup": setup})]

    @property
    def ready(self) -> bool:
        return self._ready

    def resume_url(self, url: str) -> str | None:
        """The session resumes on ``url`` with the latest resumable handle (sent in ``setup``).
        Before the first turn completed there is nothing to lose: a new session starts over
        (the client takes back the cut turn). None: turns completed but no handle came."""
        return url if (self._latest_handle or self.resume_handle or self._turns == 0) else None

    def ended_by_limit(self, code: int | None, reason: str) -> bool:
        """Gemini closes with 1011 "Deadline expired before operation could complete." at the
        end of a connection's lifetime (after ``goAway``)."""
        return code == 1011 and "deadline expired" in reason.lower()

    def is_resume_point(self, event: Event) -> bool:
        """Gemini resumes from its latest resumable handle, sent after a turn completes."""
        return isinstance(event, ResumptionUpdate) and event.resumable and event.handle is not None

    @property
    def at_turn_boundary(self) -> bool:
        """Nothing arrived since the latest resumable handle (a turn's ``turnComplete`` is not
        enough: the handle after it is the resume point): switching now loses nothing."""
        return not self._in_turn

    def link_lost(self) -> None:
        """The connection was lost (or left after ``goAway``): the session goes on from the
        latest handle, a turn boundary. A turn in progress is a new audio item on the next
        connection, its text source chosen afresh; the user turns that handle may not hold go
        again once the next connection is set up."""
        if self._in_turn or self._item_samples:
            self._item += 1
        self._item_samples = 0
        self._text_source = None
        self._in_turn = self._turn_began = False
        for entry in self._kept:
            entry[1] = False  # asked again: a turn on the next connection answers it
        self._resend = [entry[0] for entry in self._kept]

    @property
    def resumption_handle(self) -> str | None:
        """The latest handle the server said the session can be resumed with (None: none yet)."""
        return self._latest_handle

    # ------------------------------------------------------------------ receiving

    def audio_samples(self, message: Incoming) -> int:
        return _base64_samples(message, "data") if self.droppable(message) else 0

    def droppable(self, message: Incoming) -> bool:
        """True only for a ``serverContent`` that carries nothing but ``inlineData`` audio parts."""
        try:
            if isinstance(message, str):
                head = message[:120]
            elif isinstance(message, (bytes, bytearray, memoryview)):
                head = bytes(message[:120]).decode("latin-1")
            else:
                head = message.bytes_at(0, min(len(message), 120)).decode("latin-1")
            if not _AUDIO_ONLY_PREFIX.match(head):
                return False  # the common case for other messages: decided from 120 characters
            if isinstance(message, str):
                text = message
            elif isinstance(message, (bytes, bytearray, memoryview)):
                text = bytes(message).decode("latin-1")
            else:
                text = message.bytes_at(0, len(message)).decode("latin-1")
        except Exception:
            return False
        # every key is one an audio-only message has (base64 holds no '"'), and every mimeType is audio
        if not all(k in _AUDIO_ONLY_KEYS for k in _KEY.findall(text)):
            return False
        mimes = _MIME.findall(text)
        return bool(mimes) and all(m.lower().startswith("audio/") for m in mimes)

    def decode(self, message: Incoming) -> list[Event]:
        """Events of one server message (text or binary JSON). Never raises."""
        try:
            return self._decode(message)
        except Exception as exc:  # a bug: report it as a peer error, keep going
            self._protocol_errors += 1
            return [ProtocolErrorEvent(internal_error_reason(exc))]

    def _decode(self, message: Incoming) -> list[Event]:
        text = _text_of(message)
        if isinstance(text, ProtocolErrorEvent):
            self._bad_json += 1
            return [text]
        try:
            obj = decode_json(text)
        except ValueError as exc:
            self._bad_json += 1
            return [ProtocolErrorEvent(f"invalid JSON ({len(text)} characters): {str(exc)[:200]}", len(text))]
        if not isinstance(obj, dict):
            self._protocol_errors += 1
            return [ProtocolErrorEvent(f"server message is a JSON {type(obj).__name__}, expected an object")]
        self._messages += 1
        self._has_escapes = "\\u" in text
        if not obj:
            self._ignored += 1
            return [Ignored("{}")]
        out: list[Event] = []
        for key, value in obj.items():
            self._by_type.add(key[:80])
            handler = _HANDLERS.get(key)
            if handler is not None:
                if key != "setupComplete" and not isinstance(value, dict):
                    self._protocol_errors += 1
                    out.append(ProtocolErrorEvent(f"'{key}' is a JSON {type(value).__name__}, expected an object"))
                    continue
                out += handler(self, value)
            elif key not in QUIET_KEYS:
                self._ignored += 1
                out.append(Ignored(key[:80]))
        return out

    def _on_setup_complete(self, value: Any) -> list[Event]:
        self._ready = True
        if self._resend:
            self._outbox += self._resend
            self._turns_resent += len(self._resend)
            self._resend = []
        return [SessionReady(value if isinstance(value, dict) else {})]

    def _model_turn_content(self) -> None:
        """Model content (text, audio, a tool call) arrived: a turn is in progress; if it just
        began, it answers every user turn sent so far."""
        self._in_turn = True
        if not self._turn_began:
            self._turn_began = True
            for entry in self._kept:
                entry[1] = True

    def _on_server_content(self, content: dict[str, Any]) -> list[Event]:
        turn = content.get("modelTurn")
        if len(content) == 1 and turn is not None:  # most messages: model content alone
            self._model_turn_content()
            return self._parts(turn, [])
        out: list[Event] = []
        if "modelTurn" in content or "outputTranscription" in content:
            self._model_turn_content()
            self._parts(turn, out)
        said = content.get("outputTranscription")
        if isinstance(said, dict) and isinstance(said.get("text"), str):
            out += self._render(said["text"], "transcript")
        heard = content.get("inputTranscription")
        if isinstance(heard, dict) and isinstance(heard.get("text"), str) and heard["text"]:
            out.append(UserTranscript(heard["text"]))
        if content.get("interrupted") is True:
            self._interruptions += 1
            out.append(Interrupted(self._item, "interrupted"))
            if self._item_samples:
                self._item += 1  # what comes after the flush is a new item
                self._item_samples = 0
        if content.get("generationComplete") is True:
            out.append(ResponseDone({"item_id": self._item}))
        if content.get("turnComplete") is True:
            if self._item_samples:
                out.append(AudioChunk(self._item, self._item_rate, b"", 0, True))
                self._item += 1
                self._item_samples = 0
            self._turns += 1
            self._text_source = None
            self._turn_began = False
            fields: dict[str, Any] = {"turn": self._turns}
            for key in ("turnCompleteReason", "waitingForInput"):
                if key in content:
                    fields[key] = content[key]
            out.append(TurnEnded(fields))
        return out

    def _parts(self, turn: Any, out: list[Event]) -> list[Event]:
        """``out`` with the events of a ``modelTurn``'s parts (audio, text) appended."""
        parts = turn.get("parts") if isinstance(turn, dict) else None
        for part in parts if isinstance(parts, list) else ():
            if not isinstance(part, dict):
                continue
            inline = part.get("inlineData")
            if isinstance(inline, dict):
                out += self._audio(inline)
            text = part.get("text")
            if isinstance(text, str) and part.get("thought") is not True:
                out += self._render(text, "parts")
        return out

    def _audio(self, inline: dict[str, Any]) -> list[Event]:
        mime = inline.get("mimeType")
        data = inline.get("data")
        if not isinstance(mime, str) or not mime.lower().startswith("audio/pcm"):
            return []  # not audio we play (an image...): nothing to render
        if not isinstance(data, str):
            self._protocol_errors += 1
            return [ProtocolErrorEvent("inlineData audio without a string 'data'")]
        m = _RATE.search(mime)
        rate = int(m.group(1)) if m else OUTPUT_RATE
        if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            self._protocol_errors += 1
            return [ProtocolErrorEvent(f"audio at {rate} Hz, expected {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}")]
        if not data:
            return []
        try:
            pcm = _pcm_from_base64(data)
        except ValueError as exc:
            self._protocol_errors += 1
            return [ProtocolErrorEvent(f"inlineData of {len(data)} characters is not base64: {exc}", len(data))]
        samples = len(pcm) // 2
        if self.audio_output and self._text_source is None:
            self._text_source = "transcript"
        self._item_samples += samples
        self._item_rate = rate
        self._audio_samples += samples
        return [AudioChunk(self._item, rate, pcm, samples, False)]

    def _render(self, text: str, source: str) -> list[Event]:
        if not self.audio_output:
            allowed = source == "parts"
        else:
            if self._text_source is None:
                self._text_source = source
            allowed = self._text_source == source
        if not allowed:
            self._text_dropped += 1
            return []
        return [TextDelta(text)] if text else []

    def _on_tool_call(self, value: dict[str, Any]) -> list[Event]:
        self._model_turn_content()
        calls = value.get("functionCalls")
        out: list[Event] = []
        for call in calls if isinstance(calls, list) else ():
            if not isinstance(call, dict):
                self._protocol_errors += 1
                out.append(ProtocolErrorEvent("functionCalls entry is not an object"))
                continue
            out += self._call(call)
        return out

    def _call(self, call: dict[str, Any]) -> list[Event]:
        call_id = call.get("id")
        problem = call_id_problem(call_id)
        if problem is not None:  # nobody could be answered about it
            self._protocol_errors += 1
            return [ProtocolErrorEvent(problem.replace("tool frame", "function call"))]
        assert isinstance(call_id, str)
        self._tool_calls += 1
        name = call.get("name")
        if not isinstance(name, str) or not name:
            missing = {"type": "missing_name", "message": "the call does not name a tool"}
            return [ToolCallInvalid(call_id, None, missing)]
        if len(name) > MAX_TOOL_NAME_CHARS:
            msg = f"name of {len(name)} characters, limit is {MAX_TOOL_NAME_CHARS}"
            shown = name[:MAX_TOOL_NAME_CHARS] + "…"
            return [ToolCallInvalid(call_id, shown, {"type": "invalid_name", "message": msg})]
        if _LONE_SURROGATE.search(name):
            # Answered under the name with U+FFFD in place (a lone surrogate cannot be encoded).
            shown = _LONE_SURROGATE.sub("\ufffd", name)
            self._call_names[call_id] = shown
            msg = "the tool name is not valid Unicode (a lone surrogate)"
            return [ToolCallInvalid(call_id, shown, {"type": "invalid_name", "message": msg})]
        self._call_names[call_id] = name
        out: list[Event] = [ToolCallStarted(call_id, name)]
        args = call.get("args", {})
        args = {} if args is None else args
        if not isinstance(args, dict):
            msg = f"args are a JSON {type(args).__name__}, expected an object"
            return [*out, ToolCallInvalid(call_id, name, {"type": "invalid_arguments", "message": msg})]
        if self._has_escapes:  # a \udXXX escape can decode to a lone surrogate
            try:
                encode_json(args)
            except EncodeError as exc:
                msg = f"arguments are not valid Unicode: {exc}"
                return [*out, ToolCallInvalid(call_id, name, {"type": "invalid_arguments", "message": msg[:2000]})]
        schema = self.tool_schemas.get(name)
        problems = validate(args, schema) if schema is not None else []
        if problems:
            msg = f"{name}: " + "; ".join(problems)
            return [*out, ToolCallInvalid(call_id, name, {"type": "invalid_arguments", "message": msg[:2000]})]
        return [*out, ToolCallReady(call_id, name, args)]

    def _on_cancellation(self, value: dict[str, Any]) -> list[Event]:
        ids = value.get("ids")
        cancelled = tuple(i for i in (ids if isinstance(ids, list) else ()) if isinstance(i, str) and i)
        for call_id in cancelled:
            self._cancelled[call_id] = True
            self._call_names.pop(call_id, None)
        self._cancelled_calls += len(cancelled)
        return [ToolCallCancelled(cancelled)] if cancelled else []

    def _on_usage(self, value: dict[str, Any]) -> list[Event]:
        for key in self._usage:
            n = value.get(key)
            if isinstance(n, int) and not isinstance(n, bool):
                self._usage[key] += n
        return [UsageReport("usage", value)]

    def _on_go_away(self, value: dict[str, Any]) -> list[Event]:
        self._goaways += 1
        self._goaway_ms = parse_duration_ms(value.get("timeLeft"))
        return [GoAway(self._goaway_ms)]

    def _on_resumption(self, value: dict[str, Any]) -> list[Event]:
        handle = value.get("newHandle")
        handle = handle if isinstance(handle, str) and handle else None
        resumable = value.get("resumable") is True
        self._resumable = resumable
        if resumable and handle:
            self._latest_handle = handle
            self._in_turn = False  # a resumed session goes on from here: nothing since is at stake
            # A user turn a model turn began to answer was consumed before that turn began: a
            # handle made since holds it.
            while self._kept and self._kept[0][1]:
                self._kept_chars -= len(self._kept.popleft()[0])
        return [ResumptionUpdate(handle, resumable)]

    # ------------------------------------------------------------------ sending

    def tool_result(self, outcome: ToolOutcome) -> list[Message]:
        """One ``toolResponse``; nothing for a call the server cancelled."""
        if call_id_problem(outcome.call_id) is not None:
            return []  # an id that cannot be sent back (the decoder never reports one): nobody to answer
        if outcome.call_id in self._cancelled:
            self._results_suppressed += 1
            return []
        name = outcome.name or self._call_names.get(outcome.call_id) or ""
        self._call_names.pop(outcome.call_id, None)
        if outcome.ok:
            response: dict[str, Any] = {"output": outcome.result}
        else:
            response = {"error": outcome.error or {"type": "tool_error", "message": ""}}
        entry = {"id": outcome.call_id, "name": name, "response": response}
        try:
            return [_message({"toolResponse": {"functionResponses": [entry]}})]
        except EncodeError as exc:
            entry["response"] = {"error": {"type": "result_not_json", "message": str(exc)}}
            return [_message({"toolResponse": {"functionResponses": [entry]}})]

    def audio(self, pcm: bytes, sample_rate: int, item_id: int) -> list[Message]:
        """``realtimeInput.audio`` of PCM16 LE mono at 16 kHz (resample before)."""
        if sample_rate != INPUT_RATE:
            raise UsageError(f"Gemini Live takes microphone audio at {INPUT_RATE} Hz, got {sample_rate} Hz")
        data = binascii.b2a_base64(pcm, newline=False).decode("ascii")  # needs no JSON escaping
        return ['{"realtimeInput":{"audio":{"data":"' + data + '","mimeType":"audio/pcm;rate=16000"}}}']

    def audio_end(self, item_id: int, samples: int, sample_rate: int) -> list[Message]:
        """``realtimeInput.audioStreamEnd``: the microphone stopped (the server may flush its VAD)."""
        return [_message({"realtimeInput": {"audioStreamEnd": True}})]

    def cut(self, positions: list[PlaybackPosition]) -> list[Message]:
        """Nothing: Gemini truncates the interrupted turn server-side."""
        return []

    def text(self, text: str) -> list[Message]:
        """A complete user turn of text (``clientContent``), kept until a resumable handle
        holds its answer (see the module docstring)."""
        turn = {"role": "user", "parts": [{"text": text}]}
        message = _message({"clientContent": {"turns": [turn], "turnComplete": True}})
        if len(message) > MAX_KEPT_CHARS:  # larger than the whole bound: sent, never kept
            self._turns_not_kept += 1
            return [message]
        self._kept.append([message, False])
        self._kept_chars += len(message)
        while len(self._kept) > MAX_KEPT_TURNS or self._kept_chars > MAX_KEPT_CHARS:
            self._kept_chars -= len(self._kept.popleft()[0])
            self._turns_not_kept += 1
        return [message]

    def take_outgoing(self) -> list[Message]:
        """The user turns sent again after a change of connection, once it is set up."""
        out, self._outbox = self._outbox, []
        return list(out)

    def stats(self) -> dict[str, Any]:
        return {
            "messages": self._messages,
            "by_type": dict(self._by_type.counts),
            "ignored": self._ignored,
            "bad_json": self._bad_json,
            "protocol_errors": self._protocol_errors,
            "text_dropped": self._text_dropped,
            "audio_samples": self._audio_samples,
            "turns": self._turns,
            "interruptions": self._interruptions,
            "tool_calls": self._tool_calls,
            "cancelled_calls": self._cancelled_calls,
            "results_suppressed": self._results_suppressed,
            "usage": dict(self._usage),
            "goaways": self._goaways,
            "goaway_time_left_ms": self._goaway_ms,
            "resumption_handle": self._latest_handle,
            "resumable": self._resumable,
            "user_turns_kept": len(self._kept),
            "user_turns_resent": self._turns_resent,
            "user_turns_not_kept": self._turns_not_kept,
        }


_HANDLERS = {
    "setupComplete": GeminiLiveCodec._on_setup_complete,
    "serverContent": GeminiLiveCodec._on_server_content,
    "toolCall": GeminiLiveCodec._on_tool_call,
    "toolCallCancellation": GeminiLiveCodec._on_cancellation,
    "usageMetadata": GeminiLiveCodec._on_usage,
    "goAway": GeminiLiveCodec._on_go_away,
    "sessionResumptionUpdate": GeminiLiveCodec._on_resumption,
}
