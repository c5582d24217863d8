"""The browser shell: the only part of pyclient that imports ``js`` / ``pyodide``.

transport.py  WebSocketStream and classic-WebSocket transports behind one interface
client.py     Client: batches of received messages taken synchronously, routing to sinks, stats
audio.py      AudioSink: AudioContext + worklet + ring writer (js/audio-player.js)
render.py     TokenRenderer (rAF-batched text nodes) and ToolCards
jsutil.py     proxy ownership, batches from JS (BatchSource), small JS helpers
mic.py        MicUplink: microphone capture worklet to the codec's audio messages
approval.py   ApprovalDialog: the page's dialog for tool calls a person approves
js/           the JavaScript: AudioWorklet processors and the ring, batch.js (the receive
              side's batching stage), early.js (a socket opened while Python boots), boot.js
"""

from .client import Client
from .transport import choose_transport, websocketstream_available

__all__ = ["Client", "choose_transport", "websocketstream_available"]
