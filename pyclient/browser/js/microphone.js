// Microphone capture: getUserMedia -> MediaStreamSource -> capture worklet -> onFrame(Int16Array).

const WORKLET_URL = new URL("./capture-worklet.js", import.meta.url).href;
const STOP_FLUSH_TIMEOUT_MS = 1000;

// `targetRate`: the rate of the frames delivered (the server's); 0/undefined: the device's.
export async function startMicrophone(onFrame, frameMs, targetRate) {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  });
  const release = () => stream.getTracks().forEach((t) => t.stop());
  let ctx = null;
  try {
    // The device's own rate: Firefox cannot connect a stream to a context at another rate.
    ctx = new AudioContext({ latencyHint: "interactive" });
    await ctx.audioWorklet.addModule(WORKLET_URL);
  } catch (e) {
    // Never keep the microphone open behind a failure.
    release();
    if (ctx) ctx.close().catch(() => {});
    throw e;
  }
  const source = ctx.createMediaStreamSource(stream);
  const rate = targetRate || ctx.sampleRate;
  const frameSamples = Math.round((rate * frameMs) / 1000);
  const node = new AudioWorkletNode(ctx, "pyclient-capture", {
    numberOfInputs: 1,
    numberOfOutputs: 0,
    processorOptions: { frameSamples, targetRate: rate },
  });
  let stoppedResolve;
  const stopped = new Promise((ok) => { stoppedResolve = ok; });
  let deliver = true;
  node.port.onmessage = (e) => {
    if (e.data instanceof Int16Array) {
      if (deliver) onFrame(e.data);
    } else if (e.data && e.data.stopped) stoppedResolve();
  };
  source.connect(node);
  ctx.resume().catch(() => {});
  let ended = false;
  const track = stream.getAudioTracks()[0];
  return {
    sampleRate: rate, // of the frames delivered
    deviceRate: ctx.sampleRate,
    frameSamples,
    // "live" while capturing, "ended" once the track was released.
    trackState() {
      return track ? track.readyState : "ended";
    },
    // Stop capturing and release the device. With flush (the default) the last partial
    // frame is delivered first; without it (the connection is gone) nothing more is.
    async stop(flush = true) {
      if (ended) return;
      ended = true;
      if (flush) {
        node.port.postMessage({ stop: true });
        await Promise.race([stopped, new Promise((ok) => setTimeout(ok, STOP_FLUSH_TIMEOUT_MS))]);
      }
      deliver = false;
      node.port.onmessage = null;
      release();
      source.disconnect();
      await ctx.close().catch(() => {});
    },
  };
}
