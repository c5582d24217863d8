// Main-thread side of audio playback: AudioContext + worklet node + the ring producer.
//
// Python (pyclient/browser/audio.py) calls write() once per received audio frame with a
// Uint8Array *view* of the PCM16 payload inside the received ArrayBuffer; the copy into
// the ring happens here, in one TypedArray.set (two when it wraps). Never per sample
// across the Python/JS boundary.

import {
  CTL_WRITE, CTL_READ, CTL_EPOCH, CTL_EPOCH_ACK, CTL_PLAYED, CTL_UNDERRUNS, CTL_SILENCE,
  CTL_ITEM_END, CTL_PREBUFFER, CTL_PLAYING, CTL_QUANTA, CTL_CHECKSUM, CTL_FLUSHED, CTL_SPEED,
  CTL_THROTTLED, CTL_CUT_READ, CTL_CUT_FRAME, CTL_CUT_TAIL, CTL_FLUSH_TO, CTL_FLUSH_FROM, CTL_SLOTS,
} from "./ring-layout.js";

const FLUSH_ACK_TIMEOUT_MS = 1000;

const WORKLET_URL = new URL("./player-worklet.js", import.meta.url).href;

export function sabAvailable() {
  return typeof SharedArrayBuffer !== "undefined" && globalThis.crossOriginIsolated === true;
}

function makeContext(streamRate, contextRate) {
  // Run the context at the stream's rate where the browser allows it: the browser then
  // resamples to the device. Otherwise (or with contextRate "device") the context runs at
  // the device's rate and the worklet resamples (linear interpolation, phase kept).
  if (contextRate !== "device") {
    try {
      return new AudioContext({ sampleRate: streamRate, latencyHint: "interactive" });
    } catch (e) {
      /* fall through: this browser refuses that rate */
    }
  }
  return new AudioContext({ latencyHint: "interactive" });
}

export async function createPlayer(opts) {
  const streamRate = opts.streamRate;
  const capacity = opts.capacity;
  if (capacity < 256 || (capacity & (capacity - 1)) !== 0) {
    throw new RangeError(`ring capacity must be a power of two >= 256, got ${capacity}`);
  }
  let mode = opts.mode || "auto";
  if (mode === "auto") mode = sabAvailable() ? "sab" : "postmessage";
  if (mode === "sab" && !sabAvailable()) {
    throw new Error("audio mode 'sab' needs SharedArrayBuffer and a cross-origin isolated page");
  }
  const ctx = makeContext(streamRate, opts.contextRate);
  await ctx.audioWorklet.addModule(WORKLET_URL);
  let control = null;
  let data = null;
  if (mode === "sab") {
    control = new SharedArrayBuffer(CTL_SLOTS * 4);
    data = new SharedArrayBuffer(capacity * 2);
  }
  const node = new AudioWorkletNode(ctx, "pyclient-player", {
    numberOfInputs: 0,
    numberOfOutputs: 1,
    outputChannelCount: [1],
    processorOptions: { mode, capacity, streamRate, control, data },
  });
  node.connect(ctx.destination);
  const player = new Player(ctx, node, mode, capacity, streamRate, control, data);
  player.setPrebufferMs(opts.prebufferMs ?? 100);
  // resume() may never settle where there is no audio device; do not block on it.
  ctx.resume().catch(() => {});
  return player;
}

class Player {
  constructor(ctx, node, mode, capacity, streamRate, control, data) {
    this.ctx = ctx;
    this.node = node;
    this.mode = mode;
    this.capacity = capacity;
    this.mask = capacity - 1;
    this.streamRate = streamRate;
    this.closed = false;
    if (mode === "sab") {
      this.ctl = new Int32Array(control);
      this.bytes = new Uint8Array(data);
    } else {
      // Mirror of the worklet's counters, refreshed by its reports; WRITE is ours.
      this.ctl = new Int32Array(CTL_SLOTS);
      node.port.onmessage = (e) => this.onReport(e.data);
    }
    this.written = 0;
  }

  onReport(report) {
    const w = this.ctl[CTL_WRITE];
    this.ctl.set(report);
    this.ctl[CTL_WRITE] = w; // the producer's own count is authoritative
  }

