"""Wire frames: kinds, typed frame dataclasses, encoding and a bounded decoder.

Theory of operation (the normative text is docs/PROTOCOL.md):

* Every frame is a fixed 12-byte big-endian header followed by ``length`` payload bytes::

      version:u8  kind:u8  flags:u8  reserved:u8  seq:u32  length:u32

  The header layout never changes between protocol versions, so a decoder can always skip a
  frame it does not understand (unknown kind, other version) and stay in sync.
* A WebSocket message carries one or more whole frames; a frame never spans two messages.
  ``FrameDecoder.feed_message`` relies on that (zero-copy, no buffering);
  ``FrameDecoder.feed`` accepts an arbitrary byte stream split anywhere and buffers at most
  one frame (bounded by ``max_payload``).
* **Contract: decoding never raises on peer input.** A frame that cannot be decoded becomes a
  ``Malformed`` value in the output list, carrying the reason with the numbers, and decoding
  goes on with the next frame. That covers JSON nested deeper than ``MAX_JSON_DEPTH`` (64; it
  is refused by a cheap scan *before* ``json.loads``, because under Pyodide the C stack can
  overflow before Python raises ``RecursionError``), ``NaN``/``Infinity`` literals (not JSON),
  and a ``call_id`` that is empty, longer than ``MAX_CALL_ID_CHARS`` (256) or not valid Unicode
  (a lone surrogate escape such as ``"\\ud800"``): nobody could be answered about that call.
  Lone surrogates elsewhere in CONTROL and TOOL_RESULT JSON are replaced with U+FFFD, as
  invalid UTF-8 in text is; in TOOL_CALL names and arguments they are left for the tool-call
  assembler, which fails that call with a structured error. Should a bug still raise while one
  frame is decoded, that frame becomes ``Malformed("internal decoder error: ...")`` and the
  next frame of the message still decodes.
* Encoding is strict the other way round: ``encode_json`` and the ``Sequencer`` raise
  ``EncodeError`` (a ``UsageError``: our caller's mistake) for anything the peer could not
  decode -- lone surrogates, NaN/infinities, non-JSON types, nesting deeper than
  ``MAX_JSON_DEPTH``, header fields out of range. ``Sequencer`` encodes a frame completely
  before it takes a sequence number, so a frame that cannot be encoded uses none.

Payloads are read through a small ``ByteSource`` protocol so that the browser shell can hand
in a JavaScript ``ArrayBuffer`` and get audio payloads back as zero-copy JS views, while
headers, text and JSON (small) are copied into Python once.
"""

from __future__ import annotations

import json
import math
import operator
import re
import struct
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from itertools import accumulate, count
from typing import Any, Protocol

from .errors import EncodeError, FrameTooLarge, TruncatedFrame

PROTOCOL_VERSION = 1
HEADER = struct.Struct("!BBBBII")
HEADER_SIZE = HEADER.size  # 12
AUDIO_META = struct.Struct("!II")  # sample_rate, item_id
AUDIO_META_SIZE = AUDIO_META.size  # 8
CREDIT_PAYLOAD = struct.Struct("!I")

DEFAULT_MAX_PAYLOAD = 1 << 20  # 1 MiB
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
SEQ_MODULUS = 1 << 32
MAX_JSON_DEPTH = 64  # nesting of [ and { in any JSON payload, both directions
MAX_CALL_ID_CHARS = 256
MAX_TOOL_NAME_CHARS = 128  # checked by the tool-call assembler (a bad name fails the call)


class Kind(IntEnum):
    AUDIO = 1
    TEXT = 2
    TOOL_CALL = 3
    TOOL_RESULT = 4
    CONTROL = 5
    CREDIT = 6


# Plain ints for the per-frame hot path (an enum member lookup is a descriptor call).
_AUDIO, _TEXT, _CREDIT = int(Kind.AUDIO), int(Kind.TEXT), int(Kind.CREDIT)
_JSON_KINDS = frozenset((int(Kind.TOOL_CALL), int(Kind.TOOL_RESULT), int(Kind.CONTROL)))


