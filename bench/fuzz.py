"""Fuzz the decoders: generated hostile input must never make one raise.

    python -m bench fuzz [--cases N] [--seed S]

Runs ``--cases`` generated cases (default 100,000) through each decoder:

* ``FrameDecoder.feed_message``: one WebSocket message per case;
* ``FrameDecoder.feed``: the same kind of message split at 0-3 random points, then
  ``pending_error()``; the bytes held are checked against the bound after every piece;
* ``Demux.feed_message`` / ``feed``: one long-lived demux (sequence numbers, open tool calls,
  split UTF-8 all carry over from case to case; a fake clock moves 1 s per case so open calls
  time out), every 8th case in stream mode;
* ``ToolCallAssembler``: streams of TOOL_CALL frames over a small pool of call ids (hostile ones
  included), decoded by ``FrameDecoder`` and fed to one long-lived assembler (fake clock, 0.5 s
  per case); its bounds on open calls and bytes are checked after every frame.

Cases are structure-aware: valid frames of every kind, then mutations of the header (version,
kind, flags, reserved byte, sequence number, a length that lies, 4 GiB), of the JSON tree (deep
nesting, lone surrogates in each string field, NaN/Infinity, huge numbers and strings, duplicate
keys, wrong types, missing fields, non-objects) and of the payload bytes (bit flips, inserts,
deletes, truncation, BOMs, overlong and CESU-8 UTF-8), and messages of 1-3 frames cut anywhere.

The protocol codecs run the same way (``--only openai`` / ``--only gemini`` / ``--only pipecat``;
Pipecat's RTVI messages are JSON inside protobuf ``MessageFrame``s, mutated like the others, and
its frames are protobuf built by hand: audio of any rate, channel count and length, lying
lengths, wrong wire types, unknown kinds, bytes mutated after encoding):

* ``OpenAIRealtimeCodec.decode`` / ``GeminiLiveCodec.decode``: one long-lived codec (tools
  registered), one server message per case, ``take_outgoing()`` drained after each. Events of every
  type come from scripted sessions (sometimes reordered, sometimes with an event lost) or are
  random over a small pool of response, item and call ids (interleaved tool-call events for unknown
  items, events out of order); 40% are mutated: wrong types and missing fields anywhere in the
  tree, lone surrogates, huge strings, deep nesting, NaN/Infinity, bad base64 audio (odd length,
  invalid characters, odd PCM byte counts), another event's type, duplicate keys, truncated JSON,
  random characters and bytes. Text messages are ``str``; binary ones ``bytes`` (35% for Gemini,
  whose service sends JSON in binary frames; 3% for OpenAI).
* every 16 cases the page's intents run on whatever state the input left: ``tool_result`` for
  calls the codec reported (and unknown ones) with random results and errors, ``cut`` with random
  playback positions (one per item, as ``playback.positions_at_cut`` gives them). Their messages
  must be JSON objects; a truncate carries an integer ``audio_end_ms`` and names an item once;
  ``response.cancel`` only for a cut the page asked for; Gemini's ``cut`` sends nothing. The
  codec's tracked state is checked against its bounds.

An exception is one raised by any codec method, or one ``decode`` caught itself (it reports it as
an ``internal decoder error`` ProtocolErrorEvent): both must be 0.

Counts per decoder: exceptions (must be 0; the first few are kept with their input), bound
violations (must be 0), malformed frames (ProtocolErrorEvents for the codecs, with Ignored and
other events), events, time. Writes docs/benchmarks/fuzz.{json,md}.
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import random
import re
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyclient.demux import Demux
from pyclient.events import (
    AudioChunk,
    Ignored,
    ProtocolErrorEvent,
    ToolCallCancelled,
    ToolCallInvalid,
    ToolCallReady,
    ToolCallStarted,
)
from pyclient.frames import (
    AUDIO_META,
    DEFAULT_MAX_PAYLOAD,
    HEADER,
    HEADER_SIZE,
    MAX_JSON_DEPTH,
    BytesSource,
    FrameDecoder,
    Kind,
    Malformed,
    ToolCallFrame,
)
from pyclient.playback import PlaybackPosition
from pyclient.protocols.base import SessionConfig, ToolSpec
from pyclient.protocols.gemini_live import GeminiLiveCodec
from pyclient.protocols.jsonwire import MAX_COUNTED_TYPES
from pyclient.protocols.openai_realtime import OpenAIRealtimeCodec
from pyclient.protocols.pipecat import PipecatCodec
from pyclient.protocols.protowire import LEN, Reader, WireError, as_text, len_field, string_field, varint_field
from pyclient.tools import DEFAULT_MAX_OPEN_BYTES, DEFAULT_MAX_OPEN_CALLS, ToolCallAssembler, ToolOutcome

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
MAX_EXAMPLES = 5  # exceptions kept with their input

# ------------------------------------------------------------------ hostile ingredients

LONE = ["\ud800", "\udfff", "x\udbff", "\udc00\ud800", "a\ud83d", "\ude00b"]
HOSTILE_STRINGS = [*LONE, "", "\x00", "\ufeff", "\u2028", "🙂", "n" * 129, "i" * 257, "é" * 70]
RAW_LITERALS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" * 4400, "-0", "1E400", "0.1e-99999", "nul"]
BAD_UTF8 = [
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\xc0\xaf",
    b"\xe0\x80\xaf",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xff",
    b"\xf0\x9f\x99",
]
CONTROL_TYPES = ["hello", "end_of_turn", "interrupted", "error", "done", "playback_position", "x", ""]
TOOL_NAMES = ["calculator", "clock", "f", "", None, "n" * 129, "calc\ud800", "名前"]
CALL_IDS = ["a", "b", "c", "d", "call_1", "i" * 256, "i" * 257, "\ud800", "", "é"]
RAW = "\x00RAW{}\x00"  # placeholder for raw JSON text spliced into json.dumps output


class Gen:
    """Structure-aware case generator (deterministic for a seed)."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.seq = 0

    # ---- leaves

    def chance(self, p: float) -> bool:
        return self.r.random() < p

    def word(self) -> str:
        r = self.r
        if self.chance(0.15):
            return r.choice(HOSTILE_STRINGS)
        if self.chance(0.003):
            return "s" * r.randrange(10_000, 400_000)  # huge, rare: they cost time
        return "".join(r.choice('abcxyz é🙂"\\{[]}') for _ in range(r.randrange(0, 12)))

    def deep_text(self) -> str:
        r = self.r
        n = r.choice([MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 200, 1000, r.randrange(0, 3000)])
        style = r.randrange(4)
        if style == 0:
            return "[" * n + "]" * n
        if style == 1:
            return '{"k":' * n + "1" + "}" * n
        if style == 2:
            return "[" * n  # never closed
        return "".join(r.choice(["[", '{"k":']) for _ in range(n)) + "0" + "]}" * (n // 2)

    def value(self, depth: int = 0) -> Any:
        r = self.r
        k = r.randrange(10)
        if k == 0 and depth < 3:
            return [self.value(depth + 1) for _ in range(r.randrange(4))]
        if k == 1 and depth < 3:
            return {self.word(): self.value(depth + 1) for _ in range(r.randrange(4))}
        if k == 2:
            return r.choice([None, True, False, 0, -1, 2**31, 2**64, 1.5, -0.0])
        if k == 3:
            return r.randrange(-(10**6), 10**6)
        return self.word()

    def hostile_value(self, raws: list[str]) -> Any:
        r = self.r
        k = r.randrange(6)
        if k == 0:
            raws.append(self.deep_text())
            return RAW.format(len(raws) - 1)
        if k == 1:
            raws.append(r.choice(RAW_LITERALS))
            return RAW.format(len(raws) - 1)
        if k == 2:
            return r.choice(LONE)
        if k == 3:
            return r.choice([None, 5, 1.5, True, [], {}, ["x"], {"a": 1}])
        return self.value()

    # ---- JSON payloads

    def json_object(self, kind: int) -> dict[str, Any]:
        r = self.r
        if kind == Kind.CONTROL:
            obj: dict[str, Any] = {"type": r.choice(CONTROL_TYPES)}
            for key in r.sample(["item_id", "code", "message", "connection_id", "turn", "x"], r.randrange(3)):
                obj[key] = self.value()
            return obj
        if kind == Kind.TOOL_CALL:
            obj = {"call_id": r.choice(CALL_IDS), "arguments_delta": self.arguments_piece()}
            name = r.choice(TOOL_NAMES)
            if name is not None:
                obj["name"] = name
            return obj
        ok = self.chance(0.5)
        obj = {"call_id": r.choice(CALL_IDS), "ok": ok}
        obj["result" if ok else "error"] = self.value() if ok else {"type": "tool_error", "message": self.word()}
        return obj

    def arguments_piece(self) -> str:
        r = self.r
        k = r.randrange(8)
        if k == 0:
            return json.dumps({"expression": "6*7", "x": self.value()})
        if k == 1:
            return r.choice(['{"a":', "1}", '"', "}", "{", "", " ", ',"b":[1,2]}'])
        if k == 2:
            return self.deep_text()
        if k == 3:
            return r.choice(LONE) + r.choice(["", "}"])
        if k == 4:
            return '{"v":' + r.choice(RAW_LITERALS) + "}"
        if k == 5:
            return '{"s":"\\ud800"}' if self.chance(0.5) else '{"a":1,"a":2}'
        return self.word()

    def json_payload(self, kind: int) -> bytes:
        r = self.r
        raws: list[str] = []
        obj: Any = self.json_object(kind)
        k = r.randrange(10)
        if k < 4:  # replace or add a field with something hostile
            key = r.choice([*obj, self.word()])
            obj[key] = self.hostile_value(raws)
        elif k == 4 and obj:  # drop a field
            del obj[r.choice(list(obj))]
        elif k == 5:  # not an object at all
            obj = self.hostile_value(raws) if self.chance(0.5) else [obj]
        text = json.dumps(obj, ensure_ascii=self.chance(0.7), allow_nan=True)
        for i, raw in enumerate(raws):
            text = text.replace(json.dumps(RAW.format(i), ensure_ascii=False), raw)
        if self.chance(0.05):  # duplicate key, spliced in as text
            text = text.replace("{", '{"type":"done","call_id":"dup",', 1)
        return text.encode("utf-8", "surrogatepass")  # raw surrogates become CESU-8 bytes

    # ---- frames and messages

    def payload(self, kind: int) -> bytes:
        r = self.r
        if kind in (Kind.CONTROL, Kind.TOOL_CALL, Kind.TOOL_RESULT):
            return self.json_payload(kind)
        if kind == Kind.AUDIO:
            rate = r.choice([24000, 48000, 8000, 192000, 7999, 192001, 0, 0xFFFFFFFF])
            pcm = r.randbytes(2 * r.randrange(0, 64) + (1 if self.chance(0.1) else 0))
            meta = AUDIO_META.pack(rate, r.choice([0, 1, 7, 0xFFFFFFFF]))
            return meta[: r.randrange(9)] if self.chance(0.05) else meta + pcm
        if kind == Kind.TEXT:
            data = self.word().encode("utf-8", "surrogatepass")
            return r.choice(BAD_UTF8) + data if self.chance(0.2) else data
        if kind == Kind.CREDIT:
            return r.randbytes(4 if self.chance(0.85) else r.randrange(9))
        return r.randbytes(r.randrange(32))

    def mutate_bytes(self, data: bytes) -> bytes:
        r = self.r
        b = bytearray(data)
        for _ in range(r.randrange(1, 4)):
            k = r.randrange(6)
            if k == 0 and b:
                b[r.randrange(len(b))] ^= 1 << r.randrange(8)
            elif k == 1:
                pos = r.randrange(len(b) + 1)
                b[pos:pos] = r.choice(BAD_UTF8) if self.chance(0.5) else r.randbytes(r.randrange(1, 8))
            elif k == 2 and b:
                start = r.randrange(len(b))
                del b[start : start + r.randrange(1, 8)]
            elif k == 3:
                del b[r.randrange(len(b) + 1) :]
            elif k == 4 and b:
                b[r.randrange(len(b))] = r.choice(b'[]{}"\\:,')
            else:
                b = bytearray(r.choice(BAD_UTF8)) + b
        return bytes(b)

    def frame(self, kind: int | None = None) -> bytes:
        r = self.r
        if kind is None:
            kind = r.choice([*Kind, *Kind, *Kind, r.randrange(256)])
        payload = self.payload(kind)
        if self.chance(0.2):
            payload = self.mutate_bytes(payload)
        version, flags, reserved = 1, r.choice([0, 0, 1, r.randrange(256)]), 0
        seq, length = self.seq, len(payload)
        self.seq = (self.seq + 1) % (1 << 32)
        if self.chance(0.25):  # header mutation
            k = r.randrange(7)
            if k == 0:
                version = r.choice([0, 2, 255])
            elif k == 1:
                reserved = r.randrange(1, 256)
            elif k == 2:
                seq = r.choice([0, 0xFFFFFFFF, r.randrange(1 << 32), (seq + 2) % (1 << 32)])
                self.seq = (seq + 1) % (1 << 32)
            elif k == 3:
                length = max(0, length + r.randrange(-8, 9))
            elif k == 4:
                length = r.choice([0xFFFFFFFF, DEFAULT_MAX_PAYLOAD + 1, 1 << 31])
            elif k == 5:
                kind = r.randrange(256)
            else:
                length = 0
        return HEADER.pack(version, kind & 0xFF, flags, reserved, seq, length) + payload

    def message(self) -> bytes:
        r = self.r
        msg = b"".join(self.frame() for _ in range(r.choice([1, 1, 1, 2, 3])))
        if self.chance(0.05):
            msg = msg[: r.randrange(len(msg) + 1)] or msg[:1]
        return msg

    def tool_call_frame(self) -> bytes:
        r = self.r
        obj: dict[str, Any] = {"call_id": r.choice(CALL_IDS[:5]) if self.chance(0.9) else r.choice(CALL_IDS)}
        if self.chance(0.35):
            name = r.choice(TOOL_NAMES)
            if name is not None:
                obj["name"] = name
        obj["arguments_delta"] = self.arguments_piece()
        payload = json.dumps(obj, ensure_ascii=self.chance(0.7)).encode("utf-8", "surrogatepass")
        if self.chance(0.05):
            payload = self.mutate_bytes(payload)
        flags = 1 if self.chance(0.3) else 0
        return HEADER.pack(1, Kind.TOOL_CALL, flags, 0, 0, len(payload)) + payload


# ------------------------------------------------------------------ runs


class Tally:
    def __init__(self, name: str) -> None:
        self.name = name
        self.cases = 0
        self.exceptions = 0
        self.violations = 0
        self.malformed = 0
        self.events = 0
        self.failed_calls = 0
        self.ready_calls = 0
        self.input_bytes = 0
        self.seconds = 0.0
        self.examples: list[dict[str, Any]] = []

    def exception(self, index: int, data: bytes, exc: BaseException) -> None:
        self.exceptions += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(
                {
                    "case": index,
                    "error": f"{type(exc).__name__}: {exc}"[:500],
                    "input_hex": data[:400].hex(),
                    "input_bytes": len(data),
                    "traceback": traceback.format_exc(limit=6)[-2000:],
                }
            )

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "examples"}
        out["cases_per_s"] = round(self.cases / self.seconds) if self.seconds else 0
        out["seconds"] = round(self.seconds, 2)
        out["examples"] = self.examples
        return out