  fill() {
    return (this.ctl[CTL_WRITE] - Atomics.load(this.ctl, CTL_READ)) | 0;
  }

  free() {
    return this.capacity - this.fill();
  }

  // Copy as many samples of `u8` (PCM16LE bytes) from sample `offset` on as fit; returns
  // the number of samples written.
  write(u8, offset) {
    const total = u8.byteLength >> 1;
    const n = Math.min(this.free(), total - offset);
    if (n <= 0 || this.closed) return 0;
    const w = this.ctl[CTL_WRITE];
    if (this.mode === "sab") {
      const idx = w & this.mask;
      const first = Math.min(n, this.capacity - idx);
      this.bytes.set(u8.subarray(offset * 2, (offset + first) * 2), idx * 2);
      if (n > first) this.bytes.set(u8.subarray((offset + first) * 2, (offset + n) * 2), 0);
      Atomics.store(this.ctl, CTL_WRITE, (w + n) | 0); // publish after the samples
    } else {
      // Copy into an aligned, transferable buffer (the view may sit at an odd offset).
      const chunk = new Int16Array(n);
      new Uint8Array(chunk.buffer).set(u8.subarray(offset * 2, (offset + n) * 2));
      this.node.port.postMessage({ pcm: chunk }, [chunk.buffer]);
      this.ctl[CTL_WRITE] = (w + n) | 0;
    }
    this.written += n;
    return n;
  }

  // Resolve once at least `n` samples (capped at the capacity) are free, or on close.
  waitForSpace(n) {
    const want = Math.min(n, this.capacity);
    return new Promise((resolve) => {
      const check = () => {
        if (this.closed || this.free() >= want) return resolve(this.free());
        // Sleep about as long as playback needs to free what is missing (2..50 ms).
        const ms = ((want - this.free()) / this.streamRate) * 1000;
        setTimeout(check, Math.max(2, Math.min(50, ms)));
      };
      check();
    });
  }

  // Mark the current WRITE as the end of an item: draining to here is not an underrun.
  endItem() {
    this.setCtl(CTL_ITEM_END, this.ctl[CTL_WRITE], "itemEnd");
  }

  setPrebufferMs(ms) {
    const samples = Math.min(this.capacity, Math.max(0, Math.round((ms / 1000) * this.streamRate)));
    this.setCtl(CTL_PREBUFFER, samples, "prebuffer");
  }

  // Consume at `factor` x real time (0 < factor <= 1): a simulated slow device.
  setSpeed(factor) {
    const permille = Math.max(1, Math.min(1000, Math.round(factor * 1000)));
    this.setCtl(CTL_SPEED, permille, "speed");
  }

  setCtl(slot, value, message) {
    if (this.mode === "sab") Atomics.store(this.ctl, slot, value);
    else {
      this.ctl[slot] = value;
      this.node.port.postMessage({ [message]: value });
    }
  }

  // The producer's WRITE counter (int32): items remember where they start in it.
  writeIndex() {
    return this.ctl[CTL_WRITE];
  }

