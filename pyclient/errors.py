"""The one exception tree of pyclient.

    PyclientError                   base of everything we raise
    ├── ProtocolError               the *peer* broke the wire protocol (bad frame, bad JSON...)
    │   ├── FrameTooLarge           a frame header announced more than the configured maximum
    │   └── TruncatedFrame          a message ended in the middle of a frame
    ├── UsageError                  *our caller* misused the API (like h11's LocalProtocolError)
    │   └── EncodeError             a frame we were asked to send cannot be encoded (says why)
    ├── TransportError              the browser transport failed (socket error, unsupported API)
    │   └── TransportUnsupported    the requested transport does not exist in this browser
    └── ToolError                   a tool call could not be executed (carries a structured payload)

Peer errors never escape the receive path as exceptions: the demux turns them into
``ProtocolErrorEvent`` events and the stream goes on.  They exist as exceptions so that the
sans-I/O decoder can describe them precisely (with the numbers) and so that callers who
*want* strictness can raise them.
"""

from __future__ import annotations


class PyclientError(Exception):
    """Base class of every exception pyclient raises."""


class ProtocolError(PyclientError):
    """The peer sent something that violates docs/PROTOCOL.md."""


class FrameTooLarge(ProtocolError):
    """A frame header announced a payload larger than the configured limit."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame payload of {length} bytes, expected no more than {limit}")
        self.length = length
        self.limit = limit


class TruncatedFrame(ProtocolError):
    """A WebSocket message ended before the frame it contained was complete."""

    def __init__(self, have: int, need: int) -> None:
        super().__init__(f"message ended after {have} bytes of a {need}-byte frame")
        self.have = have
        self.need = need


class UsageError(PyclientError):
    """The calling code used pyclient wrongly (bad argument, wrong state)."""


class EncodeError(UsageError):
    """A frame we were asked to send cannot be encoded; the message says why, with the numbers.

    Raised before a sequence number is used (``frames.Sequencer``), for what the peer could not
    decode: lone surrogates, NaN or infinities, non-JSON types, nesting too deep, out-of-range
    header fields.
    """


class TransportError(PyclientError):
    """The browser transport failed."""


class TransportUnsupported(TransportError):
    """The requested transport is not available in this browser."""


class ToolError(PyclientError):
    """A tool call failed; ``payload`` is the structured error sent to the server."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message

    @property
    def payload(self) -> dict[str, str]:
        return {"type": self.kind, "message": self.message}
