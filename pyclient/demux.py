"""Demux: decoded frames -> typed events, one channel each, with per-channel accounting.

Sans-I/O. Feed it whole WebSocket messages (``feed_message``) or a byte stream (``feed``); it
returns events. It checks sequence numbers, decodes text incrementally (a UTF-8 character may
be split across frames), assembles streamed tool calls and times out the ones left open.

**Contract: ``feed_message``, ``feed``, ``expire`` and ``flush_text`` never raise because of
what the peer sent.** Every peer error becomes a ``ProtocolErrorEvent`` counted in
``stats.malformed`` (a frame that cannot be decoded, JSON nested too deep, a bad call_id ...),
or a ``ToolCallInvalid`` (a tool call that cannot run: it gets a failed result), and the stream
goes on with the next frame. As a last line of defence each frame is routed on its own: if
routing one raises anyway (a bug), it becomes ``ProtocolErrorEvent("internal decoder error:
...")``, counted as malformed, and the events before it and the frames after it in the same
message are kept.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable
from typing import Any

from .events import (
    AudioChunk,
    Channel,
    ControlMessage,
    CreditGranted,
    Event,
    Interrupted,
    ProtocolErrorEvent,
    ServerError,
    ServerHello,
    SessionResumed,
    StreamDone,
    TextDelta,
    TurnEnded,
)
from .frames import (
    DEFAULT_MAX_PAYLOAD,
    HEADER,
    HEADER_SIZE,
    PROTOCOL_VERSION,
    SEQ_MODULUS,
    AudioFrame,
    ByteSource,
    BytesSource,
    ControlFrame,
    CreditFrame,
    Decoded,
    FrameDecoder,
    Kind,
    Malformed,
    TextFrame,
    ToolCallFrame,
    ToolResultFrame,
    internal_error_reason,
)
from .tools import (
    DEFAULT_MAX_ARGUMENT_BYTES,
    DEFAULT_MAX_OPEN_BYTES,
    DEFAULT_MAX_OPEN_CALLS,
    DEFAULT_OPEN_CALL_TIMEOUT,
    ToolCallAssembler,
)

_CONTROL_EVENTS = {"hello": ServerHello, "end_of_turn": TurnEnded, "done": StreamDone, "resumed": SessionResumed}


class DemuxStats:
    """What the demux routed. Text frames (the bulk of a stream) are counted in two plain ints,
    folded into ``frames_by_kind`` and ``bytes_by_channel`` when those are read."""

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0
        self.malformed = 0
        self.seq_gaps = 0
        self.text_frames = 0
        self.text_bytes = 0
        self._by_kind: dict[str, int] = {}  # but text
        self._by_channel: dict[str, int] = {}  # but text

    @property
    def frames_by_kind(self) -> dict[str, int]:
        return _with(self._by_kind, "text", self.text_frames)

    @property
    def bytes_by_channel(self) -> dict[str, int]:
        return _with(self._by_channel, _TEXT, self.text_bytes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "bytes": self.bytes,
            "malformed": self.malformed,
            "seq_gaps": self.seq_gaps,
            "frames_by_kind": self.frames_by_kind,
            "bytes_by_channel": self.bytes_by_channel,
        }


def _with(counts: dict[str, int], key: str, n: int) -> dict[str, int]:
    """A copy of ``counts`` with ``n`` under ``key`` (when there is any)."""
    out = dict(counts)
    if n:
        out[key] = n
    return out


class Demux:
    def __init__(
        self,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        max_open_calls: int = DEFAULT_MAX_OPEN_CALLS,
        max_argument_bytes: int = DEFAULT_MAX_ARGUMENT_BYTES,
        *,
        max_open_tool_bytes: int = DEFAULT_MAX_OPEN_BYTES,
        open_call_timeout: float = DEFAULT_OPEN_CALL_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.decoder = FrameDecoder(max_payload)
        self.tools = ToolCallAssembler(
            max_open_calls,
            max_argument_bytes,
            max_open_bytes=max_open_tool_bytes,
            open_call_timeout=open_call_timeout,
            clock=clock,
        )
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._utf8_clean = True  # the decoder holds no bytes of a character cut between frames
        self._expected_seq: int | None = None
        self.last_seq: int | None = None  # the sequence number of the last frame routed (resume point)
        self._forgiven: set[int] = set()
        self.stats = DemuxStats()

    def forgive(self, seqs: list[int]) -> None:
        """Sequence numbers of frames we dropped on purpose (overflow): not a gap."""
        self._forgiven.update(seqs)

    def feed_message(self, src: ByteSource | bytes) -> list[Event]:
        """Route every frame of one whole WebSocket message."""
        if isinstance(src, (bytes, bytearray)):
            fast = self._one_text_frame(src, 0, len(src))
            if fast is not None:
                return fast
            src = BytesSource(src)
        else:
            if isinstance(src, memoryview):
                src = BytesSource(src)
            span = getattr(src, "span", None)  # a source that lies in a buffer (ours do)
            if span is not None:
                fast = self._one_text_frame(*span())
                if fast is not None:
                    return fast
        out: list[Event] = self.tools.expire()
        for decoded in self.decoder.feed_message(src):
            self._route_one(decoded, out)
        return out

    def _one_text_frame(self, buf: Any, start: int, end: int) -> list[Event] | None:
        """The message a token stream is made of (``buf[start:end]``), with a fraction of the
        general path's work: one whole TEXT frame, the next in sequence, while no tool call is
        open. Anything else: None, and the general path decides."""
        if end - start < HEADER_SIZE or self.tools.open_by_id:
            return None
        version, kind, _flags, reserved, seq, length = HEADER.unpack_from(buf, start)
        expected = self._expected_seq
        if (
            kind != _TEXT_KIND
            or version != PROTOCOL_VERSION
            or reserved
            or HEADER_SIZE + length != end - start
            or length > self.decoder.max_payload
            or (expected is not None and seq != expected)
            or self._forgiven
        ):
            return None
        self._expected_seq = (seq + 1) % SEQ_MODULUS
        self.last_seq = seq
        st = self.stats
        st.frames += 1
        st.bytes += length
        st.text_frames += 1
        st.text_bytes += length
        payload = buf[start + HEADER_SIZE : end]
        if self._utf8_clean:
            # Nothing held back from an earlier frame: whole, valid UTF-8 decodes in one call
            # (anything else -- a character cut at the end, bad bytes -- as the general path).
            try:
                text = str(payload, "utf-8")
            except UnicodeDecodeError:
                text = self._decode_text(bytes(payload))
        else:
            text = self._decode_text(bytes(payload))
        return [TextDelta(text)] if text else []

    def _decode_text(self, data: bytes) -> str:
        """A text frame's bytes through the incremental decoder (a character may continue in
        the next frame; bad bytes become U+FFFD)."""
        text = self._utf8.decode(data)
        self._utf8_clean = not self._utf8.getstate()[0]
        return text

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Route the frames completed by ``data`` (a byte stream split anywhere)."""
        out: list[Event] = list(self.tools.expire())
        try:
            frames = self.decoder.feed(data)
        except Exception as exc:  # a decoder bug: report it, drop what the decoder held
            self.decoder = FrameDecoder(self.decoder.max_payload)
            frames = [Malformed(internal_error_reason(exc), len(data))]
        for decoded in frames:
            self._route_one(decoded, out)
        return out

    def expire(self, now: float | None = None) -> list[Event]:
        """Fail tool calls open longer than ``open_call_timeout``; each feed does this too.

        A caller with no data arriving can run it on a timer (``self.tools.next_expiry``).
        """
        return list(self.tools.expire(now))

    def flush_text(self) -> list[Event]:
        """At end of stream: text held back because it ended inside a UTF-8 character."""
        tail = self._utf8.decode(b"", final=True)
        self._utf8_clean = True
        return [TextDelta(tail)] if tail else []

    # ------------------------------------------------------------------ internals

    def _count(self, decoded: Decoded, nbytes: int, channel: str) -> None:
        st = self.stats
        st.frames += 1
        st.bytes += nbytes
        kind = _KIND_NAMES.get(decoded.kind, "malformed") if not isinstance(decoded, Malformed) else "malformed"
        if kind == "text":
            st.text_frames += 1
        else:
            st._by_kind[kind] = st._by_kind.get(kind, 0) + 1
        if channel == _TEXT:
            st.text_bytes += nbytes
        else:
            st._by_channel[channel] = st._by_channel.get(channel, 0) + nbytes

    def _check_seq(self, seq: int | None, out: list[Event]) -> None:
        if seq is None:
            return
        expected = self._expected_seq
        while expected is not None and expected != seq and expected in self._forgiven:
            self._forgiven.discard(expected)
            expected = (expected + 1) % SEQ_MODULUS
        self._forgiven.discard(seq)
        if expected is not None and seq != expected:
            self.stats.seq_gaps += 1
            out.append(ProtocolErrorEvent(f"sequence gap: expected frame {expected}, got {seq}", 0, seq))
        self._expected_seq = (seq + 1) % SEQ_MODULUS
        self.last_seq = seq

    def _route_one(self, d: Decoded, out: list[Event]) -> None:
        """Route one frame; if that raises (a bug), the frame becomes a counted protocol error."""
        try:
            self._route(d, out)
        except Exception as exc:
            self.stats.malformed += 1
            nbytes = getattr(d, "nbytes", 0)
            out.append(
                ProtocolErrorEvent(internal_error_reason(exc), nbytes if isinstance(nbytes, int) else 0, d.seq, d.kind)
            )

    def _route(self, d: Decoded, out: list[Event]) -> None:
        if isinstance(d, Malformed):
            self.stats.malformed += 1
            self._count(d, d.nbytes, _CONTROL)
            self._check_seq(d.seq, out)
            out.append(ProtocolErrorEvent(d.reason, d.nbytes, d.seq, d.kind))
            return
        self._check_seq(d.seq, out)
        if isinstance(d, AudioFrame):
            self._count(d, d.nbytes, _AUDIO)
            out.append(AudioChunk(d.item_id, d.sample_rate, d.pcm, d.samples, d.final, d.seq))
        elif isinstance(d, TextFrame):
            self._count(d, len(d.data), _TEXT)
            text = self._decode_text(d.data)
            if text:
                out.append(TextDelta(text))
        elif isinstance(d, ToolCallFrame):
            self._count(d, len(d.arguments_delta), _TOOLS)
            out.extend(self.tools.feed(d))
        elif isinstance(d, ControlFrame):
            self._count(d, 0, _CONTROL)
            out.append(_control_event(d))
        elif isinstance(d, CreditFrame):
            self._count(d, 0, _CONTROL)
            out.append(CreditGranted(d.grant))
        elif isinstance(d, ToolResultFrame):
            self._count(d, 0, _CONTROL)
            out.append(ProtocolErrorEvent("tool result frames only travel from client to server", 0, d.seq))


_KIND_NAMES = {k.value: k.name.lower() for k in Kind}
_TEXT_KIND = int(Kind.TEXT)
_AUDIO, _TEXT, _TOOLS, _CONTROL = (c.value for c in (Channel.AUDIO, Channel.TEXT, Channel.TOOLS, Channel.CONTROL))


def _control_event(d: ControlFrame) -> Event:
    cls = _CONTROL_EVENTS.get(d.type)
    if cls is not None:
        return cls(d.fields)
    if d.type == "interrupted":
        item = d.fields.get("item_id")
        return Interrupted(item if isinstance(item, int) else None)
    if d.type == "error":
        return ServerError(str(d.fields.get("code", "error")), str(d.fields.get("message", "")))
    return ControlMessage(d.type, d.fields)
