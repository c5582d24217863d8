"""Pipecat's websocket transport: ``ProtobufFrameSerializer`` frames with RTVI 2.x inside.

Sources (pipecat-ai 1.14.0): ``src/pipecat/frames/frames.proto``, ``serializers/protobuf.py``,
``processors/frameworks/rtvi/models.py`` and ``processor.py``; facts in ../shared/PROTOCOLS.md.

Every WebSocket message is one binary protobuf ``Frame`` with one of::

    text = 1          TextFrame {id, name, text}
    audio = 2         AudioRawFrame {id, name, audio (PCM16 LE), sample_rate, num_channels, pts?}
    transcription = 3 TranscriptionFrame {id, name, text, user_id, timestamp}
    message = 4       MessageFrame {data: JSON}: an RTVI message {label: "rtvi-ai", type, id, data}
    interruption = 5  InterruptionFrame {id, name}

Receiving:

* **Text.** ``bot-llm-text`` / ``llm-raw-text`` (what the LLM wrote) always render;
  ``bot-tts-text`` / ``tts-raw-text`` / ``bot-output`` / ``bot-transcription`` / ``TextFrame`` (the
  same words as spoken) render only while the bot has reported no LLM text (counted in
  ``text_dropped`` after that).
* **Audio.** ``AudioRawFrame`` goes to the ring at its ``sample_rate`` (stereo is downmixed to
  mono in C-level loops, never per-sample Python). Pipecat has no item ids: the codec numbers
  the bot's utterances (a new item after each interruption and each ``bot-stopped-speaking``).
* **Barge-in.** ``InterruptionFrame``, ``bot-interrupted``, and ``user-started-speaking`` while
  the bot speaks (unless ``barge_in_on_user_speech=False``) are one ``Interrupted`` for the
  utterance playing: the first signal cuts it, the others find nothing left to cut. Audio that
  still arrives is the cut utterance's: dropped (``stale_samples_dropped``) until the bot starts
  again (``bot-llm-started``, ``bot-tts-started``, ``bot-started-speaking``). Pipecat has no
  truncate: the client sends nothing back for a cut.
* **Tool calls.** ``llm-function-call-in-progress`` with a name and arguments (the bot must
  raise RTVI's ``function_call_report_level``) becomes ``ToolCallReady`` for a tool the page
  registered. A call for any other name is the bot's own (server-side) function: it is counted
  (``calls_not_ours``), never answered, since an answer would inject a result into the bot's
  pipeline. ``llm-function-call-stopped`` with ``cancelled`` withdraws a call
  (``ToolCallCancelled``).
* **Session.** ``bot-ready`` is ``SessionReady`` (nothing but ``client-ready`` is sent before it:
  the bot waits for ``client-ready`` and ignores the rest until then); ``error`` and
  ``error-response`` are ``ServerError``; ``metrics`` is a ``UsageReport``;
  ``user-transcription`` (final ones) and ``TranscriptionFrame`` are ``UserTranscript``;
  ``bot-started/stopped-speaking``, ``user-started/stopped-speaking`` and other RTVI types are
  ``ControlMessage`` events (page listeners see them) and counted by type.

Sending: ``client-ready`` first (``start``); the microphone as ``AudioRawFrame`` at 16 kHz mono;
``llm-function-call-result`` (``result`` is a dict or a string in RTVI: any other JSON value is
sent as ``{"result": value}``, an error as ``{"error": {type, message}}``); ``send-text`` for
typed text. Malformed frames (bad protobuf, a MessageFrame that is not JSON, a frame of no known
kind) are counted ``ProtocolErrorEvent``s; ``decode`` never raises on peer input.
"""

from __future__ import annotations

import array
import json
import operator
import sys
from itertools import repeat
from typing import Any, ClassVar

