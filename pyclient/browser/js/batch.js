// The receive side's JS stage: messages cross into Python a batch at a time, not one by one.
//
// A call from JavaScript into Python (and the asyncio task behind an async one) costs far
// more than the work a token message needs, so this stage gathers every message already
// available and hands Python one batch: `deliver(layout, data, texts)`, where
//
//   layout: Int32Array, one entry per message in order: its byte length (binary message)
//           or -1 (text message, the next string of `texts`)
//   data:   Uint8Array, the binary messages back to back (one copy into Python for all)
//   texts:  Array of the text messages' strings
//
// A batch is bounded in messages and bytes (a single larger message is a batch of its own).
// `deliver` returns nothing when Python took the batch at once, or a promise while its sinks
// are full; until it settles, the next batch gathers and then stops taking messages, so
// backpressure still reaches the source: the stream stops being read (WebSocketStream: TCP).

export const DEFAULT_MAX_MESSAGES = 256;
export const DEFAULT_MAX_BYTES = 256 * 1024;

const size = (m) => (typeof m === "string" ? m.length : m.byteLength);

export function pack(messages) {
  const layout = new Int32Array(messages.length);
  const texts = [];
  let total = 0;
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i];
    if (typeof m === "string") {
      layout[i] = -1;
      texts.push(m);
    } else {
      layout[i] = m.byteLength;
      total += m.byteLength;
    }
  }
  const data = new Uint8Array(total);
  let off = 0;
  for (const m of messages) {
    if (typeof m === "string") continue;
    data.set(ArrayBuffer.isView(m) ? new Uint8Array(m.buffer, m.byteOffset, m.byteLength) : new Uint8Array(m), off);
    off += m.byteLength;
  }
  return [layout, data, texts];
}

export class Batcher {
  constructor(deliver, maxMessages = DEFAULT_MAX_MESSAGES, maxBytes = DEFAULT_MAX_BYTES) {
    this.deliver = deliver;
    this.maxMessages = maxMessages;
    this.maxBytes = maxBytes;
    this.pending = [];
    this.pendingBytes = 0;
    this.busy = null;        // the promise of the batch Python is still taking
    this.failed = null;
    this.waiters = [];       // resolve/reject pairs of pushes held back by a full batch
    this.batches = 0;
    this.messages = 0;
    this.largestBatch = 0;
    this.scheduled = false;
    this.channel = new MessageChannel();  // a task later: every message available by then joins
    this.channel.port1.onmessage = () => { this.scheduled = false; this.handOver(); };
  }

  // Add one message; returns a promise while the batch is full (the caller must wait).
  push(message) {
    if (this.failed) throw this.failed;
    this.pending.push(message);
    this.pendingBytes += size(message);
    const full = this.pending.length >= this.maxMessages || this.pendingBytes >= this.maxBytes;
    if (full && !this.busy) this.handOver();
    else if (!this.busy && !this.scheduled) {
      this.scheduled = true;
      this.channel.port2.postMessage(0);
    }
    if (full && this.pending.length) return new Promise((resolve, reject) => this.waiters.push([resolve, reject]));
    return undefined;
  }

  handOver() {
    if (this.busy || !this.pending.length || this.failed) return;
    const batch = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    for (const [resolve] of this.waiters.splice(0)) resolve();
    this.batches++;
    this.messages += batch.length;
    this.largestBatch = Math.max(this.largestBatch, batch.length);
    let result;
    try {
      result = this.deliver(...pack(batch));
    } catch (error) {
      this.fail(error);
      return;
    }
    if (result && typeof result.then === "function") {
      this.busy = Promise.resolve(result).then(
        () => { this.busy = null; this.handOver(); },
        (error) => { this.busy = null; this.fail(error); },
      );
    }
  }

  fail(error) {
    this.failed = error;
    for (const [, reject] of this.waiters.splice(0)) reject(error);
    this.close();
  }

  // Deliver everything still pending, then resolve (the source ended or failed).
  async drain() {
    while (!this.failed && (this.pending.length || this.busy)) {
      if (this.busy) await this.busy;
      else this.handOver();
    }
    this.close();
    if (this.failed) throw this.failed;
  }

  close() {
    this.channel.port1.close();
  }

  stats() {
    return { batches: this.batches, messages: this.messages, largest_batch: this.largestBatch, pending_bytes: this.pendingBytes };
  }
}

// A WritableStream that batches what is piped into it (WebSocketStream's readable).
export function batchingSink(batcher) {
  return new WritableStream(
    {
      write: (chunk) => batcher.push(chunk),
      close: () => batcher.drain(),
      abort: () => batcher.drain(),  // received before the failure: still handled
    },
    { highWaterMark: 1 },
  );
}

// The classic WebSocket's messages, batched (it cannot be paused: `deliver` queues them);
// `backlog`: what arrived before (a socket opened early, js/early.js), first.
export function listen(ws, batcher, backlog = null) {
  if (backlog) for (const message of backlog.splice(0)) batcher.push(message);
  ws.onmessage = (event) => {
    if (!batcher.failed) batcher.push(event.data);
  };
}
