// Microphone capture: getUserMedia -> MediaStreamSource -> capture worklet -> onFrame(Int16Array).

const WORKLET_URL = new URL("./capture-worklet.js", import.meta.url).href;

export async function startMicrophone(onFrame, frameMs) {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  });
  // The device's own rate: Firefox cannot connect a stream to a context at another rate.
  const ctx = new AudioContext({ latencyHint: "interactive" });
  await ctx.audioWorklet.addModule(WORKLET_URL);
  const source = ctx.createMediaStreamSource(stream);
  const frameSamples = Math.round((ctx.sampleRate * frameMs) / 1000);
  const node = new AudioWorkletNode(ctx, "pyclient-capture", {
    numberOfInputs: 1,
    numberOfOutputs: 0,
    processorOptions: { frameSamples },
  });
  let stoppedResolve;
  const stopped = new Promise((ok) => { stoppedResolve = ok; });
  node.port.onmessage = (e) => {
    if (e.data instanceof Int16Array) onFrame(e.data);
    else if (e.data && e.data.stopped) stoppedResolve();
  };
  source.connect(node);
  ctx.resume().catch(() => {});
  return {
    sampleRate: ctx.sampleRate,
    frameSamples,
    // Stop capturing; resolves after the last (partial) frame was delivered.
    async stop() {
      node.port.postMessage({ stop: true });
      await Promise.race([stopped, new Promise((ok) => setTimeout(ok, 1000))]);
      stream.getTracks().forEach((t) => t.stop());
      source.disconnect();
      await ctx.close();
    },
  };
}