  // Barge-in: ask the consumer to drop everything queued *now* (samples written later
  // survive). The request is made before this returns; the worklet applies it at its next
  // render quantum. The promise resolves then with where playback stood (its READ counter at
  // the cut), how long the cut took, and the fade-out length.
  //
  // `keepBefore` (a WRITE value seen earlier): keep what was written before it; the worklet
  // plays up to there first, then drops the rest (the promise resolves once it did, or after
  // FLUSH_ACK_TIMEOUT_MS unacknowledged).
  // `upTo` (a WRITE value seen earlier): drop only up to it (a flush asked for while another
  // was pending goes once that one is done; what was written since must survive).
  flush(keepBefore, upTo) {
    const flushTo = upTo === undefined || upTo === null ? this.ctl[CTL_WRITE] : upTo | 0;
    const fill = this.fill();
    // At or behind READ (fill <= capacity): at once.
    const now = keepBefore === undefined || keepBefore === null;
    const from = now ? (flushTo - this.capacity - 1) | 0 : keepBefore | 0;
    const queued = Math.min(fill, Math.max(0, (flushTo - from) | 0));
    const requestedAt = performance.now();
    const epoch = (Atomics.load(this.ctl, CTL_EPOCH) + 1) | 0;
    // A kept head plays first: the worklet acknowledges once it got through it.
    const limit = FLUSH_ACK_TIMEOUT_MS + ((fill - queued) * 1000) / this.streamRate;
    if (upTo === undefined || upTo === null) this.setCtl(CTL_ITEM_END, flushTo, "itemEnd");
    if (this.mode === "sab") {
      Atomics.store(this.ctl, CTL_FLUSH_TO, flushTo);
      Atomics.store(this.ctl, CTL_FLUSH_FROM, from);
      Atomics.store(this.ctl, CTL_EPOCH, epoch); // after FLUSH_TO/FROM: the consumer reads them next
    } else {
      this.ctl[CTL_EPOCH] = epoch;
      this.node.port.postMessage({ flush: true, flushTo, flushFrom: from });
    }
    return new Promise((resolve) => {
      const check = () => {
        const acked = Atomics.load(this.ctl, CTL_EPOCH_ACK) === epoch;
        const waited = performance.now() - requestedAt;
        if (!acked && waited < limit && !this.closed) {
          // Woken by the worklet's Atomics.notify where waitAsync exists; else poll.
          if (this.mode === "sab" && typeof Atomics.waitAsync === "function") {
            const ackNow = Atomics.load(this.ctl, CTL_EPOCH_ACK); // (another flush's ack may have moved it)
            const w = Atomics.waitAsync(this.ctl, CTL_EPOCH_ACK, ackNow, limit - waited);
            if (w.async) return w.value.then(check);
            return setTimeout(check, 0);
          }
          return setTimeout(check, 1);
        }
        const cutFrame = Atomics.load(this.ctl, CTL_CUT_FRAME) >>> 0;
        resolve({
          acked,
          queued,
          flush_to: flushTo,
          cut_read: acked ? Atomics.load(this.ctl, CTL_CUT_READ) : Atomics.load(this.ctl, CTL_READ),
          tail_frames: acked ? Atomics.load(this.ctl, CTL_CUT_TAIL) : 0,
          cut_frame: cutFrame,
          latency_wall_ms: waited,
          output_latency_ms: ((this.ctx.outputLatency || 0) + (this.ctx.baseLatency || 0)) * 1000,
          wake: this.mode === "sab" && typeof Atomics.waitAsync === "function" ? "waitAsync" : "poll",
          context_state: this.ctx.state,
        });
      };
      check();
    });
  }

  stats() {
    const c = this.ctl;
    const fill = this.fill();
    return {
      mode: this.mode,
      sample_rate: this.streamRate,
      context_rate: this.ctx.sampleRate,
      context_state: this.ctx.state,
      ring_capacity: this.capacity,
      ring_fill: fill,
      buffered_ms: (fill / this.streamRate) * 1000,
      samples_written: this.written,
      samples_played: Atomics.load(c, CTL_PLAYED) >>> 0,
      samples_flushed: Atomics.load(c, CTL_FLUSHED) >>> 0,
      underruns: Atomics.load(c, CTL_UNDERRUNS),
      silence_ms: ((Atomics.load(c, CTL_SILENCE) >>> 0) / this.ctx.sampleRate) * 1000,
      playing: Atomics.load(c, CTL_PLAYING) === 1,
      quanta: Atomics.load(c, CTL_QUANTA) >>> 0,
      checksum: Atomics.load(c, CTL_CHECKSUM) >>> 0,
      epoch: Atomics.load(c, CTL_EPOCH),
      epoch_ack: Atomics.load(c, CTL_EPOCH_ACK),
      speed: (Atomics.load(c, CTL_SPEED) || 1000) / 1000,
      throttled_quanta: Atomics.load(c, CTL_THROTTLED) >>> 0,
    };
  }

  async close() {
    this.closed = true;
    try {
      this.node.disconnect();
      await this.ctx.close();
    } catch (e) {
      /* already closed */
    }
  }
}