def count_decoded(t: Tally, decoded: list[Any]) -> None:
    t.malformed += sum(isinstance(d, Malformed) for d in decoded)
    t.events += len(decoded)


def run_message_mode(cases: int, seed: int) -> Tally:
    t, g = Tally("FrameDecoder.feed_message"), Gen(seed)
    dec = FrameDecoder()
    start = time.perf_counter()
    for i in range(cases):
        msg = g.message()
        t.input_bytes += len(msg)
        try:
            decoded = dec.feed_message(BytesSource(msg))
            count_decoded(t, decoded)
            if not decoded:
                t.violations += 1  # a non-empty message must yield at least one frame or Malformed
        except Exception as exc:
            t.exception(i, msg, exc)
        t.cases += 1
    t.seconds = time.perf_counter() - start
    return t


def run_stream_mode(cases: int, seed: int) -> Tally:
    t, g = Tally("FrameDecoder.feed"), Gen(seed)
    bound = HEADER_SIZE + DEFAULT_MAX_PAYLOAD
    start = time.perf_counter()
    for i in range(cases):
        msg = g.message()
        if g.chance(0.1):
            msg += g.message()
        t.input_bytes += len(msg)
        cuts = sorted(g.r.randrange(len(msg) + 1) for _ in range(g.r.randrange(4)))
        try:
            dec = FrameDecoder()
            prev = 0
            for cut in [*cuts, len(msg)]:
                count_decoded(t, dec.feed(msg[prev:cut]))
                prev = cut
                if dec.buffered > bound:
                    t.violations += 1
            if dec.pending_error() is not None:
                t.malformed += 1
        except Exception as exc:
            t.exception(i, msg, exc)
        t.cases += 1
    t.seconds = time.perf_counter() - start
    return t