class Flag(IntFlag):
    NONE = 0
    FIN = 1  # TOOL_CALL: last argument fragment; AUDIO: last frame of an audio item


# --------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class AudioFrame:
    """PCM16 little-endian mono samples of one audio item at ``sample_rate``.

    ``pcm`` is whatever the byte source hands out for a payload view: a ``memoryview``
    under CPython, a JS ``Uint8Array`` view in the browser.
    """

    seq: int
    sample_rate: int
    item_id: int
    pcm: Any = field(repr=False)
    nbytes: int = 0
    flags: int = 0
    kind = Kind.AUDIO

    @property
    def samples(self) -> int:
        return self.nbytes // 2

    @property
    def final(self) -> bool:
        return bool(self.flags & Flag.FIN)


@dataclass(frozen=True)
class TextFrame:
    """A fragment of UTF-8 text (a fragment may end inside a multi-byte character)."""

    seq: int
    data: bytes
    flags: int = 0
    kind = Kind.TEXT


@dataclass(frozen=True)
class ToolCallFrame:
    """One fragment of a tool call's JSON arguments; FIN marks the last one."""

    seq: int
    call_id: str
    name: str | None
    arguments_delta: str
    flags: int = 0
    kind = Kind.TOOL_CALL

    @property
    def final(self) -> bool:
        return bool(self.flags & Flag.FIN)


@dataclass(frozen=True)
class ToolResultFrame:
    seq: int
    call_id: str
    ok: bool
    result: Any = None
    error: dict[str, Any] | None = None
    flags: int = 0
    kind = Kind.TOOL_RESULT


@dataclass(frozen=True)
class ControlFrame:
    seq: int
    type: str
    fields: dict[str, Any]
    flags: int = 0
    kind = Kind.CONTROL


@dataclass(frozen=True)
class CreditFrame:
    """Grants the peer ``grant`` more payload bytes (flow control, docs/PROTOCOL.md)."""

    seq: int
    grant: int
    flags: int = 0
    kind = Kind.CREDIT


@dataclass(frozen=True)
class Malformed:
    """A frame that could not be decoded. Decoding continues after it."""

    reason: str
    nbytes: int
    seq: int | None = None
    kind: int | None = None


Frame = AudioFrame | TextFrame | ToolCallFrame | ToolResultFrame | ControlFrame | CreditFrame
Decoded = Frame | Malformed


# --------------------------------------------------------------------------- JSON

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_CONTAINERS = (dict, list, tuple)


