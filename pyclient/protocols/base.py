"""What every wire-protocol codec provides, sans-I/O (no ``js`` import, runs under CPython).

A codec translates between one server's wire protocol and pyclient's typed events
(``pyclient.events``) and outbound intents. It never does I/O: messages in (``decode``), events
out; intents in (``tool_result``, ``audio``, ``cut``...), messages out. The connection core
(``pyclient.connection.Connection``) owns the codec, and the browser shell only moves
messages between the socket and the core, and events between the core and the sinks.

A message is what one WebSocket message carries: ``str`` for a text message, ``bytes`` (or a
``ByteSource`` over a received JS ArrayBuffer, to avoid a copy) for a binary one. Transports
pass both kinds through untouched.

Rules every codec keeps:

* ``decode`` never raises because of what the peer sent. Bad JSON, a message of an unexpected
  shape and an unknown event type become counted events (``ProtocolErrorEvent`` /
  ``Ignored``), and the stream goes on.
* Audio leaves ``decode`` as ``AudioChunk`` with PCM16 little-endian mono samples in one block
  (a zero-copy view where the wire is binary, one C-level base64 decode where it is JSON);
  never per-sample Python work.
* ``droppable`` says which received messages may be dropped when a classic WebSocket's bounded
  receive queue overflows: audio only, never text, tool calls or control.
* Every encoder returns a list of messages (possibly empty: an intent the protocol has no use
  for, such as playback positions on Gemini, sends nothing).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..events import Event, TurnEnded
from ..frames import ByteSource
from ..playback import PlaybackPosition
from ..tools import ToolOutcome

Message = str | bytes
Incoming = str | bytes | ByteSource


@dataclass(frozen=True)
class Capabilities:
    """What a wire protocol can do; the connection core adapts to it."""

    credit: bool = False  # receive-side credit flow control (pyclient.v1.credit)
    sequence_numbers: bool = False  # frames are numbered: gaps are detected
    streamed_tool_arguments: bool = False  # argument fragments arrive before the call is whole
    truncate: bool = False  # the server can be told how much of an item was heard
    resume: bool = False  # a session can continue on a new connection
    end_marker: bool = False  # the server says it is done before a clean close


@dataclass(frozen=True)
class ToolSpec:
    """A registered tool as a server sees it: name, description, JSON Schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class SessionConfig:
    """What the page asks of a session: the server's set-up message is built from it."""

    tools: tuple[ToolSpec, ...] = ()
    model: str | None = None
    instructions: str | None = None
    voice: str | None = None
    client: dict[str, Any] = field(default_factory=dict)  # transport, audio mode... (pyclient.v1 hello)


class Codec(ABC):
    """One wire protocol. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    input_audio_rate: ClassVar[int | None] = None  # the microphone rate the server needs (None: any)

    # -------------------------------------------------------------- connecting

    def url(self, url: str, *, token: str | None = None, model: str | None = None) -> str:
        """The URL to open for ``url`` (query parameters a protocol needs are added here)."""
        return url

    @abstractmethod
    def subprotocols(self, *, token: str | None = None, credit: bool = False) -> list[str]:
        """The WebSocket subprotocols to offer, best first."""

    def start(self, config: SessionConfig, subprotocol: str) -> list[Message]:
        """The first messages once the socket is open (hello, session.update, setup)."""
        return []

    @property
    def ready(self) -> bool:
        """Whether messages other than ``start``'s may be sent yet (Gemini: after setupComplete)."""
        return True

    # -------------------------------------------------------------- receiving

    @abstractmethod
    def decode(self, message: Incoming) -> list[Event]:
        """Events of one received message. Never raises on peer input."""

    def droppable(self, message: Incoming) -> bool:
        """Whether this received message is audio that an overflowing queue may drop."""
        return False

    def audio_samples(self, message: Incoming) -> int:
        """Samples in a droppable audio message (asked only when one is dropped: counted)."""
        return 0

    def classify(self, message: Incoming) -> tuple[bool, int | None]:
        """``(droppable, sequence number)`` of a received message, for the classic transport's
        bounded queue (a dropped numbered frame is not a sequence gap)."""
        return self.droppable(message), None

    def take_outgoing(self) -> list[Message]:
        """Messages the protocol decided to send while decoding (OpenAI: the ``response.create``
        that was waiting for ``response.done``); the connection core drains this after each
        ``decode``."""
        return []

    def finish(self) -> list[Event]:
        """At the end of the stream: events still held back (text cut inside a character)."""
        return []

    # After a loss: True if the session goes on exactly where the client stopped reading
    # (pyclient.v1 replays); False if it goes on from the last turn boundary (Gemini).
    resumes_exactly: ClassVar[bool] = False
    # Seconds after which the client moves the session to a new connection on its own, at a
    # turn boundary (OpenAI ends sessions at 60 minutes); None: the server says when (goAway).
    session_renew_s: ClassVar[float | None] = None
    # The close reason when the client leaves a connection to go on on a new one.
    switch_reason: ClassVar[str] = "goAway: resuming on a new connection"

    has_heartbeat: ClassVar[bool] = False  # ping() makes a message the server answers

    def ping(self, ping_id: int) -> list[Message]:
        """A heartbeat the server answers (pyclient.v1's ``ping``); [] where the protocol has none."""
        return []

    def ended_by_limit(self, code: int | None, reason: str) -> bool:
        """Whether a server's close says the session (or connection) reached its time limit:
        worth a new connection at once even when the message announcing it was not read."""
        return False

    def is_resume_point(self, event: Event) -> bool:
        """Whether a session resumed after a loss would go on from right after ``event`` (the
        client marks the transcript there: a later loss takes back what followed)."""
        return isinstance(event, TurnEnded)

    def resume_url(self, url: str) -> str | None:
        """After a lost socket: the URL that continues this session on a new one, or None when
        the session cannot continue (the protocol or the server offers no resume)."""
        return None

    @property
    def at_turn_boundary(self) -> bool:
        """No model turn is in progress (switching connections now loses nothing)."""
        return True

    def link_lost(self) -> None:
        """The connection carrying the session was lost (a new one will follow): forget what
        belonged to it alone."""
        return None

    # -------------------------------------------------------------- sending

    @abstractmethod
    def tool_result(self, outcome: ToolOutcome) -> list[Message]:
        """The answer to one tool call."""

    @abstractmethod
    def audio(self, pcm: bytes, sample_rate: int, item_id: int) -> list[Message]:
        """One block of microphone PCM16 LE mono at ``sample_rate``."""

    def audio_end(self, item_id: int, samples: int, sample_rate: int) -> list[Message]:
        """The microphone stopped."""
        return []

    def cut(self, positions: list[PlaybackPosition]) -> list[Message]:
        """After a barge-in: where playback of each cut item stood (in samples rendered)."""
        return []

    def text(self, text: str) -> list[Message]:
        """Typed user text."""
        return []

    def credit(self, grant: int) -> list[Message]:
        """Receive-side credit (only where ``capabilities.credit``)."""
        return []

    def stats(self) -> dict[str, Any]:
        """Protocol-specific counters for ``Client.stats()["wire"]``."""
        return {}