def run_demux(cases: int, seed: int) -> Tally:
    t, g = Tally("Demux"), Gen(seed)
    now = [0.0]
    d = Demux(clock=lambda: now[0])
    start = time.perf_counter()
    for i in range(cases):
        msg = g.message()
        t.input_bytes += len(msg)
        now[0] += 1.0
        try:
            events = d.feed(msg) if i % 8 == 7 else d.feed_message(msg)
            t.events += len(events)
            t.failed_calls += sum(isinstance(e, ToolCallInvalid) for e in events)
            t.ready_calls += sum(isinstance(e, ToolCallReady) for e in events)
            if any(isinstance(e, ProtocolErrorEvent) and e.reason.startswith("internal") for e in events):
                t.violations += 1  # the last line of defence must not be needed
            if d.tools.open_bytes > d.tools.max_open_bytes or d.tools.open_calls > d.tools.max_open_calls:
                t.violations += 1
            if i % 8 == 7 and d.decoder.buffered:  # stream mode: start the next case in sync
                d.decoder = FrameDecoder(d.decoder.max_payload)
        except Exception as exc:
            t.exception(i, msg, exc)
        t.cases += 1
    t.malformed = d.stats.malformed
    t.seconds = time.perf_counter() - start
    return t


def run_assembler(cases: int, seed: int) -> Tally:
    t, g = Tally("ToolCallAssembler"), Gen(seed)
    now = [0.0]
    a = ToolCallAssembler(clock=lambda: now[0])
    dec = FrameDecoder()
    start = time.perf_counter()
    for i in range(cases):
        msg = g.tool_call_frame()
        t.input_bytes += len(msg)
        now[0] += 0.5
        try:
            events: list[Any] = list(a.expire())
            for f in dec.feed_message(BytesSource(msg)):
                if isinstance(f, Malformed):
                    t.malformed += 1
                elif isinstance(f, ToolCallFrame):
                    events += a.feed(f)
                if a.open_bytes > DEFAULT_MAX_OPEN_BYTES or a.open_calls > DEFAULT_MAX_OPEN_CALLS or a.open_bytes < 0:
                    t.violations += 1
            t.events += len(events)
            t.failed_calls += sum(isinstance(e, ToolCallInvalid) for e in events)
            t.ready_calls += sum(isinstance(e, ToolCallReady) for e in events)
        except Exception as exc:
            t.exception(i, msg, exc)
        t.cases += 1
    t.seconds = time.perf_counter() - start
    return t


# ------------------------------------------------------------------ JSON codecs (OpenAI Realtime, Gemini Live)

