// AudioWorklet processor "pyclient-player": the consumer side of the audio ring.
//
// Real-time rules kept here: no allocation in process() in SAB mode, no locks, O(128)
// work per render quantum. PCM16 -> float conversion happens here, once per sample.
//
// Two modes share one consumer code path:
//   "sab"          the ring lives in SharedArrayBuffers written by the main thread
//                  (see ring-layout.js for the layout and the memory-ordering rules);
//   "postmessage"  (no SharedArrayBuffer, e.g. WebKit) the main thread posts PCM chunks;
//                  onmessage copies them into a worklet-local ring of the same layout,
//                  and every few quanta the worklet posts its counters back so the
//                  main thread can account fill and backpressure exactly as in SAB mode.
//
// Jitter handling: playback (re)starts only when PREBUFFER samples are queued or the
// current item's last sample is already in the ring. Running dry before an item's end
// is an underrun: counted, short fade-out, then re-prebuffer. Starts fade in.

import {
  CTL_WRITE, CTL_READ, CTL_EPOCH, CTL_EPOCH_ACK, CTL_PLAYED, CTL_UNDERRUNS, CTL_SILENCE,
  CTL_ITEM_END, CTL_PREBUFFER, CTL_PLAYING, CTL_QUANTA, CTL_CHECKSUM, CTL_FLUSHED, CTL_SPEED,
  CTL_THROTTLED, CTL_CUT_READ, CTL_CUT_FRAME, CTL_CUT_TAIL, CTL_FLUSH_TO, CTL_FLUSH_FROM, CTL_SLOTS,
  checksumStep,
} from "./ring-layout.js";

const REPORT_EVERY_QUANTA = 4; // postMessage mode: counters back to the main thread

class PlayerProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions;
    this.mode = o.mode;
    this.capacity = o.capacity;
    this.mask = o.capacity - 1;
    // Stream samples consumed per output frame (1 when the context runs at the stream rate).
    this.ratio = o.streamRate / sampleRate;
    // Fades: 2 ms, and never longer than 96 frames, so that a cut is silent within the
    // render quantum (128 frames) in which the worklet sees it.
    this.fadeLen = Math.min(96, Math.max(16, Math.round(sampleRate * 0.002)));
    if (this.mode === "sab") {
      this.ctl = new Int32Array(o.control);
      this.data = new Int16Array(o.data);
    } else {
      this.ctl = new Int32Array(CTL_SLOTS);
      this.data = new Int16Array(o.capacity);
      this.report = new Int32Array(CTL_SLOTS);
      this.port.onmessage = (e) => this.onMessage(e.data);
    }
    this.epochSeen = Atomics.load(this.ctl, CTL_EPOCH);
    this.playing = false;
    this.fadeIn = 0;     // output frames of fade-in left
    this.tail = 0;       // output frames of fade-out tail left
    this.last = 0;       // last output value (for click-free tails)
    this.a = 0;          // resampler: sample at the left of the phase
    this.b = 0;          // resampler: sample at the right of the phase
    this.frac = 0;       // resampler: phase in [0, 1)
    this.primed = false; // resampler: a/b hold real samples
    this.speedAcc = 0;   // throttling: permille accumulated towards the next rendered quantum
  }

  // postMessage mode only: the main thread is the producer, this handler writes the ring.
  onMessage(msg) {
    const ctl = this.ctl;
    if (msg.pcm) {
      const pcm = msg.pcm; // Int16Array, transferred
      let w = ctl[CTL_WRITE];
      for (let i = 0; i < pcm.length; i++) this.data[(w + i) & this.mask] = pcm[i];
      ctl[CTL_WRITE] = (w + pcm.length) | 0;
    }
    if (msg.itemEnd !== undefined) ctl[CTL_ITEM_END] = msg.itemEnd;
    if (msg.prebuffer !== undefined) ctl[CTL_PREBUFFER] = msg.prebuffer;
    if (msg.speed !== undefined) ctl[CTL_SPEED] = msg.speed;
    if (msg.flush) {
      ctl[CTL_FLUSH_TO] = msg.flushTo;
      ctl[CTL_FLUSH_FROM] = msg.flushFrom;
      ctl[CTL_EPOCH] = (ctl[CTL_EPOCH] + 1) | 0;
    }
  }

  // Take one stream sample from the ring; returns false when it is empty.
  take(state) {
    if (state.avail <= 0) return false;
    const s = this.data[state.r & this.mask];
    state.r = (state.r + 1) | 0;
    state.avail--;
    state.played++;
    state.sum = checksumStep(state.sum, s);
    state.s = s;
    return true;
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    const ctl = this.ctl;
    const n = out.length;
    Atomics.add(ctl, CTL_QUANTA, 1);

    // 1. Flush (barge-in): jump READ forward to FLUSH_TO (WRITE at the request); when
    // FLUSH_FROM is ahead of READ, play up to it first (`keep` caps this quantum's reading).
    const epoch = Atomics.load(ctl, CTL_EPOCH);
    let keep = -1;
    if (epoch !== this.epochSeen) {
      const target = Atomics.load(ctl, CTL_FLUSH_TO);
      const r0 = Atomics.load(ctl, CTL_READ);
      const ahead = (Atomics.load(ctl, CTL_FLUSH_FROM) - r0) | 0;
      if (ahead > 0 && ((target - r0) | 0) >= ahead) keep = ahead;
    }
    if (epoch !== this.epochSeen && keep < 0) {
      const target = Atomics.load(ctl, CTL_FLUSH_TO);
      const r0 = Atomics.load(ctl, CTL_READ);
      const drop = Math.max(0, (target - r0) | 0);
      Atomics.add(ctl, CTL_FLUSHED, drop);
      // Where playback stood: READ counts exactly the samples rendered so far.
      Atomics.store(ctl, CTL_CUT_READ, r0);
      Atomics.store(ctl, CTL_CUT_FRAME, currentFrame | 0);
      Atomics.store(ctl, CTL_CUT_TAIL, this.playing ? this.fadeLen : this.tail);
      Atomics.store(ctl, CTL_READ, (r0 + drop) | 0);
      if (this.playing) this.tail = this.fadeLen;
      this.playing = false;
      this.primed = false;
      this.epochSeen = epoch;
      Atomics.store(ctl, CTL_EPOCH_ACK, epoch); // last: the main thread may read the above now
      if (this.mode === "sab") Atomics.notify(ctl, CTL_EPOCH_ACK); // wakes Atomics.waitAsync
    }

    // Throttled (simulated slow device): render only speed/1000 of the quanta.
    const speed = Atomics.load(ctl, CTL_SPEED);
    if (speed > 0 && speed < 1000) {
      this.speedAcc += speed;
      if (this.speedAcc < 1000) {
        out.fill(0);
        for (let c = 1; c < outputs[0].length; c++) outputs[0][c].fill(0);
        Atomics.add(ctl, CTL_THROTTLED, 1);
        this.reportIfFallback(ctl);
        return true;
      }
      this.speedAcc -= 1000;
    }

    const st = this.state || (this.state = { r: 0, avail: 0, played: 0, sum: 0, s: 0 });
    st.r = Atomics.load(ctl, CTL_READ);
    st.avail = (Atomics.load(ctl, CTL_WRITE) - st.r) | 0;
    if (keep >= 0 && st.avail > keep) st.avail = keep; // a flush waits at FLUSH_FROM
    st.played = 0;
    st.sum = Atomics.load(ctl, CTL_CHECKSUM);
    const itemEnd = Atomics.load(ctl, CTL_ITEM_END);

    // 2. Prebuffer gate: start when enough is queued, or the item's end is already queued.
    if (!this.playing && st.avail > 0) {
      const endQueued = ((itemEnd - st.r) | 0) > 0 && ((itemEnd - st.r) | 0) <= st.avail;
      if (st.avail >= Atomics.load(ctl, CTL_PREBUFFER) || endQueued || keep >= 0) {
        this.playing = true;
        this.fadeIn = this.fadeLen;
      }
    }

    // 3. Render.
    let i = 0;
    if (this.playing) {
      for (; i < n; i++) {
        let v;
        if (this.ratio === 1) {
          if (!this.take(st)) break;
          v = st.s / 32768;
        } else {
          if (!this.primed) {
            if (!this.take(st)) break;
            this.a = st.s;
            this.b = st.s;
            this.frac = 0;
            this.primed = true;
          }
          v = (this.a + (this.b - this.a) * this.frac) / 32768;
          this.frac += this.ratio;
          let dry = false;
          while (this.frac >= 1) {
            this.frac -= 1;
            this.a = this.b;
            if (!this.take(st)) { dry = true; break; }
            this.b = st.s;
          }
          if (dry) { out[i++] = v; this.last = v; this.primed = false; break; }
        }
        if (this.fadeIn > 0) {
          v *= 1 - this.fadeIn / this.fadeLen;
          this.fadeIn--;
        }
        out[i] = v;
        this.last = v;
      }
      if (i < n) {
        // Ran dry. At the end of an item that is normal; anywhere else it is an underrun.
        if (st.r !== itemEnd && keep < 0) Atomics.add(ctl, CTL_UNDERRUNS, 1);
        this.playing = false;
        this.primed = false;
        this.tail = this.fadeLen;
      }
    }

    // 4. Silence (with a short fade-out tail from the last value, so there is no click).
    const silent = n - i;
    for (; i < n; i++) {
      if (this.tail > 0) {
        out[i] = this.last * (this.tail / this.fadeLen);
        this.tail--;
      } else {
        out[i] = 0;
      }
    }
    if (this.tail === 0) this.last = 0;
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);

    Atomics.store(ctl, CTL_READ, st.r);
    Atomics.add(ctl, CTL_PLAYED, st.played);
    Atomics.store(ctl, CTL_CHECKSUM, st.sum);
    // Silence counts only mid-item (underrun or re-prebuffer), not idle time between items.
    if (silent && st.r !== itemEnd) Atomics.add(ctl, CTL_SILENCE, silent);
    Atomics.store(ctl, CTL_PLAYING, this.playing ? 1 : 0);

    this.reportIfFallback(ctl);
    return true;
  }

  reportIfFallback(ctl) {
    if (this.mode !== "sab" && ctl[CTL_QUANTA] % REPORT_EVERY_QUANTA === 0) {
      // Fallback mode only: this allocates a structured clone, which is the price of no SAB.
      this.report.set(ctl);
      this.port.postMessage(this.report);
    }
  }
}

registerProcessor("pyclient-player", PlayerProcessor);
