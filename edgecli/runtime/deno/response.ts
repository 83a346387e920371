// A response's frames, from a Deno worker to the host: START, the body as RESPONSE frames with MORE, and
// the last RESPONSE frame (ipc.ts; edgecli/runtime/worker.py does the same for Python functions).

import { joined, Kind, MORE, pack } from "./ipc.ts";

// Frames of a response that are ready together leave in one write: a body the handler already has
// (a string, JSON, bytes) goes with START and the end in one frame batch, which the host then reads in
// one pass. A body that streams goes out as it comes.
const BATCH = 1 << 16;

export async function sendBody(
  write: (frame: Uint8Array) => Promise<void>,
  channel: number,
  aborted: AbortSignal,
  start: Uint8Array,
  body: ReadableStream<Uint8Array> | null,
) {
  const frames = [start];
  let size = start.length;
  if (body) {
    const reader = body.getReader();
    let next = reader.read();
    for (;;) {
      if (frames.length && (size >= BATCH || !(await settlesNow(next)))) {
        await write(joined(frames));
        frames.length = size = 0;
      }
      const { done, value } = await next;
      if (done) break;
      if (aborted.aborted) {
        reader.cancel().catch(() => {});
        break;
      }
      frames.push(pack(Kind.RESPONSE, channel, value, MORE));
      size += frames[frames.length - 1].length;
      next = reader.read();
    }
  }
  frames.push(pack(Kind.RESPONSE, channel));
  write(joined(frames));
}

/** Whether `promise` settles within a few microtask turns: a read of a body already there does. */
async function settlesNow(promise: Promise<unknown>): Promise<boolean> {
  let settled = false;
  promise.then(() => (settled = true), () => (settled = true));
  for (let turn = 0; turn < 4 && !settled; turn++) await null;
  return settled;
}
