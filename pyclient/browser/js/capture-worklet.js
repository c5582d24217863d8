// AudioWorklet processor "pyclient-capture": microphone -> PCM16 frames.
//
// Converts the first input channel to PCM16 (clamped) and posts one Int16Array of
// `frameSamples` samples (20 ms at the context's rate) per frame to the main thread, with
// its buffer transferred. That allocates one small array per 20 ms on the capture side,
// which is acceptable there; the playback worklet allocates nothing.

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.frameSamples = options.processorOptions.frameSamples;
    this.frame = new Int16Array(this.frameSamples);
    this.fill = 0;
    this.stopped = false;
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

  process(inputs) {
    if (this.stopped) return false;
    const input = inputs[0];
    if (!input || input.length === 0) return true; // no data yet (device starting)
    const ch = input[0];
    for (let i = 0; i < ch.length; i++) {
      const v = Math.max(-1, Math.min(1, ch[i]));
      this.frame[this.fill++] = v < 0 ? v * 32768 : v * 32767;
      if (this.fill === this.frameSamples) {
        const full = this.frame;
        this.port.postMessage(full, [full.buffer]);
        this.frame = new Int16Array(this.frameSamples);
        this.fill = 0;
      }
    }
    return true;
  }
}

registerProcessor("pyclient-capture", CaptureProcessor);
