"""Wire-protocol codecs, one module per protocol (sans-I/O, see ``base.py``).

=================  ==========================================  =============================
name               module                                      server
=================  ==========================================  =============================
``pyclient``       ``pyclient.py``  (docs/PROTOCOL.md)          our dev server, pyclient.v1
``openai-realtime`` ``openai_realtime.py``                      OpenAI Realtime (GA)
``gemini-live``    ``gemini_live.py``                           Gemini Live API
``pipecat``        ``pipecat.py`` (+ ``protowire.py``)          a Pipecat bot (protobuf + RTVI)
=================  ==========================================  =============================
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import UsageError
from .base import Capabilities, Codec, Message, SessionConfig, ToolSpec

_CODECS = {
    "pyclient": ("pyclient.protocols.pyclient", "PyclientCodec"),
    "openai-realtime": ("pyclient.protocols.openai_realtime", "OpenAIRealtimeCodec"),
    "gemini-live": ("pyclient.protocols.gemini_live", "GeminiLiveCodec"),
    "pipecat": ("pyclient.protocols.pipecat", "PipecatCodec"),
}
PROTOCOLS = tuple(_CODECS)


def codec_class(name: str) -> type[Codec]:
    if name not in _CODECS:
        raise UsageError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {name!r}")
    module, cls = _CODECS[name]
    return getattr(importlib.import_module(module), cls)


def get_codec(name: str, **options: Any) -> Codec:
    """A new codec for the wire protocol ``name`` (one per connection)."""
    return codec_class(name)(**options)


__all__ = ["PROTOCOLS", "Capabilities", "Codec", "Message", "SessionConfig", "ToolSpec", "codec_class", "get_codec"]
