"""Typed events every protocol codec emits. Each belongs to exactly one ``Channel``.

Events are small frozen dataclasses. They never touch the DOM or audio: the browser shell
routes each one to the sink of its channel (``pyclient.browser``), or a CPython program can
consume them directly. Every wire protocol (``pyclient.protocols``) decodes into these same
events, so sinks, tools and stats do not know which protocol is spoken.

Item ids are ``str | int``: pyclient.v1 numbers its audio items, OpenAI names them
(``item_...``), Gemini has none (the codec numbers its turns).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

ItemId = str | int


class Channel(StrEnum):
    AUDIO = "audio"
    TEXT = "text"
    TOOLS = "tools"
    CONTROL = "control"


@dataclass(frozen=True)
class AudioChunk:
    """PCM16 little-endian mono samples; ``pcm`` is a zero-copy view when the source allows."""

    item_id: ItemId
    sample_rate: int
    pcm: Any = field(repr=False)
    samples: int = 0
    final: bool = False
    seq: int = 0
    channel: ClassVar[Channel] = Channel.AUDIO


@dataclass(frozen=True)
class TextDelta:
    text: str
    channel: ClassVar[Channel] = Channel.TEXT


@dataclass(frozen=True)
class ToolCallStarted:
    call_id: str
    name: str
    channel: ClassVar[Channel] = Channel.TOOLS


@dataclass(frozen=True)
class ToolCallArgumentsDelta:
    call_id: str
    delta: str
    channel: ClassVar[Channel] = Channel.TOOLS


@dataclass(frozen=True)
class ToolCallReady:
    """All argument fragments arrived and parse to a JSON object."""

    call_id: str
    name: str
    arguments: dict[str, Any]
    channel: ClassVar[Channel] = Channel.TOOLS


@dataclass(frozen=True)
class ToolCallInvalid:
    """A tool call that cannot run; ``error`` is the structured error to send back."""

    call_id: str
    name: str | None
    error: dict[str, str]
    channel: ClassVar[Channel] = Channel.TOOLS


@dataclass(frozen=True)
class ServerHello:
    fields: dict[str, Any]
    channel: ClassVar[Channel] = Channel.CONTROL


@dataclass(frozen=True)
class TurnEnded:
    fields: dict[str, Any]
    channel: ClassVar[Channel] = Channel.CONTROL


@dataclass(frozen=True)
class Interrupted:
    """The server cut the current response (barge-in): queued audio must be flushed.

    ``item_id`` None means the item playing now. ``reason`` says what the server saw
    (``interrupted``, ``speech_started``...)."""

    item_id: ItemId | None
    reason: str = "interrupted"
    channel: ClassVar[Channel] = Channel.CONTROL


@dataclass(frozen=True)
class ServerError:
    code: str
    message: str
    channel: ClassVar[Channel] = Channel.CONTROL


@dataclass(frozen=True)
class StreamDone:
    """The server finished its scenario; it will close the socket after this."""

    fields: dict[str, Any]
    channel: ClassVar[Channel] = Channel.CONTROL


@dataclass(frozen=True)
class SessionResumed:
    """pyclient.v1: a new socket carries the session on (``resumed``: ``connection_id``,
    ``replayed`` frames, ``awaiting`` call ids whose results the server has not received)."""

    fields: dict[str, Any]
    channel: ClassVar[Channel] = Channel.CONTROL


@dataclass(frozen=True)
class Reconnecting:
    """The connection was lost and the client will try again in ``delay_s`` seconds
    (attempt ``attempt``); ``code``/``reason`` say how the last socket ended."""

    attempt: int
    delay_s: float
    code: int | None
    reason: str
    channel: ClassVar[Channel] = Channel.CONTROL


@dataclass(frozen=True)
class Reconnected:
    """A new socket carries the session (``connection``: its number, from 0; ``after_s``:
    time since the previous one was lost)."""

    connection: int
    after_s: float
    channel: ClassVar[Channel] = Channel.CONTROL


@dataclass(frozen=True)
class ResumeFailed:
    """The server could not resume the session (pyclient.v1: close 4410; or no resume was
    offered): the client ends in ``error`` with ``reason``."""

    reason: str
    channel: ClassVar[Channel] = Channel.CONTROL


@dataclass(frozen=True)
class ControlMessage:
    """A control frame of a type this client does not interpret (forward compatible)."""

    type: str
    fields: dict[str, Any]
    channel: ClassVar[Channel] = Channel.CONTROL


@dataclass(frozen=True)
class CreditGranted:
    grant: int
    channel: ClassVar[Channel] = Channel.CONTROL


@dataclass(frozen=True)
class ProtocolErrorEvent:
    """The peer sent something we could not decode; the stream goes on."""

    reason: str
    nbytes: int = 0
    seq: int | None = None
    kind: int | None = None
    channel: ClassVar[Channel] = Channel.CONTROL


@dataclass(frozen=True)
class ToolCallCancelled:
    """The server withdrew calls (Gemini ``toolCallCancellation``): no result is sent for them."""

    call_ids: tuple[str, ...]
    channel: ClassVar[Channel] = Channel.TOOLS


@dataclass(frozen=True)
class UserTranscript:
    """What the server heard the user say (input audio transcription)."""

    text: str
    channel: ClassVar[Channel] = Channel.CONTROL


@dataclass(frozen=True)
class SessionReady:
    """The server accepted the session set-up (OpenAI ``session.created``/``updated``, Gemini
    ``setupComplete``); ``fields`` is what it said about the session."""

    fields: dict[str, Any]
    channel: ClassVar[Channel] = Channel.CONTROL


@dataclass(frozen=True)
class ResponseDone:
    """One model response finished (OpenAI ``response.done``, Gemini ``generationComplete``)."""

    fields: dict[str, Any]
    channel: ClassVar[Channel] = Channel.CONTROL


@dataclass(frozen=True)
class UsageReport:
    """Token usage or rate limits the server reported (``kind``: usage | rate_limits)."""

    kind: str
    fields: dict[str, Any]
    channel: ClassVar[Channel] = Channel.CONTROL


@dataclass(frozen=True)
class GoAway:
    """The server will close this connection in ``time_left_ms`` (Gemini ``goAway``)."""

    time_left_ms: int | None
    channel: ClassVar[Channel] = Channel.CONTROL


@dataclass(frozen=True)
class ResumptionUpdate:
    """A handle to resume this session on a new connection (Gemini)."""

    handle: str | None
    resumable: bool
    channel: ClassVar[Channel] = Channel.CONTROL


@dataclass(frozen=True)
class Ignored:
    """A well-formed message of a type this client does not use: counted, never fatal."""

    type: str
    channel: ClassVar[Channel] = Channel.CONTROL


Event = (
    AudioChunk
    | TextDelta
    | ToolCallStarted
    | ToolCallArgumentsDelta
    | ToolCallReady
    | ToolCallInvalid
    | ServerHello
    | TurnEnded
    | Interrupted
    | ServerError
    | StreamDone
    | ControlMessage
    | CreditGranted
    | ProtocolErrorEvent
    | ToolCallCancelled
    | UserTranscript
    | SessionReady
    | ResponseDone
    | UsageReport
    | GoAway
    | ResumptionUpdate
    | Ignored
)