FUZZ_TOOLS = (
    ToolSpec(
        "get_weather",
        "The weather in a city.",
        {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    ),
    ToolSpec(
        "calculator",
        "Evaluate an expression.",
        {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    ),
    ToolSpec("clock", "The time.", {"type": "object", "properties": {}}),
)
FUZZ_TOOL_NAMES = ["get_weather", "calculator", "clock", "unknown_tool", "", "n" * 129, "f\ud800", "名前", "a" * 128]
BAD_B64 = [
    "@@@",
    "!!!not base64!!!",
    "A",
    "AAA",
    "AB=",
    "====",
    "A===",
    "AAAA=AAA",
    "AA\nAA",
    " AAAA ",
    "AAAA\x00",
    "éé€AA",
    "data:audio/pcm;base64,AAAA",
    "AAAAAAAAAAAA*",
    "-_-_",
    "QQ",
    "QUI",
    "\ud800AAAA",
]
OA_HANDLED = [
    "session.created",
    "session.updated",
    "response.created",
    "response.done",
    "rate_limits.updated",
    "error",
    "response.output_audio.delta",
    "response.output_audio.done",
    "input_audio_buffer.speech_started",
    "response.output_audio_transcript.delta",
    "response.output_audio_transcript.done",
    "response.output_text.delta",
    "response.output_text.done",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
    "response.output_item.added",
    "response.output_item.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
]
OA_BETA = [
    "response.audio.delta",
    "response.audio.done",
    "response.audio_transcript.delta",
    "response.audio_transcript.done",
    "response.text.delta",
    "response.text.done",
    "conversation.item.created",
]
OA_QUIET = [
    "conversation.item.added",
    "conversation.item.done",
    "conversation.item.truncated",
    "input_audio_buffer.committed",
    "input_audio_buffer.speech_stopped",
    "output_audio_buffer.started",
    "response.content_part.added",
    "response.content_part.done",
]
OA_TYPES = [*OA_HANDLED, *OA_HANDLED, *OA_BETA, *OA_QUIET, "response.future_event", "x", ""]
OA_ERROR_CODES = [
    "conversation_already_has_active_response",
    "response_cancel_not_active",
    "invalid_value",
    "session_expired",
    None,
]
GM_KEYS = [
    "setupComplete",
    "serverContent",
    "serverContent",
    "serverContent",
    "toolCall",
    "toolCallCancellation",
    "usageMetadata",
    "goAway",
    "sessionResumptionUpdate",
    "voiceActivity",
    "voiceActivityDetectionSignal",
    "someFutureMessage",
]
GM_MIMES = [
    "audio/pcm;rate=24000",
    "audio/pcm;rate=24000",
    "audio/pcm;rate=16000",
    "audio/pcm",
    "AUDIO/PCM;RATE=48000",
    "audio/pcm;rate=0",
    "audio/pcm;rate=999999",
    "audio/pcm;rate=7999",
    "audio/opus",
    "image/png",
    "",
]
GM_DURATIONS = ["10s", "1.5s", "0s", "-3s", "0.000000001s", "999999999999s", "10", "s", "1.5.5s", " 2s ", "abc"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class JsonGen(Gen):
    """Server events of a JSON protocol: valid ones from scripted sessions and random ones over a
    small pool of ids, then mutated (tree, text and bytes). Subclasses build the events."""

    binary_share = 0.0  # share of cases sent as a binary (bytes) message

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.n = 0
        self.script: list[Any] = []
        self.calls_seen: deque[tuple[str, str | None]] = deque(maxlen=32)  # from the codec's events
        self.audio_seen: dict[Any, int] = {}  # item id -> samples received (the codec's events)

    def fresh(self) -> int:
        self.n += 1
        return self.n

    # ---- leaves

    def audio_b64(self) -> str:
        r = self.r
        if self.chance(0.002):
            return _b64(r.randbytes(2 * r.randrange(50_000, 150_000)))  # huge, rare
        k = r.randrange(12)
        n = r.randrange(0, 481)
        if k < 7:
            return _b64(r.randbytes(2 * n))
        if k == 7:
            return _b64(r.randbytes(2 * n + 1))  # an odd PCM byte count
        if k == 8:
            s = _b64(r.randbytes(2 * n + 2))
            return s[: max(1, len(s) - r.randrange(1, 4))]  # odd length, padding cut
        if k == 9:
            return r.choice(BAD_B64)
        s = _b64(r.randbytes(2 * n + 2))
        pos = r.randrange(len(s) + 1)
        return s[:pos] + r.choice(["*", "=", "@", " ", "\n", "é", "\ud800", "=="]) + s[pos:]

    def tool_args(self, name: Any) -> Any:
        """Arguments as an object: mostly fitting the registered tool, else not."""
        r = self.r
        k = r.randrange(10)
        if k < 5:
            if name == "get_weather":
                args: dict[str, Any] = {"city": self.word() if self.chance(0.3) else "Paris"}
                if self.chance(0.5):
                    args["unit"] = r.choice(["celsius", "fahrenheit", "kelvin"])
                return args
            if name == "calculator":
                return {"expression": "6*7"}
            return {}
        if k == 5:
            return {"city": self.hostile_value([])}
        if k == 6:
            return {"extra": self.value(), "city": "x"}
        if k == 7:
            return self.value()
        if k == 8:
            return {self.word(): self.value() for _ in range(r.randrange(4))}
        return {"s": r.choice(LONE)}

    def args_text(self, name: Any) -> str:
        """Arguments as a JSON string (OpenAI), sometimes not JSON at all."""
        r = self.r
        k = r.randrange(10)
        if k < 6:
            return json.dumps(self.tool_args(name), ensure_ascii=self.chance(0.5))
        if k == 6:
            return self.arguments_piece()
        if k == 7:
            return '{"city":"a","city":' + r.choice(RAW_LITERALS) + "}"
        if k == 8 and self.chance(0.05):
            return '{"city":"' + "c" * r.randrange(200_000, 300_000) + '"}'  # past max_argument_bytes
        return r.choice(["", " ", "null", "[]", '"x"', "{", '{"city": "Paris"', "{}"])

    def split(self, text: str) -> list[str]:
        cuts = sorted(self.r.randrange(len(text) + 1) for _ in range(self.r.randrange(0, 4)))
        return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]

    # ---- mutations

    def slots(self, obj: Any, depth: int = 0) -> list[tuple[Any, Any]]:
        out: list[tuple[Any, Any]] = []
        if isinstance(obj, dict):
            for key, value in obj.items():
                out.append((obj, key))
                if depth < 4:
                    out += self.slots(value, depth + 1)
        elif isinstance(obj, list):
            for i, value in enumerate(obj[:8]):
                out.append((obj, i))
                if depth < 4:
                    out += self.slots(value, depth + 1)
        return out

    def retype(self, obj: dict[str, Any]) -> None:
        """Give the event another event's type (its fields stay): overridden per protocol."""

    def mutate_tree(self, obj: Any, raws: list[str]) -> Any:
        r = self.r
        for _ in range(r.randrange(1, 3)):
            slots = self.slots(obj)
            k = r.randrange(10)
            if not slots or k == 9:
                if isinstance(obj, dict) and self.chance(0.7):
                    self.retype(obj)
                else:  # not an object at all
                    obj = self.hostile_value(raws) if self.chance(0.5) else [obj]
                continue
            container, key = r.choice(slots)
            if k <= 2:  # a wrong type
                container[key] = self.hostile_value(raws)
            elif k == 3:  # a missing field
                del container[key]
            elif k == 4:  # lone surrogates in a string
                strings = [(c, key) for c, key in slots if isinstance(c[key], str)]
                if strings:
                    c, key = r.choice(strings)
                    pos = r.randrange(len(c[key]) + 1)
                    c[key] = c[key][:pos] + r.choice(LONE) + c[key][pos:]
            elif k == 5:  # a long or huge string
                size = r.randrange(100_000, 1_000_000) if self.chance(0.02) else r.randrange(1000, 20_000)
                container[key] = r.choice("aé🙂\\") * size
            elif k == 6:  # deep nesting
                raws.append(self.deep_text())
                container[key] = RAW.format(len(raws) - 1)
            elif k == 7:  # NaN, Infinity, huge numbers
                raws.append(r.choice(RAW_LITERALS))
                container[key] = RAW.format(len(raws) - 1)
            else:  # a wrong type from the same family: number as string, string as number
                value = container[key]
                container[key] = str(value) if not isinstance(value, str) else r.choice([0, -1, 1.5, None, True])
        return obj

    def serialize(self, obj: Any, raws: list[str]) -> str:
        text = json.dumps(obj, ensure_ascii=self.chance(0.6), allow_nan=True)
        for i, raw in enumerate(raws):
            text = text.replace(json.dumps(RAW.format(i)), raw)
        return text

    def mutate_text(self, text: str, obj: Any) -> str:
        r = self.r
        k = r.randrange(8)
        if k <= 1 and text.endswith("}") and isinstance(obj, dict) and obj:  # a duplicate key (the last wins)
            key = r.choice(list(obj))
            return text[:-1] + "," + json.dumps(key) + ":" + json.dumps(self.value(), allow_nan=True) + "}"
        if k == 2 and text.startswith("{"):  # a duplicate key first (overridden)
            return '{"type":"response.done","serverContent":1,' + text[1:]
        if k == 3:  # truncated
            return text[: r.randrange(len(text))]
        if k == 4:  # random characters
            return "".join(chr(r.randrange(0x30000)) for _ in range(r.randrange(1, 64)))
        if k == 5:
            return r.choice(["\ufeff", " \n", "\x00"]) + text
        if k == 6:
            return text + r.choice(["}", "{}", " x", "\x00", text])
        return r.choice(["", "null", "[]", "0", '"x"', "{}", "{", "}", "NaN", "[" * 5000])

    # ---- cases

    def next_event(self) -> Any:
        """The next scripted event (a valid session, sometimes out of order) or a random one."""
        r = self.r
        if self.chance(0.55):
            if not self.script:
                self.script = self.session_script()
                if self.chance(0.1) and len(self.script) > 2:  # out of order
                    i = r.randrange(len(self.script) - 1)
                    j = min(len(self.script), i + r.randrange(2, 6))
                    window = self.script[i:j]
                    r.shuffle(window)
                    self.script[i:j] = window
            event = self.script.pop(0)
            if self.chance(0.03):
                self.script = self.script[1:]  # a lost event
            return event
        return self.random_event()

    def case(self) -> str | bytes:
        r = self.r
        if self.chance(0.01):  # random bytes or characters
            return r.randbytes(r.randrange(64)) if self.chance(self.binary_share * 2) else self.word()
        raws: list[str] = []
        obj = self.next_event()
        mutated = self.chance(0.4)
        if mutated and self.chance(0.75):
            obj = self.mutate_tree(obj, raws)
        text = self.serialize(obj, raws)
        if mutated and self.chance(0.3):
            text = self.mutate_text(text, obj)
        if self.chance(self.binary_share):
            data = text.encode("utf-8", "surrogatepass")  # lone surrogates become CESU-8 bytes
            return self.mutate_bytes(data) if mutated and self.chance(0.2) else data
        return text

    def observe(self, events: list[Any]) -> None:
        for e in events:
            if isinstance(e, (ToolCallReady, ToolCallInvalid, ToolCallStarted)):
                self.calls_seen.append((e.call_id, e.name))
            elif isinstance(e, ToolCallCancelled):
                self.calls_seen.extend((c, None) for c in e.call_ids[:4])
            elif isinstance(e, AudioChunk):
                self.audio_seen[e.item_id] = self.audio_seen.get(e.item_id, 0) + e.samples
                while len(self.audio_seen) > 64:
                    del self.audio_seen[next(iter(self.audio_seen))]

    # ---- intents the page sends (the encoders)

    def outcome(self) -> ToolOutcome:
        r = self.r
        if self.calls_seen and self.chance(0.85):
            call_id, name = r.choice(self.calls_seen)
        else:
            call_id, name = f"call_never_seen_{self.fresh()}", r.choice(["get_weather", None, "x"])
        if self.chance(0.5):
            k = r.randrange(10)
            result: Any = self.value()
            if k == 0:
                result = r.choice([float("nan"), float("inf"), {1, 2}, b"\x00", 10**5000, object()])
            elif k == 1:
                result = r.choice(LONE)
            elif k == 2:
                deep: Any = 0
                for _ in range(r.choice([MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 500])):
                    deep = [deep]
                result = deep
            return ToolOutcome(call_id, name, True, result=result)
        # the executor makes errors safe (str values, no lone surrogates): so do we
        error = None if self.chance(0.1) else {"type": r.choice(["tool_error", "unknown_tool", "timeout"])}
        if error is not None:
            error["message"] = self.word().encode("utf-8", "backslashreplace").decode("utf-8")
        return ToolOutcome(call_id, name, False, error=error)

    def positions(self, foreign_ids: list[Any]) -> list[PlaybackPosition]:
        r = self.r
        out: list[PlaybackPosition] = []
        known = list(self.audio_seen.items())
        for _ in range(r.randrange(0, 4)):
            if known and self.chance(0.8):
                item, samples = r.choice(known)
            else:
                item, samples = r.choice(foreign_ids), r.randrange(5000)
            if any(p.item_id == item for p in out):
                continue  # one position per item, as playback.positions_at_cut reports them
            played = r.choice(
                [0, samples - 1, samples, samples + 1, r.randrange(samples + 1), r.randrange(samples + 1), -1, 2**40]
            )
            if self.chance(0.05):
                played = r.choice([1.5, True, None, "7"])
            rate = r.choice([24_000, 24_000, 24_000, 16_000, 48_000, 0, -24_000, 1.5])
            reason = r.choice(["client", "server", "server"])
            ms = round(played * 1000 / rate, 3) if isinstance(played, int) and isinstance(rate, int) and rate else 0.0
            out.append(PlaybackPosition(item, played, ms, rate, reason))  # type: ignore[arg-type]
        return out

    # ---- per protocol

    def session_script(self) -> list[Any]:
        raise NotImplementedError

    def random_event(self) -> Any:
        raise NotImplementedError


class OpenAIGen(JsonGen):
    """OpenAI Realtime server events (openai-node ``realtime.ts`` shapes, as in the fixtures)."""

    binary_share = 0.03  # the codec takes binary JSON too; servers send text

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.rids: deque[str] = deque(["resp_0"], maxlen=6)
        self.items: deque[str] = deque(["item_0"], maxlen=10)
        self.calls: deque[tuple[str, str]] = deque([("call_0", "item_fc_0")], maxlen=10)
        self.event_n = 0

    def base(self, kind: str) -> dict[str, Any]:
        self.event_n += 1
        return {"type": kind, "event_id": f"event_{self.event_n}"}

    def pick_rid(self) -> str:
        return self.r.choice(self.rids) if self.chance(0.9) else self.r.choice(["", "resp_unknown", self.word()])

    def pick_item(self) -> str:
        return self.r.choice(self.items) if self.chance(0.9) else self.r.choice(["", "item_unknown", self.word()])

    def pick_call(self) -> tuple[str, str]:
        if self.chance(0.85):
            return self.r.choice(self.calls)
        return self.r.choice(["call_unknown", "", "i" * 257, "c\ud800", self.word()]), "item_unknown"

    def usage(self) -> dict[str, Any]:
        n = self.r.randrange(1000)
        details = {"audio_tokens": 1}
        return {"total_tokens": 2 * n, "input_tokens": n, "output_tokens": n, "input_token_details": details}

    def event(self, kind: str, rid: str, item: str, call: str, name: Any = None, **extra: Any) -> dict[str, Any]:
        """A valid event of ``kind`` (beta names take their GA shape; unknown ones a few fields)."""
        r = self.r
        e = self.base(kind)
        ga = {
            "response.audio.delta": "response.output_audio.delta",
            "response.audio.done": "response.output_audio.done",
            "response.audio_transcript.delta": "response.output_audio_transcript.delta",
            "response.audio_transcript.done": "response.output_audio_transcript.done",
            "response.text.delta": "response.output_text.delta",
            "response.text.done": "response.output_text.done",
        }.get(kind, kind)
        where = {"response_id": rid, "item_id": item, "output_index": 0, "content_index": r.choice([0, 0, 0, 1])}
        if ga in ("session.created", "session.updated"):
            modal = r.choice([["audio"], ["text"], ["audio", "text"]])
            key = "modalities" if self.chance(0.1) else "output_modalities"
            e["session"] = {"type": "realtime", "object": "realtime.session", "id": "sess_1", key: modal}
        elif ga == "response.created":
            e["response"] = {"object": "realtime.response", "id": rid, "status": "in_progress", "output": []}
            if self.chance(0.7):
                e["response"]["output_modalities"] = r.choice([["audio"], ["text"]])
        elif ga == "response.done":
            status = r.choice(["completed", "completed", "cancelled", "failed", "incomplete"])
            e["response"] = {"object": "realtime.response", "id": rid, "status": status, "output": []}
            if status == "cancelled":
                e["response"]["status_details"] = {"type": "cancelled", "reason": r.choice(["turn_detected", "client"])}
            if self.chance(0.7):
                e["response"]["usage"] = self.usage()
        elif ga == "rate_limits.updated":
            e["rate_limits"] = [{"name": "requests", "limit": 5000, "remaining": r.randrange(5000), "reset_seconds": 1}]
        elif ga == "error":
            e["error"] = {
                "type": "invalid_request_error",
                "code": r.choice(OA_ERROR_CODES),
                "message": r.choice(["Conversation already has an active response", "response.create failed", "x"]),
                "param": None,
                "event_id": r.choice([None, None, f"pyclient_response_create_{r.randrange(1, 40)}", "evt_x"]),
            }
        elif ga == "response.output_audio.delta":
            e |= where
            e["delta"] = self.audio_b64()
        elif ga in ("response.output_audio.done", "response.content_part.added", "response.content_part.done"):
            e |= where
        elif ga in ("response.output_audio_transcript.delta", "response.output_text.delta"):
            e |= where
            e["delta"] = self.word()
        elif ga == "response.output_audio_transcript.done":
            e |= where
            e["transcript"] = self.word()
        elif ga == "response.output_text.done":
            e |= where
            e["text"] = self.word()
        elif ga == "input_audio_buffer.speech_started":
            e |= {"audio_start_ms": r.randrange(10_000), "item_id": item}
        elif ga == "conversation.item.input_audio_transcription.delta":
            e |= {"item_id": item, "content_index": 0, "delta": self.word()}
        elif ga == "conversation.item.input_audio_transcription.completed":
            e |= {"item_id": item, "content_index": 0, "transcript": self.word()}
        elif ga in ("response.output_item.added", "response.output_item.done", "conversation.item.created"):
            e |= {"response_id": rid, "output_index": 0}
            if self.chance(0.7):
                e["item"] = {"id": item, "type": "function_call", "status": "in_progress", "name": name}
                e["item"] |= {"call_id": call, "arguments": extra.get("arguments", "")}
                if ga == "response.output_item.done":
                    e["item"]["status"] = "completed"
            else:
                e["item"] = {"id": item, "type": "message", "role": "assistant", "content": []}
        elif ga == "response.function_call_arguments.delta":
            e |= {"response_id": rid, "item_id": item, "output_index": 0, "call_id": call}
            e["delta"] = extra.get("delta", self.arguments_piece())
        elif ga == "response.function_call_arguments.done":
            e |= {"response_id": rid, "item_id": item, "output_index": 0, "call_id": call, "name": name}
            e["arguments"] = extra.get("arguments", self.args_text(name))
        else:
            e |= {"response_id": rid, "item_id": item}
        return e

    def retype(self, obj: dict[str, Any]) -> None:
        obj["type"] = self.r.choice(OA_TYPES)

    def random_event(self) -> dict[str, Any]:
        call, item = self.pick_call()
        if self.chance(0.5):
            item = self.pick_item()
        return self.event(self.r.choice(OA_TYPES), self.pick_rid(), item, call, self.r.choice(FUZZ_TOOL_NAMES))

    def session_script(self) -> list[Any]:
        r = self.r
        n = self.fresh()
        rid = f"resp_{n}"
        self.rids.append(rid)
        out: list[Any] = []
        if self.chance(0.05):
            out.append(self.event(r.choice(["session.created", "session.updated"]), rid, "", ""))
        if self.chance(0.3):  # the user's speech and its transcript
            user = f"item_user_{n}"
            out.append(self.event("input_audio_buffer.speech_started", rid, user, ""))
            for _ in range(r.randrange(3)):
                out.append(self.event("conversation.item.input_audio_transcription.delta", rid, user, ""))
            out.append(self.event("conversation.item.input_audio_transcription.completed", rid, user, ""))
        out.append(self.event("response.created", rid, "", ""))
        cancelled = False
        for k in range(r.randrange(0, 4)):
            item = f"item_{n}_{k}"
            self.items.append(item)
            kind = r.choice(["call", "call", "audio", "audio", "text"])
            if kind == "call":
                call = f"call_{n}_{k}"
                self.calls.append((call, item))
                name = r.choice(FUZZ_TOOL_NAMES[:4]) if self.chance(0.9) else r.choice(FUZZ_TOOL_NAMES)
                args = self.args_text(name)
                added = self.event("response.output_item.added", rid, item, call, name)
                added["item"] = {"id": item, "type": "function_call", "name": name, "call_id": call, "arguments": ""}
                out.append(added)
                for piece in self.split(args):
                    out.append(self.event("response.function_call_arguments.delta", rid, item, call, delta=piece))
                if self.chance(0.9):
                    kind = "response.function_call_arguments.done"
                    out.append(self.event(kind, rid, item, call, name, arguments=args))
                done = self.event("response.output_item.done", rid, item, call, name)
                done["item"] = {"id": item, "type": "function_call", "status": "completed", "name": name}
                done["item"] |= {"call_id": call, "arguments": args}
                if self.chance(0.9):
                    out.append(done)
            elif kind == "audio":
                audio = r.choice(["response.output_audio.delta", "response.audio.delta"])
                words = r.choice(["response.output_audio_transcript.delta", "response.output_text.delta"])
                for _ in range(r.randrange(1, 5)):
                    out.append(self.event(audio, rid, item, ""))
                    out.append(self.event(words, rid, item, ""))
                    if self.chance(0.05):
                        out.append(self.event("input_audio_buffer.speech_started", rid, f"item_user_{n}", ""))
                        cancelled = True
                        break
                if not cancelled:
                    out.append(self.event("response.output_audio.done", rid, item, ""))
                    out.append(self.event("response.output_audio_transcript.done", rid, item, ""))
            else:
                for _ in range(r.randrange(1, 4)):
                    out.append(self.event("response.output_text.delta", rid, item, ""))
                out.append(self.event("response.output_text.done", rid, item, ""))
            if cancelled:
                break
        done = self.event("response.done", rid, "", "")
        if cancelled:
            done["response"]["status"] = "cancelled"
        out.append(done)
        if self.chance(0.3):
            out.append(self.event("rate_limits.updated", rid, "", ""))
        if self.chance(0.05):
            out.append(self.event("error", rid, "", ""))
        return out


class GeminiGen(JsonGen):
    """Gemini Live server messages (js-genai ``types.ts`` shapes, as in the fixtures)."""

    binary_share = 0.35  # the service sends JSON in binary frames to browsers

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.started = False
        self.call_ids: deque[str] = deque(["function-call-0"], maxlen=10)

    def inline(self) -> dict[str, Any]:
        mime = self.r.choice(GM_MIMES) if self.chance(0.3) else "audio/pcm;rate=24000"
        return {"inlineData": {"mimeType": mime, "data": self.audio_b64()}}

    def part(self) -> dict[str, Any]:
        r = self.r
        k = r.randrange(8)
        if k < 4:
            return self.inline()
        if k < 6:
            return {"text": self.word()}
        if k == 6:
            return {"text": self.word(), "thought": True}
        return r.choice(
            [
                {"executableCode": {"language": "PYTHON", "code": "print(1)"}},
                {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "1"}},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            ]
        )

    def call(self, call_id: str | None = None) -> dict[str, Any]:
        r = self.r
        if call_id is None:
            call_id = f"function-call-{self.fresh()}"
            self.call_ids.append(call_id)
        name = r.choice(FUZZ_TOOL_NAMES[:4]) if self.chance(0.9) else r.choice(FUZZ_TOOL_NAMES)
        call: dict[str, Any] = {"name": name, "args": self.tool_args(name), "id": call_id}
        if self.chance(0.05):
            del call["args"]
        return call

    def content(self) -> dict[str, Any]:
        r = self.r
        c: dict[str, Any] = {}
        k = r.randrange(9)
        if k < 3:
            c["modelTurn"] = {"parts": [self.part() for _ in range(r.randrange(1, 3))]}
            if self.chance(0.5):
                c["modelTurn"]["role"] = "model"
        elif k == 3:
            c["outputTranscription"] = {"text": self.word()}
        elif k == 4:
            c["inputTranscription"] = {"text": self.word(), "finished": self.chance(0.2)}
        elif k == 5:
            c["interrupted"] = True
        elif k == 6:
            c["generationComplete"] = True
        elif k == 7:
            c["turnComplete"] = True
            if self.chance(0.3):
                c["turnCompleteReason"] = r.choice(["MALFORMED_FUNCTION_CALL", "NEED_MORE_INPUT", 3])
            if self.chance(0.2):
                c["waitingForInput"] = self.chance(0.5)
        else:
            c["groundingMetadata"] = {"x": 1}
        return c

    def value_for(self, key: str) -> Any:
        r = self.r
        if key == "setupComplete":
            return {} if self.chance(0.8) else {"sessionId": self.word()}
        if key == "serverContent":
            return self.content()
        if key == "toolCall":
            calls = [self.call(r.choice(self.call_ids) if self.chance(0.3) else None) for _ in range(r.randrange(4))]
            return {"functionCalls": calls}
        if key == "toolCallCancellation":
            ids = [r.choice(self.call_ids) for _ in range(r.randrange(1, 3))]
            if self.chance(0.2):
                ids.append(r.choice(["", None, 5, "\ud800", "unknown"]))
            return {"ids": ids}
        if key == "usageMetadata":
            n = r.randrange(1000)
            return {"promptTokenCount": n, "responseTokenCount": n, "totalTokenCount": 2 * n}
        if key == "goAway":
            return {"timeLeft": r.choice(GM_DURATIONS)}
        if key == "sessionResumptionUpdate":
            return {"newHandle": r.choice(["Cg0KC3Jlc3VtZS0wMDE", "", self.word()]), "resumable": self.chance(0.7)}
        if key == "voiceActivity":
            return {"voiceActivityType": r.choice(["ACTIVITY_START", "ACTIVITY_END"])}
        return {"x": self.value()}

    def retype(self, obj: dict[str, Any]) -> None:
        if obj:
            key = self.r.choice(list(obj))
            obj[self.r.choice(GM_KEYS)] = obj.pop(key)

    def random_event(self) -> dict[str, Any]:
        keys = [self.r.choice(GM_KEYS) for _ in range(self.r.choice([1, 1, 1, 2, 3]))]
        return {key: self.value_for(key) for key in keys}

    def session_script(self) -> list[Any]:
        r = self.r
        out: list[Any] = []
        if not self.started or self.chance(0.02):
            self.started = True
            out.append({"setupComplete": {}})
        for _ in range(r.randrange(3)):
            out.append({"serverContent": {"inputTranscription": {"text": self.word()}}})
        calls: list[str] = []
        if self.chance(0.3):
            batch = [self.call() for _ in range(r.randrange(1, 3))]
            calls = [c["id"] for c in batch]
            out.append({"toolCall": {"functionCalls": batch}})
        text_turn = self.chance(0.2)
        interrupted = False
        for _ in range(r.randrange(1, 6)):
            if text_turn:
                out.append({"serverContent": {"modelTurn": {"parts": [{"text": self.word()}]}}})
                continue
            out.append({"serverContent": {"modelTurn": {"parts": [self.inline()]}}})
            if self.chance(0.7):
                out.append({"serverContent": {"outputTranscription": {"text": self.word()}}})
            if self.chance(0.1):
                out.append({"serverContent": {"modelTurn": {"parts": [{"text": self.word()}]}}})  # a second source
            if self.chance(0.06):
                out.append({"serverContent": {"interrupted": True}})
                interrupted = True
                if calls and self.chance(0.7):
                    out.append({"toolCallCancellation": {"ids": calls}})
                if self.chance(0.5):
                    break
        if not interrupted:
            out.append({"serverContent": {"generationComplete": True}})
        usage = {"promptTokenCount": 5, "responseTokenCount": 3, "totalTokenCount": 8}
        if self.chance(0.7):
            out.append({"serverContent": {"turnComplete": True}, "usageMetadata": usage})
        else:
            out.append({"serverContent": {"turnComplete": True}})
            out.append({"usageMetadata": usage})
        if self.chance(0.4):
            out.append({"sessionResumptionUpdate": {"newHandle": f"handle-{self.n}", "resumable": True}})
        if self.chance(0.03):
            out.append({"goAway": {"timeLeft": r.choice(GM_DURATIONS)}})
        return out


class CodecTally(Tally):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.binary_cases = 0
        self.protocol_errors = 0
        self.ignored = 0
        self.other_events = 0
        self.encoder_calls = 0
        self.messages_out = 0
        self.problem_counts: dict[str, int] = {}  # every exception and violation, by kind

    def problem(self, index: int, where: str, message: Any, error: str, tb: str, context: list[Any]) -> None:
        """Count a problem by kind (where + the error without its numbers); keep the first of each kind."""
        kind = f"{where}: {re.sub(r'U[+][0-9A-F]{4}|[0-9]+', '#', error)[:50]}"
        self.problem_counts[kind] = self.problem_counts.get(kind, 0) + 1
        if self.problem_counts[kind] == 1 and len(self.examples) < MAX_EXAMPLES:
            self.examples.append(
                {
                    "case": index,
                    "kind": kind,
                    "where": where,
                    "error": error[:500],
                    "input": repr(message)[:600],
                    "previous_inputs": [repr(m)[:300] for m in context[-8:]],
                    "traceback": tb[-2000:],
                }
            )


def _traced(cls: type[Any]) -> type[Any]:
    """``cls`` whose ``_decode`` keeps the traceback of an exception before ``decode`` turns it into an
    ``internal decoder error`` ProtocolErrorEvent (the public ``decode`` is unchanged)."""

    class Traced(cls):  # type: ignore[misc, valid-type]
        last_traceback = ""

        def _decode(self, message: Any) -> Any:
            try:
                return super()._decode(message)
            except Exception:
                self.last_traceback = traceback.format_exc(limit=8)
                raise

    Traced.__name__ = Traced.__qualname__ = cls.__name__
    return Traced


def _json_messages(msgs: Any) -> list[dict[str, Any]] | str:
    """The messages an encoder returned, parsed; a string saying what is wrong if they are not JSON objects."""
    if not isinstance(msgs, list):
        return f"returned {type(msgs).__name__}, not a list"
    out = []
    for m in msgs:
        if not isinstance(m, str):
            return f"a message of type {type(m).__name__}"
        try:
            obj = json.loads(m, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
        except ValueError as exc:
            return f"a message that is not JSON: {exc}: {m[:200]!r}"
        if not isinstance(obj, dict):
            return f"a message that is a JSON {type(obj).__name__}"
        out.append(obj)
    return out


def openai_bounds(c: OpenAIRealtimeCodec) -> list[str]:
    limit = c._responses.limit
    problems = []
    if len(c._calls) > c.max_open_calls:
        problems.append(f"{len(c._calls)} open calls, limit {c.max_open_calls}")
    if len(c._call_by_item) > len(c._calls):
        problems.append(f"{len(c._call_by_item)} call items for {len(c._calls)} open calls")
    if len(c._active) > limit:
        problems.append(f"{len(c._active)} responses in flight remembered, max_tracked is {limit}")
    if len(c._by_type.counts) > MAX_COUNTED_TYPES + 1:
        problems.append(f"{len(c._by_type.counts)} event types counted")
    return problems


def tracked_bounds(c: Any, *tracked: Any) -> list[str]:
    """Bounds every JSON-carrying codec keeps: counted types, and each ``Bounded`` map of calls."""
    problems = []
    if len(c._by_type.counts) > MAX_COUNTED_TYPES + 1:
        problems.append(f"{len(c._by_type.counts)} message types counted")
    if any(len(m) > m.limit for m in tracked):
        problems.append("more calls remembered than max_tracked")
    return problems


def gemini_bounds(c: GeminiLiveCodec) -> list[str]:
    return tracked_bounds(c, c._call_names, c._cancelled)


def check_cut(codec: Any, positions: list[PlaybackPosition], msgs: list[dict[str, Any]], truncated: dict) -> str:
    """What is wrong with the messages ``cut`` returned ("" if nothing). ``truncated``: item id -> the
    codec's record of the item when it was truncated (an item it forgot and met again may be cut again)."""
    if isinstance(codec, (GeminiLiveCodec, PipecatCodec)):
        return f"{type(codec).__name__} cut sent {len(msgs)} messages (no truncate there)" if msgs else ""
    by_page = any(p.reason == "client" for p in positions)
    for m in msgs:
        kind = m.get("type")
        if kind == "response.cancel" and not by_page:
            return "response.cancel for a cut the page did not ask for"
        if kind == "conversation.item.truncate":
            end = m.get("audio_end_ms")
            if type(end) is not int or end < 0:
                return f"truncate with audio_end_ms={end!r}"
            item_id = m.get("item_id")
            record = codec._audio_items.get(item_id)
            if item_id in truncated and truncated[item_id] is record:
                return f"a second truncate for item {item_id!r}"
            truncated[item_id] = record
        elif kind != "response.cancel":
            return f"cut sent a {kind!r}"
    return ""


RTVI_TYPES = [
    "bot-ready",
    "bot-llm-started",
    "bot-llm-text",
    "bot-llm-stopped",
    "bot-tts-started",
    "bot-tts-text",
    "bot-tts-stopped",
    "bot-output",
    "bot-transcription",
    "llm-raw-text",
    "tts-raw-text",
    "bot-started-speaking",
    "bot-stopped-speaking",
    "user-started-speaking",
    "user-stopped-speaking",
    "bot-interrupted",
    "user-transcription",
    "user-input",
    "metrics",
    "error",
    "error-response",
    "llm-function-call-started",
    "llm-function-call-in-progress",
    "llm-function-call-stopped",
    "server-message",
    "bot-llm-marker",
]


def _pb_frame(kind: int, body: bytes) -> bytes:
    return len_field(kind, body)


class PipecatGen(JsonGen):
    """Pipecat protobuf frames: RTVI JSON in MessageFrames (scripted turns and random ones, the JSON
    mutated like the other codecs'), audio/text/transcription/interruption frames, and protobuf-level
    damage (bytes mutated after encoding, lying lengths, wrong wire types, unknown kinds)."""

    def call_id(self) -> str:
        r = self.r
        if self.calls_seen and self.chance(0.3):
            return r.choice(self.calls_seen)[0]
        return r.choice([f"call_{r.randrange(6)}", "", "c" * 300, "x\ud800"])

    def rtvi(self, kind: str, data: Any = None) -> dict[str, Any]:
        obj: dict[str, Any] = {"label": "rtvi-ai", "type": kind, "id": str(self.fresh())}
        if data is not None:
            obj["data"] = data
        return obj

    def call_event(self) -> dict[str, Any]:
        r = self.r
        name = r.choice(["calculator", "get_weather", "lookup", None])
        data: dict[str, Any] = {"tool_call_id": self.call_id()}
        if name is not None or self.chance(0.5):
            data["function_name"] = name
        if self.chance(0.85):
            data["arguments"] = self.tool_args(name)
        return self.rtvi("llm-function-call-in-progress", data)

    def audio(self) -> bytes:
        r = self.r
        channels = r.choice([1, 1, 1, 2, 0, 3, 9])
        rate = r.choice([24000, 24000, 16000, 48000, 8000, 0, 7, 10**6, 2**32 - 1])
        n = r.randrange(0, 961) * max(1, channels)
        pcm = r.randbytes(2 * n + (1 if self.chance(0.05) else 0))
        if self.chance(0.002):
            pcm = r.randbytes(r.randrange(100_000, 400_000))
        body = varint_field(1, r.randrange(2**64)) + string_field(2, "OutputAudioRawFrame#1") + len_field(3, pcm)
        body += varint_field(4, rate) + varint_field(5, channels)
        if self.chance(0.1):
            body += varint_field(6, r.randrange(2**64))
        return _pb_frame(2, body)

    def session_script(self) -> list[Any]:
        r = self.r
        text = [self.rtvi("bot-llm-text", {"text": self.word()}) for _ in range(r.randrange(1, 6))]
        script: list[Any] = [self.rtvi("bot-ready", {"version": "2.2.0"}), self.rtvi("bot-llm-started"), *text]
        script += [self.rtvi("bot-transcription", {"text": "x"}), self.rtvi("bot-started-speaking")]
        script += [self.audio() for _ in range(r.randrange(1, 5))]
        script += [self.rtvi("bot-stopped-speaking"), self.call_event()]
        script += [self.rtvi("bot-started-speaking"), self.audio(), b"interruption"]
        script += [self.rtvi("user-started-speaking"), self.rtvi("bot-interrupted")]
        return script

    def random_event(self) -> Any:
        r = self.r
        k = r.randrange(12)
        if k < 3:
            return self.audio()
        if k == 3:
            return b"interruption"
        if k == 4:
            text = self.word().encode("utf-8", "surrogatepass").decode("utf-8", "replace")
            return _pb_frame(1, string_field(3, text))
        if k == 5:
            return _pb_frame(3, string_field(3, "hi") + string_field(4, "u"))
        if k == 6:
            return self.call_event()
        if k == 7:
            data = {"tool_call_id": self.call_id(), "cancelled": r.choice([True, False, "yes", None])}
            return self.rtvi("llm-function-call-stopped", data)
        kind = r.choice(RTVI_TYPES)
        data = r.choice([None, {"text": self.word()}, {"error": self.word(), "fatal": True}, self.value()])
        return self.rtvi(kind, data)

    def case(self) -> bytes:  # type: ignore[override]
        r = self.r
        if self.chance(0.01):
            return r.randbytes(r.randrange(64))
        if self.chance(0.01):
            return self.word().encode("utf-8", "surrogatepass")  # not protobuf at all
        event = self.next_event()
        mutated = self.chance(0.4)
        if event == b"interruption":
            data = _pb_frame(5, varint_field(1, 48) + string_field(2, "InterruptionFrame#0"))
        elif isinstance(event, bytes):
            data = event
        else:
            raws: list[str] = []
            if mutated and self.chance(0.6):
                event = self.mutate_tree(event, raws)
            text = self.serialize(event, raws)
            if mutated and self.chance(0.2):
                text = self.mutate_text(text, event)
            data = _pb_frame(4, len_field(1, text.encode("utf-8", "surrogatepass")))
        if mutated and self.chance(0.3):
            k = r.randrange(4)
            if k == 0:
                return self.mutate_bytes(data)
            if k == 1:
                return bytes([r.randrange(256)]) + data[1:]  # another field number or wire type
            if k == 2:
                return data[:1] + varint_field(1, r.randrange(2**35))[1:] + data[2:]  # a lying length
            return data + data[: r.randrange(len(data) + 1)]  # a second (partial) oneof
        return data


def _pipecat_messages(msgs: Any) -> list[dict[str, Any]] | str:
    """What the Pipecat codec sent, parsed; a string saying what is wrong if any message is not one
    well-formed Frame (an RTVI JSON object in a MessageFrame, or 16 kHz mono audio)."""
    if not isinstance(msgs, list):
        return f"returned {type(msgs).__name__}, not a list"
    out: list[dict[str, Any]] = []
    for m in msgs:
        if not isinstance(m, bytes):
            return f"a message of type {type(m).__name__}"
        try:
            fields = list(Reader(m).fields())
            if len(fields) != 1 or fields[0][1] != LEN or fields[0][0] not in (2, 4):
                return f"not one audio or message Frame: {m[:40]!r}"
            inner = {n: v for n, _, v in Reader(fields[0][2]).fields()}
            if fields[0][0] == 2:
                if inner.get(4) != 16000 or inner.get(5) != 1:
                    return f"microphone audio at {inner.get(4)} Hz, {inner.get(5)} channel(s)"
                out.append({"type": "audio"})
                continue
            obj = json.loads(as_text(inner.get(1, b""), "data"))
        except (WireError, ValueError) as exc:
            return f"a malformed message: {exc}: {m[:80]!r}"
        if not isinstance(obj, dict) or obj.get("label") != "rtvi-ai":
            return f"not an RTVI message: {obj!r:.200}"
        out.append(obj)
    return out


def pipecat_bounds(c: PipecatCodec) -> list[str]:
    return tracked_bounds(c, c._calls, c._cancelled)


def run_json_codec(protocol: str, cases: int, seed: int) -> CodecTally:
    if protocol == "openai":
        name, codec, g, bounds = "OpenAIRealtimeCodec", _traced(OpenAIRealtimeCodec)(), OpenAIGen(seed), openai_bounds
        foreign: list[Any] = ["item_unknown", "", 3, None]
    elif protocol == "gemini":
        name, codec, g, bounds = "GeminiLiveCodec", _traced(GeminiLiveCodec)(), GeminiGen(seed), gemini_bounds
        foreign = [0, -1, 10**9, "1", None]
    else:
        name, codec, g, bounds = "PipecatCodec", _traced(PipecatCodec)(), PipecatGen(seed), pipecat_bounds
        foreign = [0, -1, 10**9, "1", None]
    parse = _pipecat_messages if protocol == "pipecat" else _json_messages
    t = CodecTally(f"{name}.decode")
    codec.start(SessionConfig(tools=FUZZ_TOOLS, instructions="fuzz"), "")
    context: deque[Any] = deque(maxlen=8)
    truncated: dict[Any, Any] = {}
    over_bounds = False
    start = time.perf_counter()
    for i in range(cases):
        msg = g.case()
        t.input_bytes += len(msg)
        t.binary_cases += isinstance(msg, bytes)
        try:
            events = codec.decode(msg)
            outgoing = parse(codec.take_outgoing())
        except Exception as exc:
            t.exceptions += 1
            t.problem(i, "decode", msg, f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=8), list(context))
            events, outgoing = [], []
        if isinstance(outgoing, str):
            t.violations += 1
            t.problem(i, "take_outgoing", msg, outgoing, "", list(context))
        t.messages_out += len(outgoing)
        for e in events:
            if isinstance(e, ProtocolErrorEvent):
                t.protocol_errors += 1
                if e.reason.startswith("internal decoder error"):
                    t.exceptions += 1  # decode caught an exception of its own: a bug
                    t.problem(i, "decode", msg, e.reason, codec.last_traceback, list(context))
            elif isinstance(e, Ignored):
                t.ignored += 1
            else:
                t.other_events += 1
        t.events += len(events)
        t.failed_calls += sum(isinstance(e, ToolCallInvalid) for e in events)
        t.ready_calls += sum(isinstance(e, ToolCallReady) for e in events)
        g.observe(events)
        context.append(msg)
        t.cases += 1
        if i % 16 == 15:  # the page's intents, on whatever state the input left
            calls: list[tuple[str, Any]] = [("tool_result", g.outcome()) for _ in range(g.r.randrange(1, 4))]
            calls.append(("cut", g.positions(foreign)))
            for what, arg in calls:
                t.encoder_calls += 1
                try:
                    msgs = parse(getattr(codec, what)(arg))
                    problem = msgs if isinstance(msgs, str) else ""
                    if not problem and what == "cut":
                        problem = check_cut(codec, arg, msgs, truncated)  # type: ignore[arg-type]
                    if problem:
                        t.violations += 1
                        t.problem(i, what, arg, problem, "", list(context))
                    else:
                        t.messages_out += len(msgs)
                except Exception as exc:
                    t.exceptions += 1
                    tb = traceback.format_exc(limit=8)
                    t.problem(i, what, arg, f"{type(exc).__name__}: {exc}", tb, list(context))
            try:
                t.messages_out += len(codec.take_outgoing())
                codec.stats()
                problems = bounds(codec)
            except Exception as exc:
                t.exceptions += 1
                t.problem(i, "stats", None, f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=8), [])
                problems = []
            if problems and not over_bounds:  # counted when a bound is first exceeded, not every batch after
                t.violations += 1
                t.problem(i, "bounds", None, "; ".join(problems), "", list(context))
            over_bounds = bool(problems)
    t.malformed = t.protocol_errors
    t.seconds = time.perf_counter() - start
    return t


