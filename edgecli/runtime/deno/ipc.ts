// The wire protocol between the host and a worker (edgecli/ipc.py is its Python side), for Deno workers.
//
// Every frame is a 10-byte header — kind (u8), flags (u8), channel (u32), payload length (u32), all
// big-endian — then the payload: raw bytes for bodies, UTF-8 JSON for control messages.
// docs/architecture.md lists the frames and what each side does with them.

export const Kind = {
  // host -> worker
  REQUEST: 1,
  BODY: 2,
  DISCONNECT: 3,
  NOTICE: 4,
  STOP: 5,
  WS_RECEIVE: 6, // a WebSocket message from the client (flag TEXT)
  CREDIT: 7, // both ways: u32, body bytes of the channel its reader consumed (flow control)
  // worker -> host
  READY: 10,
  BOOT_ERROR: 11,
  START: 12,
  RESPONSE: 13,
  FAILED: 14,
  EVENT: 15,
  RETIRE: 16,
  BYE: 17,
  WS_ACCEPT: 18, // {"subprotocol", "headers"}: the function accepted the WebSocket
  WS_SEND: 19, // a WebSocket message from the function (flag TEXT)
  WS_CLOSE: 20, // {"code", "reason"}: the function closed the socket
} as const;

export const MORE = 0x01; // flags bit: more body follows
export const TEXT = 0x02; // flags bit: a WebSocket message is text (UTF-8), not bytes
export const WINDOW = 1 << 19; // unconsumed body or message bytes a sender may have out per channel (ipc.py)
export const PIECE = 1 << 16; // larger body chunks travel cut into pieces of this size
export const HEADER = 10;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

export interface Frame {
  kind: number;
  flags: number;
  channel: number;
  payload: Uint8Array;
}

export function pack(kind: number, channel = 0, payload: Uint8Array = new Uint8Array(), flags = 0): Uint8Array {
  const frame = new Uint8Array(HEADER + payload.length);
  const view = new DataView(frame.buffer);
  view.setUint8(0, kind);
  view.setUint8(1, flags);
  view.setUint32(2, channel);
  view.setUint32(6, payload.length);
  frame.set(payload, HEADER);
  return frame;
}

export function packCount(kind: number, channel: number, count: number): Uint8Array {
  const payload = new Uint8Array(4);
  new DataView(payload.buffer).setUint32(0, count);
  return pack(kind, channel, payload);
}

export function packJson(kind: number, channel: number, value: unknown): Uint8Array {
  return pack(kind, channel, encoder.encode(JSON.stringify(value)));
}

export function parseJson<T>(payload: Uint8Array): T {
  return JSON.parse(decoder.decode(payload)) as T;
}

/**
 * A sender's side of one channel's flow control (ipc.py's Credit): bytes sent that the host has not yet
 * passed on. A sender with `full` true awaits `wait()`, which settles when CREDIT frames bring the count
 * under the window or the channel closes (the host then drops what it is sent).
 */
export class Credit {
  out = 0;
  closed = false;
  private wake: (() => void) | null = null;

  get full(): boolean {
    return this.out >= WINDOW && !this.closed;
  }

  sent(count: number) {
    this.out += count;
  }

  consumed(count: number) {
    this.out -= count;
    if (this.out < WINDOW) this.settle();
  }

  close() {
    this.closed = true;
    this.settle();
  }

  async wait(): Promise<void> {
    while (this.full) await new Promise<void>((resolve) => (this.wake = resolve));
  }

  private settle() {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }
}

/** Turns a byte stream into frames; feed it whatever a read returned. Payloads are copies, not views of
 * the read: the socket is read into the same buffer again while a body chunk may wait in its request's
 * stream. */
export class FrameParser {
  private buf = new Uint8Array(0);

  feed(data: Uint8Array): Frame[] {
    // Most reads hold whole frames: then they are read where they are. A frame cut by a read is joined.
    let joined = data;
    if (this.buf.length) {
      joined = new Uint8Array(this.buf.length + data.length);
      joined.set(this.buf);
      joined.set(data, this.buf.length);
    }
    const view = new DataView(joined.buffer, joined.byteOffset, joined.byteLength);
    const frames: Frame[] = [];
    let pos = 0;
    while (joined.length - pos >= HEADER) {
      const length = view.getUint32(pos + 6);
      if (joined.length - pos - HEADER < length) break;
      frames.push({
        kind: view.getUint8(pos),
        flags: view.getUint8(pos + 1),
        channel: view.getUint32(pos + 2),
        payload: joined.slice(pos + HEADER, pos + HEADER + length),
      });
      pos += HEADER + length;
    }
    this.buf = joined.slice(pos);
    return frames;
  }
}

/**
 * The worker's side of the socket, written with Deno.stdout.write rather than a WritableStream (whose
 * machinery cost more per frame than the rest of a small response). Frames written while a write is
 * in flight leave together in the next one; the promise settles when what was written is out.
 */
export class Output {
  private queue: Uint8Array[] = [];
  private flushing: Promise<void> | null = null;

  constructor(private onGone: () => void) {}

  write(frame: Uint8Array): Promise<void> {
    this.queue.push(frame);
    this.flushing ??= this.flush();
    return this.flushing;
  }

  private async flush() {
    try {
      while (this.queue.length) {
        const data = joined(this.queue.splice(0));
        for (let at = 0; at < data.length;) at += await Deno.stdout.write(data.subarray(at));
      }
    } catch {
      this.onGone();
    } finally {
      this.flushing = null;
    }
  }
}

/** Reads the socket (stdin) until the host closes it, handing each frame to `onFrame`. */
export async function readFrames(onFrame: (frame: Frame) => void) {
  const parser = new FrameParser();
  const buffer = new Uint8Array(1 << 18);
  for (;;) {
    const count = await Deno.stdin.read(buffer);
    if (count === null) return;
    for (const frame of parser.feed(buffer.subarray(0, count))) onFrame(frame);
  }
}

export function joined(frames: Uint8Array[]): Uint8Array {
  if (frames.length === 1) return frames[0];
  const all = new Uint8Array(frames.reduce((sum, frame) => sum + frame.length, 0));
  let at = 0;
  for (const frame of frames) {
    all.set(frame, at);
    at += frame.length;
  }
  return all;
}
