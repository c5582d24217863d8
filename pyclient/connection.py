"""The connection core: one socket's protocol rules, sans-I/O (no ``js``; runs under CPython).

Theory of operation (in the manner of h11's state table and python-websockets' ``Protocol``):
the browser shell (``pyclient.browser.Client``) moves messages between the socket and this
object, and events between this object and the sinks; every *rule* lives here or in the codec:

* which subprotocols to offer, and what to send first (``opened``);
* credit flow control (``consumed`` returns the grants to send), where the protocol has it;
* what the peer announced that matters (its ``max_payload``; ``done``; set-up complete);
* whether other messages may be sent yet (``ready``: Gemini waits for ``setupComplete``);
* how the connection ended (``verdict``): one place decides ``closed`` or ``error`` and
  words the failure.

States::

    CONNECTING ──opened()──▶ OPENING ──ready──▶ OPEN ──done──▶ DRAINING ─┐
         │                      │                 │                       │ close_requested()
         └──────────────────────┴─────────────────┴───────────────────────┴──▶ CLOSING
    any state ──socket closed──▶ verdict(): CLOSED (clean) | ERROR

OPENING lasts until the server accepted the set-up where the protocol has such a step
(``Codec.ready``), else it ends at once. DRAINING (only protocols with an end marker, i.e.
pyclient.v1's ``done``): the server has nothing more to send and the client sends what it still
owes (tool results, playback positions, the microphone's tail), then closes.

A clean end is a close with 1000/1005 that the page asked for, or, on a protocol with an end
marker, that came after the marker with nothing owed left unsent. On a protocol without one
(OpenAI, Gemini) a server's close with 1000 is clean too: those servers end sessions that way.
Anything else is an error, worded with the socket's code and reason first.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from .events import (
    AudioChunk,
    Event,
    Ignored,
    ProtocolErrorEvent,
    ServerHello,
    SessionReady,
    StreamDone,
    TextDelta,
)
from .flow import DEFAULT_CREDIT_WINDOW, CreditWindow
from .frames import DEFAULT_MAX_PAYLOAD
from .protocols.base import Codec, Incoming, Message, SessionConfig

_STREAM_EVENTS = frozenset((TextDelta, AudioChunk))  # the bulk of a stream: skipped by a set lookup
CLEAN_CLOSE_CODES = (1000, 1005)  # normal closure; no status code given
MIN_PEER_PAYLOAD = 1024  # a peer's announced max_payload below this is ignored as nonsense


class State(StrEnum):
    CONNECTING = "connecting"
    OPENING = "opening"
    OPEN = "open"
    DRAINING = "draining"
    CLOSING = "closing"
    CLOSED = "closed"
    ERROR = "error"


class Connection:
    """One connection's protocol state around a ``Codec``."""

    def __init__(self, codec: Codec, *, credit: bool = True, credit_window: int = DEFAULT_CREDIT_WINDOW) -> None:
        self.codec = codec
        self.state = State.CONNECTING
        self.offer_credit = credit and codec.capabilities.credit
        self._credit_window = credit_window
        self.credit: CreditWindow | None = None
        self.subprotocol = ""
        self.done = False  # the server said it has nothing more to send (end marker)
        self.closed_by_page = False
        # The largest tool-result payload the peer accepts (pyclient.v1: its hello says; the
        # protocol's default until then). None: the protocol states no limit.
        self.peer_max_payload: int | None = DEFAULT_MAX_PAYLOAD if codec.name == "pyclient" else None
        self.messages_in = 0
        self.bytes_in = 0
        self.malformed = 0
        self.ignored = 0
        self.ignored_types: dict[str, int] = {}
        self.outgoing: list[Message] = []  # what the protocol decided to send while receiving

    # ------------------------------------------------------------------ opening

    def subprotocols(self, token: str | None = None) -> list[str]:
        return self.codec.subprotocols(token=token, credit=self.offer_credit)

    def opened(self, subprotocol: str, config: SessionConfig) -> list[Message]:
        """The socket is open with ``subprotocol``: the first messages to send."""
        self.subprotocol = subprotocol or ""
        out: list[Message] = []
        if self.offer_credit and self.subprotocol.endswith(".credit"):
            self.credit = CreditWindow(self._credit_window)
            out += self.codec.credit(self.credit.initial())
        out += self.codec.start(config, self.subprotocol)
        self.state = State.OPEN if self.codec.ready else State.OPENING
        return out

    @property
    def ready(self) -> bool:
        """Whether intents other than the opening messages may be sent now."""
        return self.state in (State.OPEN, State.DRAINING)

    # ------------------------------------------------------------------ receiving

    def receive(self, message: Incoming, nbytes: int) -> list[Event]:
        """Events of one received message (``nbytes`` on the wire)."""
        self.messages_in += 1
        self.bytes_in += nbytes
        credit = self.credit
        if credit is not None:
            credit.received += nbytes  # CreditWindow.on_received, without the call
        events = self.codec.decode(message)
        self.outgoing += self.codec.take_outgoing()
        for event in events:
            if type(event) in _STREAM_EVENTS:
                continue  # text and audio: nothing for the connection to note
            if isinstance(event, ProtocolErrorEvent):
                self.malformed += 1
            elif isinstance(event, Ignored):
                self.ignored += 1
                if event.type in self.ignored_types or len(self.ignored_types) < 32:
                    self.ignored_types[event.type] = self.ignored_types.get(event.type, 0) + 1
            elif isinstance(event, ServerHello):
                limit = event.fields.get("max_payload")
                if isinstance(limit, int) and not isinstance(limit, bool) and limit >= MIN_PEER_PAYLOAD:
                    self.peer_max_payload = limit
            elif isinstance(event, StreamDone) and self.state in (State.OPENING, State.OPEN):
                self.done = True
                self.state = State.DRAINING
        if self.state is State.OPENING and self.codec.ready and any(isinstance(e, SessionReady) for e in events):
            self.state = State.OPEN
        return events

    def take_outgoing(self) -> list[Message]:
        """Messages the protocol decided to send while receiving; send them after ``receive``."""
        out, self.outgoing = self.outgoing, []
        return out

    def consumed(self, nbytes: int) -> list[Message]:
        """The sinks took a message of ``nbytes``: credit to grant back, if any is due."""
        if self.credit is None or self.state not in (State.OPENING, State.OPEN, State.DRAINING):
            return []
        grant = self.credit.on_consumed(nbytes)
        return self.codec.credit(grant) if grant else []

    def finish(self) -> list[Event]:
        """The stream ended: events the codec still held."""
        return self.codec.finish()

    # ------------------------------------------------------------------ closing

    def close_requested(self, by_page: bool) -> None:
        """The client is closing the socket (``by_page``: the page asked, a clean end)."""
        self.closed_by_page = self.closed_by_page or by_page
        if self.state not in (State.CLOSED, State.ERROR):
            self.state = State.CLOSING

    def verdict(self, code: int | None, reason: str, error: str | None = None, unsent: str | None = None) -> str | None:
        """The socket closed with ``code``/``reason``: None for a clean end, else the error
        message (the socket's verdict first, then what else went wrong). Sets the state."""
        said = f"code {code}{': ' + reason if reason else ''}"
        problem = None
        if code not in CLEAN_CLOSE_CODES:
            problem = f"connection closed abnormally ({said})"
        elif self.codec.capabilities.end_marker and not self.done and not self.closed_by_page:
            problem = f"connection closed before the server said 'done' ({said})"
        elif unsent is not None:
            problem = unsent
        if problem is not None:
            error = problem if error is None or (reason and reason in error) else f"{problem}; {error}"
        self.state = State.CLOSED if error is None else State.ERROR
        return error

    # ------------------------------------------------------------------ stats

    @property
    def malformed_count(self) -> int:
        """Messages or frames the peer got wrong (pyclient.v1: malformed frames, not gaps)."""
        own = self.codec.stats().get("malformed")
        return own if isinstance(own, int) else self.malformed

    def stats(self) -> dict[str, Any]:
        return {
            "protocol": self.codec.name,
            "subprotocol": self.subprotocol,
            "state": self.state.value,
            "messages_in": self.messages_in,
            "bytes_in": self.bytes_in,
            "malformed": self.malformed_count,
            "ignored": self.ignored,
            "ignored_types": dict(self.ignored_types),
            "peer_max_payload": self.peer_max_payload,
            "ready": self.ready,
            **self.codec.stats(),
        }