from ..errors import EncodeError, UsageError
from ..events import (
    AudioChunk,
    ControlMessage,
    Event,
    Interrupted,
    ProtocolErrorEvent,
    ServerError,
    ServerHello,
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
from ..frames import decode_json, encode_json
from ..tools import ToolOutcome
from .base import Capabilities, Codec, Incoming, Message, SessionConfig
from .jsonwire import Bounded, Counter
from .protowire import LEN, VARINT, Reader, WireError, as_text, len_field, string_field, varint_field

RTVI_VERSION = "2.2.0"
RTVI_LABEL = "rtvi-ai"
INPUT_RATE = 16000
DEFAULT_MAX_TRACKED = 256
MAX_CALL_ID_CHARS = 256
MAX_RTVI_BYTES = 1 << 20  # a MessageFrame's JSON larger than this is refused (counted)

TEXT, AUDIO, TRANSCRIPTION, MESSAGE, INTERRUPTION = 1, 2, 3, 4, 5
_KINDS = {
    TEXT: "text",
    AUDIO: "audio",
    TRANSCRIPTION: "transcription",
    MESSAGE: "message",
    INTERRUPTION: "interruption",
}
_AUDIO_KEY = bytes([AUDIO << 3 | LEN])  # the first byte of every audio Frame

LLM_TEXT = ("bot-llm-text", "llm-raw-text")
SPOKEN_TEXT = ("bot-tts-text", "tts-raw-text", "bot-output", "bot-transcription")


def _sendable_id(call_id: Any) -> bool:
    """A call id we can echo back: a non-empty string of valid Unicode, at most 256 characters."""
    if not isinstance(call_id, str) or not call_id or len(call_id) > MAX_CALL_ID_CHARS:
        return False
    try:
        call_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _safe_text(text: Any) -> str:
    """A peer's string made valid Unicode (lone surrogates escaped) for echoing back."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8") if text is not None else ""


def _pcm_mono(pcm: Any, channels: int) -> Any:
    """Interleaved PCM16 to mono: the channels' mean, in C-level loops (``map``), no Python
    per sample. ``pcm`` is bytes (CPython) or a JS view (the page: copied once)."""
    if channels <= 1:
        return pcm
    raw = pcm if isinstance(pcm, (bytes, bytearray, memoryview)) else pcm.to_bytes()
    samples = array.array("h")
    samples.frombytes(bytes(raw[: len(raw) - len(raw) % (2 * channels)]))
    if sys.byteorder == "big":
        samples.byteswap()
    total = samples[0::channels]
    summed = list(total)
    for c in range(1, channels):
        summed = list(map(operator.add, summed, samples[c::channels]))
    mono = array.array("h", map(operator.floordiv, summed, repeat(channels)))
    if sys.byteorder == "big":
        mono.byteswap()
    return mono.tobytes()


class PipecatCodec(Codec):
    """Pipecat's protobuf websocket frames with RTVI 2.x (see the module docstring)."""

    name: ClassVar[str] = "pipecat"
    capabilities: ClassVar[Capabilities] = Capabilities()
    input_audio_rate: ClassVar[int | None] = INPUT_RATE

    def __init__(
        self,
        *,
        library_version: str = "0.1.0",
        max_tracked: int = DEFAULT_MAX_TRACKED,
        audio_response: bool = True,
        barge_in_on_user_speech: bool = True,
    ) -> None:
        if max_tracked < 1:
            raise UsageError(f"max_tracked must be positive, got {max_tracked}")
        self.library_version = library_version
        self.audio_response = audio_response
        # user-started-speaking while the bot speaks cuts its audio (Pipecat's default: the
        # bot allows interruptions). False for a bot whose interruption strategy may keep
        # talking: then only InterruptionFrame and bot-interrupted cut.
        self.barge_in_on_user_speech = barge_in_on_user_speech
        self.tool_names: frozenset[str] = frozenset()
        self._ready = False
        self._ids = 0
        self._item = 1
        self._item_audio = False  # the current utterance has audio
        self._stale = False  # after a cut, until the bot starts anew: late audio of the cut utterance
        self._bot_speaking = False
        self._llm_text_seen = False
        self._rate = 24000  # of the last audio frame
        self._calls = Bounded(max_tracked)  # call_id -> (name, arguments) of calls not yet answered
        self._cancelled = Bounded(max_tracked)  # call_id -> True

        self._by_type = Counter()
        self._by_kind = Counter()
        self._messages = 0
        self._malformed = 0
        self._text_dropped = 0
        self._audio_samples = 0
        self._stale_samples = 0
        self._audio_frames = 0
        self._interruptions = 0
        self._tool_calls = 0
        self._calls_not_ours = 0
        self._calls_unreported = 0
        self._results_suppressed = 0
        self._cancelled_calls = 0
        self._errors = 0
        self._mic_samples = 0
        self._bot_ready: dict[str, Any] | None = None

    # ------------------------------------------------------------------ connecting

    def subprotocols(self, *, token: str | None = None, credit: bool = False) -> list[str]:
        return []

    def start(self, config: SessionConfig, subprotocol: str) -> list[Message]:
        """``client-ready``: the bot waits for it before it says ``bot-ready``."""
        self.tool_names = frozenset(t.name for t in config.tools)
        self._ready = False
        about = {"library": "pyclient", "library_version": self.library_version, "platform": "pyodide"}
        return [self._rtvi("client-ready", {"version": RTVI_VERSION, "about": about})]

    @property
    def ready(self) -> bool:
        return self._ready

    # ------------------------------------------------------------------ receiving

    def droppable(self, message: Incoming) -> bool:
        """Audio frames (``Frame.audio``): decided from the first byte."""
        try:
            if isinstance(message, str):
                return False
            if isinstance(message, (bytes, bytearray, memoryview)):
                return bytes(message[:1]) == _AUDIO_KEY
            return len(message) > 0 and message.bytes_at(0, 1) == _AUDIO_KEY
        except Exception:
            return False

    def audio_samples(self, message: Incoming) -> int:
        if not self.droppable(message):
            return 0
        try:
            frame = self._frame(message)
            if frame is None or frame[0] != AUDIO:
                return 0
            audio, _rate, channels = self._audio_fields(frame[1])
            return len(audio) // (2 * max(1, channels))
        except Exception:
            return 0

    def decode(self, message: Incoming) -> list[Event]:
        self._messages += 1
        try:
            return self._decode(message)
        except WireError as exc:
            return self._malformed_event(f"not a Pipecat protobuf frame: {exc}", message)
        except Exception as exc:  # a bug, not the peer: this frame is lost, the stream goes on
            return self._malformed_event(f"internal decoder error: {type(exc).__name__}: {exc}", message)

    def _malformed_event(self, reason: str, message: Incoming) -> list[Event]:
        self._malformed += 1
        return [ProtocolErrorEvent(reason, len(message))]

    def _frame(self, message: Incoming) -> tuple[int, Reader] | None:
        """The oneof field of a ``Frame`` and a reader of its message (None: an empty Frame)."""
        if isinstance(message, str):
            raise WireError("a text message: Pipecat's protobuf transport sends binary frames")
        reader = Reader(message)
        found = None
        for number, wire_type, span in reader.fields(raw_spans=True):
            if wire_type != LEN:
                raise WireError(f"Frame field {number} has wire type {wire_type}, expected a message")
            found = (number, reader.nested(*span))  # a oneof: the last one wins, as in protobuf
        return found

    def _decode(self, message: Incoming) -> list[Event]:
        frame = self._frame(message)
        if frame is None:
            raise WireError("an empty Frame")
        kind, body = frame
        self._by_kind.add(_KINDS.get(kind, f"field_{kind}"))
        if kind == AUDIO:
            return self._on_audio(body)
        if kind == MESSAGE:
            return self._on_message(body)
        if kind == TEXT:
            text = self._string_field(body, 3, "TextFrame.text")
            return self._render(text, "TextFrame") if text else []
        if kind == TRANSCRIPTION:
            text = self._string_field(body, 3, "TranscriptionFrame.text")
            return [UserTranscript(text)] if text else []
        if kind == INTERRUPTION:
            return self._interrupt("InterruptionFrame")
        raise WireError(f"a Frame of unknown kind (field {kind})")

    @staticmethod
    def _string_field(body: Reader, number: int, what: str) -> str:
        text = ""
        for n, wire_type, value in body.fields():
            if n == number:
                if wire_type != LEN:
                    raise WireError(f"{what} has wire type {wire_type}")
                text = as_text(value, what)
        return text

    @staticmethod
    def _audio_fields(body: Reader) -> tuple[Any, int, int]:
        audio: Any = b""
        rate = channels = 0
        for number, wire_type, value in body.fields():
            if number == 3 and wire_type == LEN:
                audio = value
            elif number == 4 and wire_type == VARINT:
                rate = value
            elif number == 5 and wire_type == VARINT:
                channels = value
        return audio, rate, channels

    def _on_audio(self, body: Reader) -> list[Event]:
        audio, rate, channels = self._audio_fields(body)
        if not 8000 <= rate <= 192000:
            raise WireError(f"AudioRawFrame.sample_rate {rate} is not an audio rate (8000..192000)")
        if not 1 <= (channels or 1) <= 8:
            raise WireError(f"AudioRawFrame.num_channels {channels} (1..8)")
        channels = channels or 1
        if len(audio) % (2 * channels):
            raise WireError(f"AudioRawFrame of {len(audio)} bytes is not whole PCM16 frames of {channels} channel(s)")
        if not len(audio):
            return []
        samples = len(audio) // (2 * channels)
        self._audio_frames += 1
        if self._stale:  # sent before the bot saw the interruption: the cut utterance's
            self._stale_samples += samples
            return []
        self._item_audio = True
        self._rate = rate
        self._audio_samples += samples
        return [AudioChunk(self._item, rate, _pcm_mono(audio, channels), samples)]

    def _on_message(self, body: Reader) -> list[Event]:
        if body.end - body.start > MAX_RTVI_BYTES + 16:  # checked before anything is copied
            raise WireError(f"an RTVI message of {body.end - body.start} bytes, limit is {MAX_RTVI_BYTES}")
        data = self._string_field(body, 1, "MessageFrame.data")
        try:
            msg = decode_json(data)
        except ValueError as exc:
            raise WireError(f"MessageFrame.data is not JSON: {exc}") from exc
        if not isinstance(msg, dict) or msg.get("label") != RTVI_LABEL or not isinstance(msg.get("type"), str):
            self._by_type.add("not-rtvi")
            return [ControlMessage("not-rtvi", msg if isinstance(msg, dict) else {"data": msg})]
        kind = msg["type"][:64]
        self._by_type.add(kind)
        fields = msg.get("data")
        fields = fields if isinstance(fields, dict) else {}
        handler = _HANDLERS.get(kind)
        if handler is not None:
            return handler(self, fields)
        if kind in LLM_TEXT or kind in SPOKEN_TEXT:
            text = fields.get("text")
            return self._render(text, kind) if isinstance(text, str) and text else []
        return [ControlMessage(kind, fields)]

    def _render(self, text: str, source: str) -> list[Event]:
        """The LLM's words render; the same words as spoken (TTS text, bot-output,
        bot-transcription, TextFrame) render only for a bot that never reported LLM text."""
        if source in LLM_TEXT:
            self._llm_text_seen = True
        elif self._llm_text_seen:
            self._text_dropped += 1
            return []
        return [TextDelta(text)]

    def _interrupt(self, reason: str) -> list[Event]:
        """One ``Interrupted`` per cut utterance: the first signal cuts it, later signals of the
        same barge-in find no audio left to cut. Audio that still arrives is the cut
        utterance's, dropped (counted) until the bot starts again."""
        self._bot_speaking = False
        if not self._item_audio:
            return []  # nothing of this utterance was received: nothing to flush
        cut = self._item
        self._interruptions += 1
        self._item += 1
        self._item_audio = False
        self._stale = True
        return [Interrupted(cut, reason)]

    def _resume_audio(self) -> None:
        self._stale = False

    # RTVI handlers ---------------------------------------------------------------

    def _on_bot_ready(self, fields: dict[str, Any]) -> list[Event]:
        self._ready = True
        self._bot_ready = fields
        return [SessionReady(fields), ServerHello({"rtvi": fields})]

    def _on_error(self, fields: dict[str, Any]) -> list[Event]:
        self._errors += 1
        message = fields.get("error") or fields.get("message") or json.dumps(fields)[:500]
        code = "fatal" if fields.get("fatal") else "error"
        return [ServerError(code, str(message)[:2000])]

    def _on_error_response(self, fields: dict[str, Any]) -> list[Event]:
        self._errors += 1
        return [ServerError("error-response", str(fields.get("error", ""))[:2000])]

    def _on_llm_started(self, fields: dict[str, Any]) -> list[Event]:
        self._resume_audio()
        return [ControlMessage("bot-llm-started", fields)]

    def _on_tts_started(self, fields: dict[str, Any]) -> list[Event]:
        self._resume_audio()
        return [ControlMessage("bot-tts-started", fields)]

    def _on_bot_started(self, fields: dict[str, Any]) -> list[Event]:
        self._resume_audio()
        self._bot_speaking = True
        return [ControlMessage("bot-started-speaking", fields)]

    def _on_bot_stopped(self, fields: dict[str, Any]) -> list[Event]:
        self._bot_speaking = False
        out: list[Event] = [ControlMessage("bot-stopped-speaking", fields)]
        if self._item_audio:
            out.insert(0, AudioChunk(self._item, self._rate, b"", 0, True))  # the utterance is complete
            self._item += 1
            self._item_audio = False
        out.append(TurnEnded({"reason": "bot-stopped-speaking"}))
        return out

    def _on_user_started(self, fields: dict[str, Any]) -> list[Event]:
        barge_in = self._bot_speaking and self.barge_in_on_user_speech
        out: list[Event] = self._interrupt("user-started-speaking") if barge_in else []
        return [*out, ControlMessage("user-started-speaking", fields)]

    def _on_user_transcription(self, fields: dict[str, Any]) -> list[Event]:
        text = fields.get("text")
        if fields.get("final") is False or not isinstance(text, str) or not text:
            return []  # interim results are superseded by the final one
        return [UserTranscript(text)]

    def _on_metrics(self, fields: dict[str, Any]) -> list[Event]:
        return [UsageReport("metrics", fields)]

    def _on_call(self, fields: dict[str, Any]) -> list[Event]:
        call_id, name, args = fields.get("tool_call_id"), fields.get("function_name"), fields.get("arguments")
        if not _sendable_id(call_id):
            raise WireError("llm-function-call-in-progress without a usable tool_call_id (nobody could be answered)")
        if call_id in self._calls or call_id in self._cancelled:
            return []  # reported twice: one answer
        if not isinstance(name, str) or not isinstance(args, dict):
            self._calls_unreported += 1  # the bot's report level hides name or arguments
            return [ControlMessage("llm-function-call-in-progress", fields)]
        if name not in self.tool_names:
            self._calls_not_ours += 1  # the bot's own function: not ours to answer
            return [ControlMessage("llm-function-call-in-progress", fields)]
        self._tool_calls += 1
        try:
            encode_json({"name": name, "arguments": args})
        except EncodeError as exc:  # not valid Unicode: answered as invalid, its arguments not echoed
            self._calls[call_id] = (_safe_text(name), {})
            return [ToolCallInvalid(call_id, _safe_text(name), {"type": "invalid_arguments", "message": str(exc)})]
        self._calls[call_id] = (name, args)
        return [ToolCallStarted(call_id, name), ToolCallReady(call_id, name, args)]

    def _on_call_stopped(self, fields: dict[str, Any]) -> list[Event]:
        call_id = fields.get("tool_call_id")
        out: list[Event] = [ControlMessage("llm-function-call-stopped", fields)]
        if fields.get("cancelled") is True and isinstance(call_id, str) and call_id in self._calls:
            del self._calls[call_id]
            self._cancelled[call_id] = True
            self._cancelled_calls += 1
            out.insert(0, ToolCallCancelled((call_id,)))
        return out

    # ------------------------------------------------------------------ sending

    def _rtvi(self, kind: str, data: dict[str, Any]) -> bytes:
        self._ids += 1
        msg = {"label": RTVI_LABEL, "type": kind, "id": f"pyclient-{self._ids}", "data": data}
        body = string_field(1, encode_json(msg).decode("utf-8"))
        return len_field(MESSAGE, body)

    def tool_result(self, outcome: ToolOutcome) -> list[Message]:
        """``llm-function-call-result``; nothing for a call the bot cancelled or never made."""
        if outcome.call_id in self._cancelled:
            self._results_suppressed += 1
            return []
        if not _sendable_id(outcome.call_id):
            return []  # an id that cannot be sent back (the decoder never reports one): nobody to answer
        name, args = self._calls.pop(outcome.call_id, (_safe_text(outcome.name or ""), {}))
        if outcome.ok:
            result = outcome.result if isinstance(outcome.result, (dict, str)) else {"result": outcome.result}
        else:
            result = {"error": outcome.error or {"type": "tool_error", "message": ""}}
        data = {"function_name": name or "", "tool_call_id": outcome.call_id, "arguments": args, "result": result}
        try:
            return [self._rtvi("llm-function-call-result", data)]
        except EncodeError as exc:
            data["result"] = {"error": {"type": "result_not_json", "message": str(exc)}}
            return [self._rtvi("llm-function-call-result", data)]

    def audio(self, pcm: bytes, sample_rate: int, item_id: int) -> list[Message]:
        """One ``AudioRawFrame`` of PCM16 LE mono at 16 kHz (resample before)."""
        if sample_rate != INPUT_RATE:
            raise UsageError(f"Pipecat takes microphone audio at {INPUT_RATE} Hz here, got {sample_rate} Hz")
        self._mic_samples += len(pcm) // 2
        body = len_field(3, pcm) + varint_field(4, sample_rate) + varint_field(5, 1)
        return [len_field(AUDIO, body)]

    def text(self, text: str) -> list[Message]:
        options = {"run_immediately": True, "audio_response": self.audio_response}
        return [self._rtvi("send-text", {"content": text, "options": options})]

    def stats(self) -> dict[str, Any]:
        return {
            "protocol": self.name,
            "messages": self._messages,
            "frames_by_kind": self._by_kind.as_dict(),
            "rtvi_by_type": self._by_type.as_dict(),
            "malformed": self._malformed,
            "llm_text_seen": self._llm_text_seen,
            "text_dropped": self._text_dropped,
            "audio_frames": self._audio_frames,
            "audio_samples": self._audio_samples,
            "stale_samples_dropped": self._stale_samples,
            "interruptions": self._interruptions,
            "tool_calls": self._tool_calls,
            "calls_not_ours": self._calls_not_ours,
            "calls_unreported": self._calls_unreported,
            "cancelled_calls": self._cancelled_calls,
            "results_suppressed": self._results_suppressed,
            "errors": self._errors,
            "mic_samples_sent": self._mic_samples,
            "bot_ready": self._bot_ready is not None,
        }


_HANDLERS = {
    "bot-ready": PipecatCodec._on_bot_ready,
    "error": PipecatCodec._on_error,
    "error-response": PipecatCodec._on_error_response,
    "bot-llm-started": PipecatCodec._on_llm_started,
    "bot-started-speaking": PipecatCodec._on_bot_started,
    "bot-tts-started": PipecatCodec._on_tts_started,
    "bot-stopped-speaking": PipecatCodec._on_bot_stopped,
    "bot-interrupted": lambda self, fields: self._interrupt("bot-interrupted"),
    "user-started-speaking": PipecatCodec._on_user_started,
    "user-transcription": PipecatCodec._on_user_transcription,
    "metrics": PipecatCodec._on_metrics,
    "llm-function-call-in-progress": PipecatCodec._on_call,
    "llm-function-call-stopped": PipecatCodec._on_call_stopped,
}

__all__ = ["RTVI_VERSION", "PipecatCodec"]
