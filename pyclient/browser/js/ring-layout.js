// Shared layout of the audio ring (imported by the main thread and by the worklet).
//
// The ring is single-producer (main thread, Python feeds whole frames through
// audio-player.js) / single-consumer (the AudioWorklet's render thread). Two
// SharedArrayBuffers:
//
//   control: Int32Array(CTL_SLOTS)   indices and counters, accessed with Atomics only
//   data:    Int16Array(capacity)    PCM16 samples; capacity is a power of two
//
// WRITE and READ are free-running sample counters that wrap at 2^32 (int32
// arithmetic with `| 0`). The fill is `(WRITE - READ) | 0`, always in
// [0, capacity]; a slot index is `counter & (capacity - 1)`. Only the producer
// stores WRITE and only the consumer stores READ, so no lock is needed: each side
// publishes its counter with Atomics.store *after* touching the samples, and reads
// the other side's counter with Atomics.load *before* touching them.
//
// The producer cannot move READ, so a flush (barge-in) is a request: it stores
// FLUSH_TO (its WRITE at that moment) and then increments EPOCH; the consumer sees
// the new epoch at the start of its next render quantum, jumps READ forward to
// FLUSH_TO and stores EPOCH_ACK. Samples written after the request (a new item)
// survive the flush. A flush may keep the head of the queue: FLUSH_FROM ahead of READ
// (a turn taken back after a lost connection keeps the finished turns before it) makes
// the consumer play up to FLUSH_FROM first and apply the flush when READ gets there;
// FLUSH_FROM at or behind READ applies it at once.

export const CTL_WRITE = 0;        // producer: samples written (free-running)
export const CTL_READ = 1;         // consumer: samples consumed (free-running)
export const CTL_EPOCH = 2;        // producer: flush requests
export const CTL_EPOCH_ACK = 3;    // consumer: last flush applied
export const CTL_PLAYED = 4;       // consumer: stream samples rendered (excludes silence)
export const CTL_UNDERRUNS = 5;    // consumer: times the ring ran dry mid-item
export const CTL_SILENCE = 6;      // consumer: output frames of inserted silence (underrun/prebuffer)
export const CTL_ITEM_END = 7;     // producer: WRITE value at the end of the last finished item
export const CTL_PREBUFFER = 8;    // producer: samples to accumulate before (re)starting
export const CTL_PLAYING = 9;      // consumer: 1 while rendering, 0 while (re)prebuffering
export const CTL_QUANTA = 10;      // consumer: render quanta processed (liveness)
export const CTL_CHECKSUM = 11;    // consumer: running checksum of rendered samples (see below)
export const CTL_FLUSHED = 12;     // consumer: samples discarded by flushes
export const CTL_SPEED = 13;       // producer: consumption speed in permille (0 or 1000 = real time);
                                   // below 1000 the consumer skips quanta: a simulated slow device
export const CTL_THROTTLED = 14;   // consumer: quanta skipped because of CTL_SPEED
export const CTL_CUT_READ = 15;    // consumer: READ at the moment it applied the last flush
export const CTL_CUT_FRAME = 16;   // consumer: currentFrame (audio clock) when it applied it
export const CTL_CUT_TAIL = 17;    // consumer: output frames of fade-out after the cut (< 128)
export const CTL_FLUSH_TO = 18;    // producer: WRITE at the flush request: drop up to here only
export const CTL_FLUSH_FROM = 19;  // producer: drop from here (samples before it play first)
export const CTL_SLOTS = 24;

// Running checksum over every sample value rendered, in order:
//   sum = (sum * 31 + (sample & 0xffff)) mod 2^32
// devserver computes the same over what it sent, so both ends can be compared.
export function checksumStep(sum, sample) {
  return (Math.imul(sum, 31) + (sample & 0xffff)) | 0;
}
