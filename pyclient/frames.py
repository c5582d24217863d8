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
* Nothing here raises on bad input from the peer: a frame that cannot be decoded becomes a
  ``Malformed`` value in the output list, carrying the reason with the numbers, and decoding
  goes on with the next frame.

Payloads are read through a small ``ByteSource`` protocol so that the browser shell can hand
in a JavaScript ``ArrayBuffer`` and get audio payloads back as zero-copy JS views, while
headers, text and JSON (small) are copied into Python once.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any, Protocol

from .errors import FrameTooLarge, TruncatedFrame

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


class Kind(IntEnum):
    AUDIO = 1
    TEXT = 2
    TOOL_CALL = 3
    TOOL_RESULT = 4
    CONTROL = 5
    CREDIT = 6


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


# --------------------------------------------------------------------------- encoding


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def encode_raw(kind: int, seq: int, payload: bytes, flags: int = 0, version: int = PROTOCOL_VERSION) -> bytes:
    """Encode one frame from an already-built payload (tests use it to forge bad frames)."""
    return HEADER.pack(version, kind, flags, 0, seq % SEQ_MODULUS, len(payload)) + payload


def encode_frame(frame: Frame) -> bytes:
    """Encode any frame dataclass to bytes."""
    if isinstance(frame, AudioFrame):
        pcm = bytes(frame.pcm)
        payload = AUDIO_META.pack(frame.sample_rate, frame.item_id) + pcm
    elif isinstance(frame, TextFrame):
        payload = bytes(frame.data)
    elif isinstance(frame, ToolCallFrame):
        obj: dict[str, Any] = {"call_id": frame.call_id, "arguments_delta": frame.arguments_delta}
        if frame.name is not None:
            obj["name"] = frame.name
        payload = _json(obj)
    elif isinstance(frame, ToolResultFrame):
        obj = {"call_id": frame.call_id, "ok": frame.ok}
        if frame.ok:
            obj["result"] = frame.result
        else:
            obj["error"] = frame.error or {"type": "error", "message": ""}
        payload = _json(obj)
    elif isinstance(frame, ControlFrame):
        payload = _json({"type": frame.type, **frame.fields})
    elif isinstance(frame, CreditFrame):
        payload = CREDIT_PAYLOAD.pack(frame.grant)
    else:  # pragma: no cover - guarded by typing
        raise TypeError(f"not a frame: {frame!r}")
    return encode_raw(frame.kind, frame.seq, payload, frame.flags)


class Sequencer:
    """Hands out per-direction sequence numbers (u32, wrapping) and encodes frames.

    Builders take the same arguments as the frame dataclasses minus ``seq``.
    """

    def __init__(self, start: int = 0) -> None:
        self.next_seq = start % SEQ_MODULUS

    def _take(self) -> int:
        seq = self.next_seq
        self.next_seq = (seq + 1) % SEQ_MODULUS
        return seq

    def audio(self, pcm: bytes, *, sample_rate: int, item_id: int, final: bool = False) -> bytes:
        flags = Flag.FIN if final else 0
        return encode_frame(AudioFrame(self._take(), sample_rate, item_id, pcm, len(pcm), flags))

    def text(self, text: str | bytes) -> bytes:
        raw = text.encode() if isinstance(text, str) else bytes(text)
        return encode_frame(TextFrame(self._take(), raw))

    def tool_call(self, call_id: str, arguments_delta: str, *, name: str | None = None, final: bool = False) -> bytes:
        flags = Flag.FIN if final else 0
        return encode_frame(ToolCallFrame(self._take(), call_id, name, arguments_delta, flags))

    def tool_result(self, call_id: str, *, ok: bool, result: Any = None, error: dict[str, Any] | None = None) -> bytes:
        return encode_frame(ToolResultFrame(self._take(), call_id, ok, result, error))

    def raw(self, kind: int, payload: bytes, flags: int = 0, version: int = PROTOCOL_VERSION) -> bytes:
        """A frame with an arbitrary payload (used to forge malformed frames in tests)."""
        return encode_raw(kind, self._take(), payload, flags, version)

    def control(self, type: str, **fields: Any) -> bytes:
        return encode_frame(ControlFrame(self._take(), type, fields))

    def credit(self, grant: int) -> bytes:
        return encode_frame(CreditFrame(self._take(), grant))


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


def _load_json_object(raw: bytes) -> dict[str, Any] | str:
    """Parse a JSON object; on failure return the reason as a string."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return f"invalid JSON payload ({len(raw)} bytes): {exc}"
    if not isinstance(obj, dict):
        return f"JSON payload is a {type(obj).__name__}, expected an object"
    return obj


def decode_payload(kind: int, flags: int, seq: int, src: ByteSource, offset: int, length: int) -> Decoded:
    """Decode the payload of a frame whose header was valid."""
    nbytes = HEADER_SIZE + length
    if kind == Kind.AUDIO:
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
    if kind == Kind.TEXT:
        return TextFrame(seq, src.bytes_at(offset, length), flags)
    if kind == Kind.CREDIT:
        if length != CREDIT_PAYLOAD.size:
            return Malformed(f"credit payload of {length} bytes, expected 4", nbytes, seq, kind)
        (grant,) = CREDIT_PAYLOAD.unpack(src.bytes_at(offset, length))
        return CreditFrame(seq, grant, flags)
    if kind not in (Kind.TOOL_CALL, Kind.TOOL_RESULT, Kind.CONTROL):
        return Malformed(f"unknown frame kind {kind}", nbytes, seq, kind)

    obj = _load_json_object(src.bytes_at(offset, length))
    if isinstance(obj, str):
        return Malformed(obj, nbytes, seq, kind)
    if kind == Kind.CONTROL:
        ctype = obj.pop("type", None)
        if not isinstance(ctype, str) or not ctype:
            return Malformed("control frame without a string 'type'", nbytes, seq, kind)
        return ControlFrame(seq, ctype, obj, flags)
    call_id = obj.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        return Malformed("tool frame without a string 'call_id'", nbytes, seq, kind)
    if kind == Kind.TOOL_CALL:
        name = obj.get("name")
        delta = obj.get("arguments_delta", "")
        if name is not None and not isinstance(name, str):
            return Malformed("tool call 'name' is not a string", nbytes, seq, kind)
        if not isinstance(delta, str):
            return Malformed("tool call 'arguments_delta' is not a string", nbytes, seq, kind)
        return ToolCallFrame(seq, call_id, name, delta, flags)
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

    def feed_message(self, src: ByteSource) -> list[Decoded]:
        """Decode every frame of one whole message."""
        out: list[Decoded] = []
        total = len(src)
        off = 0
        while off < total:
            avail = total - off
            if avail < HEADER_SIZE:
                out.append(Malformed(str(TruncatedFrame(avail, HEADER_SIZE)), avail))
                break
            version, kind, flags, reserved, seq, length = HEADER.unpack(src.bytes_at(off, HEADER_SIZE))
            if HEADER_SIZE + length > avail:
                bad = self._check_header(version, kind, reserved, seq, length)
                reason = bad.reason if bad else str(TruncatedFrame(avail, HEADER_SIZE + length))
                out.append(Malformed(reason, avail, seq, kind))
                break
            bad = self._check_header(version, kind, reserved, seq, length)
            out.append(bad or decode_payload(kind, flags, seq, src, off + HEADER_SIZE, length))
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
