// Open a session's socket while Python is still booting; pyclient adopts it.
//
//   import { openEarly } from "/pyclient/browser/js/early.js";
//   openEarly("/ws?scenario=chat", ["pyclient.v1.credit", "pyclient.v1"]);
//
// A page calls this before Pyodide loads: the handshake (hundreds of milliseconds to a far
// provider) then overlaps the boot. `Client.connect()` takes the socket whose URL,
// subprotocols and transport are the ones it would open itself, and opens its own otherwise
// (an early socket nobody takes is closed then). Nothing is read before Python takes it:
// a WebSocketStream's readable is left alone (backpressure holds), and the classic
// WebSocket's messages wait here, at most `maxBytes` (past it the early socket is given up:
// pyclient opens a new one and loses nothing).

export const DEFAULT_MAX_BYTES = 1 << 20;

export function openEarly(url, protocols = [], { transport = "auto", maxBytes = DEFAULT_MAX_BYTES } = {}) {
  const target = new URL(url, location.href);
  if (target.protocol === "http:") target.protocol = "ws:";
  if (target.protocol === "https:") target.protocol = "wss:";
  const stream = transport !== "websocket" && "WebSocketStream" in globalThis;
  const early = {
    url: target.href,
    protocols: [...protocols],
    transport: stream ? "websocketstream" : "websocket",
    messages: [],
    bytes: 0,
    overflowed: false,
    openedAt: performance.now(),
  };
  if (stream) {
    early.wss = new WebSocketStream(early.url, { protocols: early.protocols });
    // Failed or closed before Python came: not adopted (the client opens a fresh socket).
    early.wss.opened.catch(() => { early.ended = true; });
    early.wss.closed.then(() => { early.ended = true; }, () => { early.ended = true; });
  } else {
    const ws = (early.ws = new WebSocket(early.url, early.protocols));
    ws.binaryType = "arraybuffer";
    ws.onmessage = (event) => {
      const n = typeof event.data === "string" ? event.data.length : event.data.byteLength;
      if (early.bytes + n > maxBytes) {
        early.overflowed = true;
        ws.onmessage = null;
        ws.close(1000, "not adopted in time");
        return;
      }
      early.messages.push(event.data);
      early.bytes += n;
    };
  }
  (globalThis.pyclientEarly ||= []).push(early);
  return early;
}

// Python's side: the early socket matching what it would open (removed from the list), or
// undefined (None in Python).
// Every other early socket is closed: nobody else will take it.
export function takeEarly(url, protocols, transport) {
  const pool = globalThis.pyclientEarly || [];
  globalThis.pyclientEarly = [];
  let found;
  for (const early of pool) {
    const same = early.url === url && early.transport === transport &&
      early.protocols.length === protocols.length && early.protocols.every((p, i) => p === protocols[i]);
    const usable = early.ws ? early.ws.readyState <= 1 && !early.overflowed : !early.ended;
    if (same && usable && !found) found = early;
    else if (early.ws) early.ws.close(1000, "not adopted");
    else early.wss.close({ closeCode: 1000, reason: "not adopted" });
  }
  return found;
}