def _check_encodable_tree(obj: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse nesting deeper than ``limit`` (or circular) and NaN/infinities, without recursion."""
    seen: dict[int, int] = {}  # id of a container -> deepest level it was walked at
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, float):
            if not math.isfinite(node):
                raise EncodeError(f"cannot encode as JSON: float {node!r} (NaN and infinities are not JSON)")
            continue
        if not isinstance(node, _CONTAINERS):
            continue
        if depth > limit:
            raise EncodeError(f"cannot encode as JSON: nested more than {limit} deep (or circular), limit is {limit}")
        if seen.get(id(node), 0) >= depth:
            continue  # shared sub-tree already walked at this depth or deeper
        seen[id(node)] = depth
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, (float, *_CONTAINERS)):
                stack.append((child, depth + 1))


def encode_json(obj: Any) -> bytes:
    """Strict, compact UTF-8 JSON: what every JSON payload we send goes through.

    Raises ``EncodeError`` (saying why, with the numbers) for lone surrogates, NaN and
    infinities, types JSON does not have (set, bytes, objects...), integers too long to print,
    and nesting deeper than ``MAX_JSON_DEPTH`` -- all things the peer could not decode.
    """
    _check_encodable_tree(obj)
    try:
        text = _ENCODER.encode(obj)
    except Exception as exc:  # TypeError (not JSON), ValueError (NaN key, int too long), user code
        raise EncodeError(f"cannot encode as JSON: {type(exc).__name__}: {exc}") from exc
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = ord(text[exc.start])
        raise EncodeError(
            f"cannot encode as JSON: lone surrogate U+{bad:04X} at character {exc.start} of {len(text)} "
            "(strings must be valid Unicode)"
        ) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# What is left of JSON text once strings (even unterminated ones) and everything but brackets
# are cut out. Possessive quantifiers keep it linear on any input.
_NOT_BRACKETS = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"?|[^\[\]{}"]++', re.DOTALL)
_DEPTH_STEP = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")  # +1 / -1, offset by one per bracket


def json_depth(text: str) -> int:
    """How deep ``[`` and ``{`` nest in JSON text, outside strings (unclosed ones count).

    Linear and iterative: the brackets are cut out with one regex, and the running depth is an
    ``accumulate`` in C -- so it is safe on hostile input where ``json.loads`` would recurse.
    """
    steps = _NOT_BRACKETS.sub("", text).encode("ascii").translate(_DEPTH_STEP)
    if not steps:
        return 0
    return max(0, max(map(operator.sub, accumulate(steps), count(1))))


# One decoder for all peer JSON: ``json.loads(text, parse_constant=...)`` would build a new one
# (and go through three Python frames) per message.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_SCAN = _DECODER.scan_once  # the C scanner: one call for a whole document


def decode_json(text: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` for peer input: raises ``ValueError`` (with the numbers), never recurses deep.

    Refuses nesting deeper than ``max_depth`` before parsing (only scanned for when the text has
    more than ``max_depth`` opening brackets at all) and the non-JSON literals NaN/Infinity.
    """
    if text.count("[") + text.count("{") > max_depth:
        depth = json_depth(text)
        if depth > max_depth:
            raise ValueError(f"JSON nested {depth} deep, limit is {max_depth}")
    try:
        # The common case in one C call: a document with nothing around it. Anything else
        # (whitespace around it, trailing data, an error) goes the way json.loads goes, for
        # its result or its error message.
        try:
            obj, end = _SCAN(text, 0)
        except StopIteration:
            return _DECODER.decode(text)
        return obj if end == len(text) else _DECODER.decode(text)
    except RecursionError as exc:  # not reached after the scan; kept as a second guard
        raise ValueError(f"JSON nested too deep for the parser (limit is {max_depth})") from exc


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_surrogate_escape(text: str) -> bool:
    return "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None


def _scrub(obj: Any) -> Any:
    """Replace lone surrogates with U+FFFD in every string of decoded JSON (depth is bounded)."""
    if isinstance(obj, str):
        return _LONE_SURROGATE.sub("\ufffd", obj)
    if isinstance(obj, list):
        return [_scrub(v) for v in obj]
    if isinstance(obj, dict):
        return {_scrub(k): _scrub(v) for k, v in obj.items()}
    return obj


def call_id_problem(call_id: object) -> str | None:
    """Why ``call_id`` cannot name a call on the wire, or None if it can."""
    if not isinstance(call_id, str) or not call_id:
        return "tool frame without a string 'call_id'"
    if len(call_id) > MAX_CALL_ID_CHARS:
        return f"tool frame 'call_id' of {len(call_id)} characters, limit is {MAX_CALL_ID_CHARS}"
    bad = _LONE_SURROGATE.search(call_id)
    if bad:
        return f"tool frame 'call_id' holds a lone surrogate U+{ord(bad.group()):04X} at character {bad.start()}"
    return None


# --------------------------------------------------------------------------- encoding

_U8 = 0xFF
_U32 = 0xFFFFFFFF


def encode_raw(kind: int, seq: int, payload: bytes, flags: int = 0, version: int = PROTOCOL_VERSION) -> bytes:
    """Encode one frame from an already-built payload (tests use it to forge bad frames)."""
    for name, value in (("version", version), ("kind", kind), ("flags", flags)):
        if not isinstance(value, int) or not 0 <= value <= _U8:
            raise EncodeError(f"header field {name}={value!r} outside 0..{_U8}")
    if not isinstance(seq, int):
        raise EncodeError(f"sequence number {seq!r} is not an int")
    if len(payload) > _U32:
        raise EncodeError(f"payload of {len(payload)} bytes, the header holds at most {_U32}")
    return HEADER.pack(version, kind, flags, 0, seq % SEQ_MODULUS, len(payload)) + payload


def _audio_payload(pcm: Any, sample_rate: int, item_id: int) -> bytes:
    raw = bytes(pcm)
    if len(raw) % 2:
        raise EncodeError(f"audio of {len(raw)} bytes: PCM16 needs an even number")
    if not isinstance(sample_rate, int) or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise EncodeError(f"audio sample rate {sample_rate!r} Hz outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}")
    if not isinstance(item_id, int) or not 0 <= item_id <= _U32:
        raise EncodeError(f"audio item_id {item_id!r} outside 0..{_U32}")
    return AUDIO_META.pack(sample_rate, item_id) + raw


def _text_payload(text: str | bytes) -> bytes:
    if not isinstance(text, str):
        return bytes(text)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = ord(text[exc.start])
        raise EncodeError(f"text holds a lone surrogate U+{bad:04X} at character {exc.start} of {len(text)}") from None


def _checked_call_id(call_id: Any) -> str:
    problem = call_id_problem(call_id)
    if problem is not None:
        raise EncodeError(f"cannot send: {problem}")
    return call_id


def _tool_call_payload(call_id: str, name: str | None, arguments_delta: str) -> bytes:
    obj: dict[str, Any] = {"call_id": _checked_call_id(call_id), "arguments_delta": arguments_delta}
    if name is not None:
        obj["name"] = name
    return encode_json(obj)


def _tool_result_payload(call_id: str, ok: bool, result: Any, error: dict[str, Any] | None) -> bytes:
    obj: dict[str, Any] = {"call_id": _checked_call_id(call_id), "ok": bool(ok)}
    if ok:
        obj["result"] = result
    else:
        obj["error"] = error or {"type": "error", "message": ""}
    return encode_json(obj)


def _control_payload(type: str, fields: dict[str, Any]) -> bytes:
    if not isinstance(type, str) or not type:
        raise EncodeError(f"control type {type!r} is not a non-empty string")
    return encode_json({"type": type, **fields})


def _credit_payload(grant: int) -> bytes:
    if not isinstance(grant, int) or not 0 <= grant <= _U32:
        raise EncodeError(f"credit grant {grant!r} outside 0..{_U32}")
    return CREDIT_PAYLOAD.pack(grant)


def encode_frame(frame: Frame) -> bytes:
    """Encode any frame dataclass to bytes; ``EncodeError`` if the peer could not decode it."""
    if isinstance(frame, AudioFrame):
        payload = _audio_payload(frame.pcm, frame.sample_rate, frame.item_id)
    elif isinstance(frame, TextFrame):
        payload = _text_payload(frame.data)
    elif isinstance(frame, ToolCallFrame):
        payload = _tool_call_payload(frame.call_id, frame.name, frame.arguments_delta)
    elif isinstance(frame, ToolResultFrame):
        payload = _tool_result_payload(frame.call_id, frame.ok, frame.result, frame.error)
    elif isinstance(frame, ControlFrame):
        payload = _control_payload(frame.type, frame.fields)
    elif isinstance(frame, CreditFrame):
        payload = _credit_payload(frame.grant)
    else:
        raise EncodeError(f"not a frame: {type(frame).__name__}")
    return encode_raw(frame.kind, frame.seq, payload, frame.flags)


class Sequencer:
    """Hands out per-direction sequence numbers (u32, wrapping) and encodes frames.

    Builders take the same arguments as the frame dataclasses minus ``seq``. Each builds the
    whole frame first and takes its sequence number last: a frame that cannot be encoded
    raises ``EncodeError`` and leaves ``next_seq`` unchanged (no gap on the wire).
    """

    def __init__(self, start: int = 0) -> None:
        self.next_seq = start % SEQ_MODULUS

    def _take(self) -> int:
        seq = self.next_seq
        self.next_seq = (seq + 1) % SEQ_MODULUS
        return seq

    def _frame(self, kind: int, payload: bytes, flags: int = 0, version: int = PROTOCOL_VERSION) -> bytes:
        raw = encode_raw(kind, self.next_seq, payload, flags, version)
        self._take()
        return raw

    def audio(self, pcm: bytes, *, sample_rate: int, item_id: int, final: bool = False) -> bytes:
        return self._frame(Kind.AUDIO, _audio_payload(pcm, sample_rate, item_id), Flag.FIN if final else 0)

    def text(self, text: str | bytes) -> bytes:
        return self._frame(Kind.TEXT, _text_payload(text))

    def tool_call(self, call_id: str, arguments_delta: str, *, name: str | None = None, final: bool = False) -> bytes:
        payload = _tool_call_payload(call_id, name, arguments_delta)
        return self._frame(Kind.TOOL_CALL, payload, Flag.FIN if final else 0)

    def tool_result(self, call_id: str, *, ok: bool, result: Any = None, error: dict[str, Any] | None = None) -> bytes:
        return self._frame(Kind.TOOL_RESULT, _tool_result_payload(call_id, ok, result, error))

    def raw(self, kind: int, payload: bytes, flags: int = 0, version: int = PROTOCOL_VERSION) -> bytes:
        """A frame with an arbitrary payload (used to forge malformed frames in tests)."""
        return self._frame(kind, payload, flags, version)

    def control(self, type: str, **fields: Any) -> bytes:
        return self._frame(Kind.CONTROL, _control_payload(type, fields))

    def credit(self, grant: int) -> bytes:
        return self._frame(Kind.CREDIT, _credit_payload(grant))


# --------------------------------------------------------------------------- decoding


class ByteSource(Protocol):
    """Read access to one received message (``bytes`` here, a JS ArrayBuffer in the browser)."""

    def __len__(self) -> int: ...

    def bytes_at(self, offset: int, length: int) -> bytes:
        """Copy ``length`` bytes starting at ``offset`` into Python."""
        ...

    def view_at(self, offset: int, length: int) -> Any:
        """A zero-copy view of ``length`` bytes starting at ``offset``."""
        ...


class BytesSource:
    """``ByteSource`` over Python bytes-like data."""

    __slots__ = ("_mv",)

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._mv = memoryview(data).cast("B")

    def __len__(self) -> int:
        return len(self._mv)

    def bytes_at(self, offset: int, length: int) -> bytes:
        return bytes(self._mv[offset : offset + length])

    def view_at(self, offset: int, length: int) -> memoryview:
        return self._mv[offset : offset + length]

    def span(self) -> tuple[memoryview, int, int]:
        """The buffer this message lies in, and where (start, end): the decoders' fast path
        reads it in place."""
        return self._mv, 0, len(self._mv)


def _load_json_object(raw: bytes) -> tuple[dict[str, Any], str] | str:
    """Parse a JSON object; returns it with its text, or the reason it is not one."""
    try:
        text = raw.decode("utf-8")
        obj = decode_json(text)
    except ValueError as exc:  # includes UnicodeDecodeError and JSONDecodeError
        return f"invalid JSON payload ({len(raw)} bytes): {exc}"
    if not isinstance(obj, dict):
        return f"JSON payload is a {type(obj).__name__}, expected an object"
    return obj, text


def decode_payload(kind: int, flags: int, seq: int, src: ByteSource, offset: int, length: int) -> Decoded:
    """Decode the payload of a frame whose header was valid."""
    if kind == _TEXT:
        return TextFrame(seq, src.bytes_at(offset, length), flags)
    nbytes = HEADER_SIZE + length
    if kind == _AUDIO:
        if length < AUDIO_META_SIZE or (length - AUDIO_META_SIZE) % 2:
            return Malformed(
                f"audio payload of {length} bytes: need {AUDIO_META_SIZE} bytes of metadata "
                "and an even number of PCM16 bytes",
                nbytes,
                seq,
                kind,
            )
        rate, item_id = AUDIO_META.unpack(src.bytes_at(offset, AUDIO_META_SIZE))
        if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            return Malformed(
                f"audio sample rate {rate} Hz outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}", nbytes, seq, kind
            )
        pcm_len = length - AUDIO_META_SIZE
        pcm = src.view_at(offset + AUDIO_META_SIZE, pcm_len)
        return AudioFrame(seq, rate, item_id, pcm, pcm_len, flags)
    if kind == _CREDIT:
        if length != CREDIT_PAYLOAD.size:
            return Malformed(f"credit payload of {length} bytes, expected 4", nbytes, seq, kind)
        (grant,) = CREDIT_PAYLOAD.unpack(src.bytes_at(offset, length))
        return CreditFrame(seq, grant, flags)
    if kind not in _JSON_KINDS:
        return Malformed(f"unknown frame kind {kind}", nbytes, seq, kind)

    loaded = _load_json_object(src.bytes_at(offset, length))
    if isinstance(loaded, str):
        return Malformed(loaded, nbytes, seq, kind)
    obj, text = loaded
    surrogates = _has_surrogate_escape(text)
    if kind == Kind.CONTROL:
        if surrogates:
            obj = _scrub(obj)
        ctype = obj.pop("type", None)
        if not isinstance(ctype, str) or not ctype:
            return Malformed("control frame without a string 'type'", nbytes, seq, kind)
        return ControlFrame(seq, ctype, obj, flags)
    call_id = obj.get("call_id")
    problem = call_id_problem(call_id)
    if problem is not None:
        return Malformed(problem, nbytes, seq, kind)
    if kind == Kind.TOOL_CALL:
        # name and arguments_delta keep lone surrogates: the assembler fails the call for them.
        name = obj.get("name")
        delta = obj.get("arguments_delta", "")
        if name is not None and not isinstance(name, str):
            return Malformed("tool call 'name' is not a string", nbytes, seq, kind)
        if not isinstance(delta, str):
            return Malformed("tool call 'arguments_delta' is not a string", nbytes, seq, kind)
        return ToolCallFrame(seq, call_id, name, delta, flags)
    if surrogates:
        obj = _scrub(obj)
    ok = obj.get("ok")
    if not isinstance(ok, bool):
        return Malformed("tool result without a boolean 'ok'", nbytes, seq, kind)
    error = obj.get("error")
    if not ok and not isinstance(error, dict):
        return Malformed("failed tool result without an 'error' object", nbytes, seq, kind)
    return ToolResultFrame(seq, call_id, ok, obj.get("result"), error, flags)


class FrameDecoder:
    """Decodes frames with a hard bound on what it holds.

    ``feed_message`` is for transports that preserve message boundaries (WebSocket); it never
    buffers. ``feed`` takes an arbitrary byte stream split anywhere; it holds at most one
    partial frame (``HEADER_SIZE + max_payload`` bytes) and skips oversize frames without
    storing them.
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        if max_payload < AUDIO_META_SIZE:
            raise ValueError(f"max_payload={max_payload} is below the {AUDIO_META_SIZE}-byte minimum")
        self.max_payload = max_payload
        self._buf = bytearray()
        self._skip = 0  # bytes of an oversize frame still to discard (stream mode)

    @property
    def buffered(self) -> int:
        """Bytes currently held (stream mode)."""
        return len(self._buf)

    def _check_header(self, version: int, kind: int, reserved: int, seq: int, length: int) -> Malformed | None:
        nbytes = HEADER_SIZE + length
        if length > self.max_payload:
            return Malformed(str(FrameTooLarge(length, self.max_payload)), nbytes, seq, kind)
        if version != PROTOCOL_VERSION:
            return Malformed(f"protocol version {version}, expected {PROTOCOL_VERSION}", nbytes, seq, kind)
        if reserved != 0:
            return Malformed(f"reserved header byte is {reserved}, expected 0", nbytes, seq, kind)
        return None

    def feed_message(self, src: ByteSource | bytes | bytearray | memoryview) -> list[Decoded]:
        """Decode every frame of one whole message. Never raises on what the message holds."""
        if isinstance(src, (bytes, bytearray, memoryview)):
            src = BytesSource(src)
        out: list[Decoded] = []
        total = len(src)
        off = 0
        while off < total:
            avail = total - off
            if avail < HEADER_SIZE:
                out.append(Malformed(str(TruncatedFrame(avail, HEADER_SIZE)), avail))
                break
            try:
                version, kind, flags, reserved, seq, length = HEADER.unpack(src.bytes_at(off, HEADER_SIZE))
            except Exception as exc:  # a byte source that cannot be read: nothing after it can be
                out.append(Malformed(internal_error_reason(exc), avail))
                break
            if HEADER_SIZE + length > avail:
                bad = self._check_header(version, kind, reserved, seq, length)
                reason = bad.reason if bad else str(TruncatedFrame(avail, HEADER_SIZE + length))
                out.append(Malformed(reason, avail, seq, kind))
                break
            decoded = self._check_header(version, kind, reserved, seq, length)
            if decoded is None:
                try:
                    decoded = decode_payload(kind, flags, seq, src, off + HEADER_SIZE, length)
                except Exception as exc:  # last line of defence: one frame lost, never the message
                    decoded = Malformed(internal_error_reason(exc), HEADER_SIZE + length, seq, kind)
            out.append(decoded)
            off += HEADER_SIZE + length
        return out

    def feed(self, data: bytes | bytearray | memoryview) -> list[Decoded]:
        """Decode from a byte stream; returns the frames completed by ``data``."""
        out: list[Decoded] = []
        mv = memoryview(data).cast("B")
        while len(mv):
            if self._skip:
                n = min(self._skip, len(mv))
                self._skip -= n
                mv = mv[n:]
                continue
            if len(self._buf) < HEADER_SIZE:
                need = HEADER_SIZE - len(self._buf)
                self._buf += mv[:need]
                mv = mv[need:]
                if len(self._buf) < HEADER_SIZE:
                    break
                version, kind, _flags, reserved, seq, length = HEADER.unpack_from(self._buf)
                bad = self._check_header(version, kind, reserved, seq, length)
                if bad is not None and length > self.max_payload:
                    out.append(bad)
                    self._buf.clear()
                    self._skip = length
                    continue
            length = HEADER.unpack_from(self._buf)[5]
            need = HEADER_SIZE + length - len(self._buf)
            self._buf += mv[:need]
            mv = mv[need:]
            if len(self._buf) == HEADER_SIZE + length:
                out.extend(self.feed_message(BytesSource(bytes(self._buf))))
                self._buf.clear()
        return out

    def pending_error(self) -> Malformed | None:
        """At end of stream: a ``Malformed`` for a partial frame still held, if any."""
        if self._skip:
            return Malformed(f"stream ended with {self._skip} bytes of an oversize frame unskipped", 0)
        if self._buf:
            need = HEADER.unpack_from(self._buf)[5] + HEADER_SIZE if len(self._buf) >= HEADER_SIZE else HEADER_SIZE
            return Malformed(str(TruncatedFrame(len(self._buf), need)), len(self._buf))
        return None


def internal_error_reason(exc: BaseException) -> str:
    """The reason for a frame that made a decoder raise (a bug, reported as a peer error)."""
    return f"internal decoder error: {type(exc).__name__}: {str(exc)[:200]}"
