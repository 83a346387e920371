// A response's frames, from a Deno worker to the host: START, the body as RESPONSE frames with MORE, and
// the last RESPONSE frame (ipc.ts; edgecli/runtime/channels.py does the same for Python functions).

import { type Credit, joined, Kind, MORE, pack, PIECE } from "./ipc.ts";

// Frames of a response that are ready together leave in one write: a body the handler already has
// (a string, JSON, bytes) goes with START and the end in one frame batch, which the host then reads in
// one pass. A body that streams goes out as it comes, as fast as the client takes it: at most a window
// of it is out at a time (the wire's flow control, `credit`), so a slow client holds up this body only,
// and neither the worker nor serve holds more of it than that.
const BATCH = 1 << 16;

export async function sendBody(
  write: (frame: Uint8Array) => Promise<void>,
  channel: number,
  credit: Credit,
  start: Uint8Array,
  body: ReadableStream<Uint8Array> | null,
) {
  const frames = [start];
  let size = start.length;
  const flush = async () => {
    await write(joined(frames));
    frames.length = size = 0;
  };
  if (body) {
    const reader = body.getReader();
    let next = reader.read();
    for (;;) {
      if (frames.length && (size >= BATCH || !(await settlesNow(next)))) await flush();
      const { done, value } = await next;
      if (done) break;
      for (let at = 0; at < value.length && !credit.closed; at += PIECE) {
        const piece = value.subarray(at, at + PIECE);
        frames.push(pack(Kind.RESPONSE, channel, piece, MORE));
        size += piece.length;
        credit.sent(piece.length);
        if (credit.full) {
          await flush();
          await credit.wait();
        }
      }
      if (credit.closed) { // the client left: the host drops whatever comes after
        reader.cancel().catch(() => {});
        return;
      }
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
