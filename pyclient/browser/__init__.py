"""The browser shell: the only part of pyclient that imports ``js`` / ``pyodide``.

transport.py  WebSocketStream and classic-WebSocket transports behind one interface
client.py     Client: demux TransformStream, routing to sinks, stats
audio.py      AudioSink: AudioContext + worklet + ring writer (js/audio-player.js)
render.py     TokenRenderer (rAF-batched text nodes) and ToolCards
jsutil.py     proxy ownership and small JS helpers
js/           the real-time JavaScript: AudioWorklet processor and the ring
"""

from .client import Client
from .transport import choose_transport, websocketstream_available

__all__ = ["Client", "choose_transport", "websocketstream_available"]
