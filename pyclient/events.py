"""Typed events the demux emits. Each belongs to exactly one ``Channel``.

Events are small frozen dataclasses. They never touch the DOM or audio: the browser shell
routes each one to the sink of its channel (``pyclient.browser``), or a CPython program can
consume them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar


class Channel(StrEnum):
    AUDIO = "audio"
    TEXT = "text"
    TOOLS = "tools"
    CONTROL = "control"


@dataclass(frozen=True)
class AudioChunk:
    """PCM16 little-endian mono samples; ``pcm`` is a zero-copy view when the source allows."""

    item_id: int
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
    """The server cut the current response (barge-in): queued audio must be flushed."""

    item_id: int | None
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
)
