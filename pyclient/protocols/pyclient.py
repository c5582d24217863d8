"""``pyclient.v1``: pyclient's own binary framing (docs/PROTOCOL.md), as a codec.

Unchanged on the wire: decoding is ``pyclient.demux.Demux`` (12-byte headers, sequence
numbers, incremental UTF-8, streamed tool-call assembly), encoding is ``frames.Sequencer``.
The only protocol here with credit flow control, sequence numbers and an end marker
(``done``): a close before it is an error (docs/PROTOCOL.md, "Ending a session").
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..demux import Demux
from ..events import Event, ProtocolErrorEvent, ServerHello
from ..frames import (
    AUDIO_META_SIZE,
    DEFAULT_MAX_PAYLOAD,
    HEADER,
    HEADER_SIZE,
    ByteSource,
    BytesSource,
    Kind,
    Sequencer,
)
from ..playback import PlaybackPosition
from ..tools import DEFAULT_OPEN_CALL_TIMEOUT, ToolOutcome
from .base import Capabilities, Codec, Incoming, Message, SessionConfig

SUBPROTOCOL = "pyclient.v1"
SUBPROTOCOL_CREDIT = "pyclient.v1.credit"
RESUME_FAILED = 4410  # the server's close code when a session cannot be resumed
MAX_RESUME_TOKEN = 512


class PyclientCodec(Codec):
    name = "pyclient"
    capabilities = Capabilities(
        credit=True, sequence_numbers=True, streamed_tool_arguments=True, truncate=True, resume=True, end_marker=True
    )
    input_audio_rate = None  # any rate: AUDIO frames carry theirs
    resumes_exactly = True  # the server replays every frame after the last one consumed
    has_heartbeat = True  # control 'ping' {id}: the server answers 'pong' {id}, in order

    def __init__(
        self, max_payload: int = DEFAULT_MAX_PAYLOAD, open_call_timeout: float = DEFAULT_OPEN_CALL_TIMEOUT
    ) -> None:
        self.demux = Demux(max_payload=max_payload, open_call_timeout=open_call_timeout)
        self.seq = Sequencer()
        self.text_messages = 0
        self.resume_token: str | None = None  # the server's hello offers one: the session can resume

    def subprotocols(self, *, token: str | None = None, credit: bool = False) -> list[str]:
        return [SUBPROTOCOL_CREDIT, SUBPROTOCOL] if credit else [SUBPROTOCOL]

    def start(self, config: SessionConfig, subprotocol: str) -> list[Message]:
        tools = [{"name": t.name, "description": t.description, "parameters": t.parameters} for t in config.tools]
        return [self.seq.control("hello", client="pyclient", tools=tools, **config.client)]

    def decode(self, message: Incoming) -> list[Event]:
        if isinstance(message, str):
            self.text_messages += 1
            return [ProtocolErrorEvent("text WebSocket message ignored: pyclient.v1 is binary", len(message))]
        events = self.demux.feed_message(message)
        for event in events:
            if isinstance(event, ServerHello):
                token = event.fields.get("resume_token")
                if isinstance(token, str) and 0 < len(token) <= MAX_RESUME_TOKEN:
                    self.resume_token = token
        return events

    def resume_url(self, url: str) -> str | None:
        """The URL that resumes this session after a lost socket: ``url`` with ``resume`` (the
        server's token) and ``last_seq`` (the last frame consumed; the server replays what
        follows). None: the server offered no resume."""
        if self.resume_token is None:
            return None
        parts = urlsplit(url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("resume", "last_seq")]
        query.append(("resume", self.resume_token))
        if self.demux.last_seq is not None:
            query.append(("last_seq", str(self.demux.last_seq)))
        return urlunsplit(parts._replace(query=urlencode(query)))

    def forgive(self, seqs: list[int]) -> None:
        """Sequence numbers of frames dropped on purpose (queue overflow): not gaps."""
        self.demux.forgive(seqs)

    def droppable(self, message: Incoming) -> bool:
        return self.audio_seq(message) is not None

    def audio_samples(self, message: Incoming) -> int:
        n = len(message)
        return max(0, n - HEADER_SIZE - AUDIO_META_SIZE) // 2 if self.audio_seq(message) is not None else 0

    def classify(self, message: Incoming) -> tuple[bool, int | None]:
        seq = self.audio_seq(message)
        return seq is not None, seq

    def audio_seq(self, message: Incoming) -> int | None:
        """The sequence number of a message that is exactly one AUDIO frame, else None."""
        if isinstance(message, str):
            return None
        src = message if not isinstance(message, (bytes, bytearray, memoryview)) else BytesSource(message)
        n = len(src)
        if n < HEADER_SIZE:
            return None
        _v, kind, _f, _r, seq, length = HEADER.unpack(src.bytes_at(0, HEADER_SIZE))
        return seq if kind == Kind.AUDIO and HEADER_SIZE + length == n else None

    def finish(self) -> list[Event]:
        return self.demux.flush_text()

    def expire(self) -> list[Event]:
        return self.demux.expire()

    def tool_result(self, outcome: ToolOutcome) -> list[Message]:
        return [self.seq.tool_result(outcome.call_id, ok=outcome.ok, result=outcome.result, error=outcome.error)]

    def audio(self, pcm: bytes, sample_rate: int, item_id: int) -> list[Message]:
        return [self.seq.audio(pcm, sample_rate=sample_rate, item_id=item_id)]

    def audio_end(self, item_id: int, samples: int, sample_rate: int) -> list[Message]:
        return [self.seq.control("input_audio_end", item_id=item_id, samples=samples, sample_rate=sample_rate)]

    def cut(self, positions: list[PlaybackPosition]) -> list[Message]:
        return [self.seq.control("playback_position", **p.as_dict()) for p in positions]

    def text(self, text: str) -> list[Message]:
        return [self.seq.control("user_text", text=text)]

    def ping(self, ping_id: int) -> list[Message]:
        return [self.seq.control("ping", id=ping_id)]

    def credit(self, grant: int) -> list[Message]:
        return [self.seq.credit(grant)]

    def stats(self) -> dict[str, Any]:
        d = self.demux.stats
        return {
            "frames": d.frames,
            "malformed": d.malformed,
            "seq_gaps": d.seq_gaps,
            "frames_by_kind": dict(d.frames_by_kind),
            "text_messages": self.text_messages,
        }


__all__ = ["SUBPROTOCOL", "SUBPROTOCOL_CREDIT", "ByteSource", "PyclientCodec"]
