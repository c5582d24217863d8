// AudioWorklet processor "pyclient-capture": microphone -> PCM16 frames at the rate the
// server needs.
//
// Converts the first input channel to PCM16 (clamped) and posts one Int16Array of
// `frameSamples` samples (20 ms at the target rate) per frame to the main thread, with its
// buffer transferred. That allocates one small array per 20 ms on the capture side, which is
// acceptable there; the playback worklet allocates nothing.
//
// Resampling (when `targetRate` differs from the context's `sampleRate`, e.g. 48 kHz ->
// 24 kHz for OpenAI or 16 kHz for Gemini): a moving average over one output period first
// (a cheap low-pass against aliasing when decimating), then linear interpolation with the
// phase kept across render quanta, so the output is continuous and its length is exactly
// duration x targetRate (to within one sample).

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions;
    this.frameSamples = o.frameSamples;
    this.targetRate = o.targetRate || sampleRate;
    this.step = sampleRate / this.targetRate; // input samples per output sample
    this.frame = new Int16Array(this.frameSamples);
    this.fill = 0;
    this.stopped = false;
    // Resampler state: `t` indexes the virtual stream [prev, block...] (prev at 0).
    this.t = 1;
    this.prev = 0;
    // Moving-average low-pass over `width` input samples (1 = off), as a ring.
    this.width = this.step > 1 ? Math.max(1, Math.round(this.step)) : 1;
    this.hist = new Float32Array(this.width);
    this.histPos = 0;
    this.histSum = 0;
    this.filtered = new Float32Array(128);
    this.port.onmessage = (e) => {
      if (e.data && e.data.stop) {
        // Flush the partial frame (never lose captured audio), then tell we are done.
        if (this.fill > 0) this.port.postMessage(this.frame.slice(0, this.fill), []);
        this.fill = 0;
        this.stopped = true;
        this.port.postMessage({ stopped: true });
      }
    };
  }

  push(v) {
    const c = Math.max(-1, Math.min(1, v));
    this.frame[this.fill++] = c < 0 ? c * 32768 : c * 32767;
    if (this.fill === this.frameSamples) {
      const full = this.frame;
      this.port.postMessage(full, [full.buffer]);
      this.frame = new Int16Array(this.frameSamples);
      this.fill = 0;
    }
  }

  process(inputs) {
    if (this.stopped) return false;
    const input = inputs[0];
    if (!input || input.length === 0) return true; // no data yet (device starting)
    const ch = input[0];
    const n = ch.length;
    if (this.step === 1) {
      for (let i = 0; i < n; i++) this.push(ch[i]);
      return true;
    }
    if (this.filtered.length < n) this.filtered = new Float32Array(n);
    const x = this.filtered;
    if (this.width > 1) {
      for (let i = 0; i < n; i++) {
        this.histSum += ch[i] - this.hist[this.histPos];
        this.hist[this.histPos] = ch[i];
        this.histPos = (this.histPos + 1) % this.width;
        x[i] = this.histSum / this.width;
      }
    } else {
      x.set(ch.subarray(0, n));
    }
    let t = this.t;
    while (t < n) {
      // Between virtual samples i and i+1: virtual 0 is the last sample of the previous block.
      const i = Math.floor(t);
      const f = t - i;
      const a = i === 0 ? this.prev : x[i - 1];
      const b = x[i];
      this.push(a + (b - a) * f);
      t += this.step;
    }
    this.t = t - n;
    this.prev = x[n - 1];
    return true;
  }
}

registerProcessor("pyclient-capture", CaptureProcessor);
