"""pyclient: a browser-side streaming client for AI servers, in Python (Pyodide/PyScript).

The sans-I/O core (the connection core, the wire-protocol codecs in ``pyclient.protocols``,
frames, demux, flow control, tools) imports no browser modules and runs under plain CPython.
``Client`` and ``connect`` live in ``pyclient.browser`` and are imported lazily here, so
``import pyclient`` works everywhere.

In a PyScript page::

    import pyclient
    client = pyclient.Client(transcript="transcript", tool_cards="tools")

    @client.tool
    def clock() -> str:
        "The time on the user's machine."
        ...

    await client.connect("/ws?scenario=chat")
"""

from __future__ import annotations

from typing import Any

from .approval import ApprovalQueue, ApprovalRequest
from .demux import Demux
from .errors import (
    FrameTooLarge,
    ProtocolError,
    PyclientError,
    ToolError,
    TransportError,
    TransportUnsupported,
    TruncatedFrame,
    UsageError,
)
from .events import Channel, Reconnected, Reconnecting, ResumeFailed, SessionResumed
from .frames import PROTOCOL_VERSION, FrameDecoder, Kind, Sequencer
from .tools import ToolRegistry

__version__ = "0.1.0"

__all__ = [
    "PROTOCOL_VERSION",
    "ApprovalQueue",
    "ApprovalRequest",
    "Channel",
    "Client",
    "Demux",
    "FrameDecoder",
    "FrameTooLarge",
    "Kind",
    "ProtocolError",
    "PyclientError",
    "Reconnected",
    "Reconnecting",
    "ResumeFailed",
    "Sequencer",
    "SessionResumed",
    "ToolError",
    "ToolRegistry",
    "TransportError",
    "TransportUnsupported",
    "TruncatedFrame",
    "UsageError",
    "connect",
]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from .browser import Client

        return Client
    raise AttributeError(f"module 'pyclient' has no attribute {name!r}")


async def connect(url: str | None = None, *, protocols: list[str] | None = None, **options: Any) -> Any:
    """Create a ``Client`` with ``options`` and connect it to ``url`` (browser only)::

    client = await pyclient.connect("/ws?scenario=chat")
    client = await pyclient.connect(protocol="openai-realtime", token=get_token, instructions="...")
    """
    from .browser import Client

    client = Client(**options)
    return await client.connect(url, protocols)