def run_openai(cases: int, seed: int) -> Tally:
    return run_json_codec("openai", cases, seed)


def run_gemini(cases: int, seed: int) -> Tally:
    return run_json_codec("gemini", cases, seed)


def run_pipecat(cases: int, seed: int) -> Tally:
    return run_json_codec("pipecat", cases, seed)


RUNS: list[tuple[str, Callable[[int, int], Tally]]] = [
    ("message", run_message_mode),
    ("stream", run_stream_mode),
    ("demux", run_demux),
    ("assembler", run_assembler),
    ("openai", run_openai),
    ("gemini", run_gemini),
    ("pipecat", run_pipecat),
]


def write(out: Path, args: argparse.Namespace, tallies: list[Tally]) -> str:
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "args": {"cases": args.cases, "seed": args.seed},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "decoders": [t.as_dict() for t in tallies],
    }
    (out / "fuzz.json").write_text(json.dumps(data, indent=1) + "\n")
    lines = [
        "# Decoder fuzzing",
        "",
        f"{args.cases:,} generated cases per decoder, seed {args.seed}, CPython {data['python']}. "
        "Cases start from valid frames of every kind and mutate header fields, JSON structure (deep "
        "nesting, lone surrogates, NaN, huge values, wrong types) and payload bytes; see bench/fuzz.py. "
        "Exceptions and bound violations must be 0. Malformed: frames reported as malformed "
        "(counted, the stream goes on). Out: decoded items (FrameDecoder: frames and Malformed; Demux and "
        "assembler: events). Failed calls: tool calls answered with a failed result.",
        "",
        "| decoder | cases | exceptions | bound violations | malformed | out | failed calls | seconds | cases/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in tallies:
        if isinstance(t, CodecTally):
            continue
        lines.append(
            f"| {t.name} | {t.cases:,} | {t.exceptions} | {t.violations} | {t.malformed:,} | {t.events:,} "
            f"| {t.failed_calls:,} | {t.seconds:.1f} | {t.cases / t.seconds if t.seconds else 0:,.0f} |"
        )
    codecs = [t for t in tallies if isinstance(t, CodecTally)]
    if codecs:
        lines += [
            "",
            "## JSON codecs",
            "",
            "`OpenAIRealtimeCodec.decode` and `GeminiLiveCodec.decode`, one long-lived codec each (tools "
            "registered, so arguments are validated), one server message per case: events of every type from "
            "scripted sessions (sometimes reordered or with an event lost) and random ones over a small pool of "
            "response, item and call ids (tool-call events for unknown items, deltas after the end...), 40% "
            "mutated: wrong types and missing fields anywhere in the tree, lone surrogates, huge strings, "
            "nesting past the limit, NaN/Infinity, bad base64 audio (odd length, invalid characters, odd PCM "
            "byte counts), an event given another event's type, duplicate keys, truncated JSON, random "
            "characters and bytes. Text messages as `str`; binary ones as `bytes` (Gemini sends JSON in binary "
            "frames; a few for OpenAI too). Every 16 cases the page's intents run on the state the input left: "
            "`tool_result` for calls the codec reported (and unknown ones) with random results and errors, "
            "and `cut` with random playback positions; their messages must be JSON objects, a truncate must "
            "carry an integer `audio_end_ms` and never repeat an item, `response.cancel` only for a cut the "
            "page asked for, Gemini's cut sends nothing; the codec's tracked state must stay within its "
            "bounds. Exceptions: raised by any codec method, or caught by `decode` itself (an `internal "
            "decoder error` event), must be 0.",
            "",
            "| codec | cases | binary | exceptions | violations | ProtocolErrorEvent | Ignored | other events "
            "| failed calls | encoder calls | seconds | cases/s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for t in codecs:
            lines.append(
                f"| {t.name} | {t.cases:,} | {t.binary_cases:,} | {t.exceptions} | {t.violations} "
                f"| {t.protocol_errors:,} | {t.ignored:,} | {t.other_events:,} | {t.failed_calls:,} "
                f"| {t.encoder_calls:,} | {t.seconds:.1f} | {t.cases / t.seconds if t.seconds else 0:,.0f} |"
            )
    problems = [(t, ex) for t in tallies for ex in t.examples]
    if problems:
        lines += ["", "## Problems found", "", "The first case of each kind (all of them in fuzz.json):", ""]
        for t, ex in problems:
            count = getattr(t, "problem_counts", {}).get(ex.get("kind"), 1)
            where = f" in `{ex['where']}`" if "where" in ex else ""
            lines.append(f"- {t.name}{where}, {count:,} case(s), first at case {ex['case']}: {ex['error'][:300]}")
    lines += ["", f"Reproduce: `./dev bench fuzz --cases {args.cases} --seed {args.seed}`", ""]
    md = "\n".join(lines)
    (out / "fuzz.md").write_text(md)
    return md


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench fuzz", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cases", type=int, default=100_000, help="generated cases per decoder (default 100,000)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--only", choices=[name for name, _ in RUNS], action="append", help="run only these decoders")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    tallies = []
    for k, (name, run) in enumerate(RUNS):
        if args.only and name not in args.only:
            continue
        print(f"{name}: {args.cases:,} cases ...", flush=True)
        t = run(args.cases, args.seed * 1000 + k)
        print(f"  {t.exceptions} exceptions, {t.violations} violations, {t.malformed:,} malformed, {t.seconds:.1f} s")
        for ex in t.examples:
            print(f"  case {ex['case']}: {ex['error']}\n{ex['traceback']}", file=sys.stderr)
        tallies.append(t)
    print(write(args.out, args, tallies))
    return 1 if any(t.exceptions or t.violations for t in tallies) else 0
