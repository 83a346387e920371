// WebSockets in a Deno worker: `Deno.upgradeWebSocket(req)` over the wire protocol's WebSocket frames,
// as edgecli/runtime/worker.py does for ASGI apps. The host has already done the HTTP handshake with the
// client (and the JWT check); the worker only says whether the function accepted the socket:
//
//   REQUEST (type "websocket") → the handler returns the upgrade's response → WS_ACCEPT
//   WS_RECEIVE (flag TEXT) → a "message" event;  socket.send() → WS_SEND
//   socket.close(code, reason) → WS_CLOSE;  DISCONNECT with the client's close code → a "close" event
//
// Everything the TypeScript worker does for WebSockets is in this file. Messages go under the channel's
// flow control: send() holds a message back while the client has a window of them unread.

import { type Credit, HEADER, Kind, pack, packJson, TEXT } from "./ipc.ts";

type Write = (frame: Uint8Array) => Promise<void>;
type Data = string | ArrayBufferLike | ArrayBufferView | Blob;
type Listener = ((this: EdgeWebSocket, ev: Event) => unknown) | null;

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const upgradable = new WeakMap<Request, { channel: number; credit: Credit; url: string }>(); // requests of websocket scopes
const upgrades = new WeakMap<Response, EdgeWebSocket>(); // upgrade responses not yet returned

/** The worker calls this for every request of a websocket scope, so that upgradeWebSocket knows it. */
export function allowUpgrade(request: Request, channel: number, credit: Credit, url: string) {
  upgradable.set(request, { channel, credit, url });
}

/** The socket behind a response the handler returned, if it is an upgrade's (and forgets it). */
export function takeUpgrade(response: Response): EdgeWebSocket | null {
  const socket = upgrades.get(response) ?? null;
  upgrades.delete(response);
  return socket;
}

export function makeUpgradeWebSocket(write: Write) {
  return function upgradeWebSocket(request: Request, options: { protocol?: string } = {}) {
    const target = upgradable.get(request);
    if (!target || (request.headers.get("upgrade") ?? "").toLowerCase() !== "websocket") {
      throw new TypeError("Invalid Header: 'upgrade' header must contain 'websocket'");
    }
    upgradable.delete(request); // one socket per request
    const socket = new EdgeWebSocket(target.channel, target.credit, write, options.protocol ?? "", target.url);
    // A Response cannot be made with status 101, which is what Deno's upgrade answers: only the status
    // the function sees is 101; the host does the actual handshake.
    const response = new Response(null, { status: 200 });
    Object.defineProperty(response, "status", { value: 101 });
    upgrades.set(response, socket);
    return { socket, response };
  };
}

/** The WebSocket the function holds: the browser API, its frames going to the host. */
export class EdgeWebSocket extends EventTarget {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  readonly CONNECTING = 0;
  readonly OPEN = 1;
  readonly CLOSING = 2;
  readonly CLOSED = 3;
  readyState = 0;
  binaryType: BinaryType = "arraybuffer"; // as Deno's own upgradeWebSocket, not a browser's "blob"
  bufferedAmount = 0;
  readonly extensions = "";
  onopen: Listener = null;
  onmessage: Listener = null;
  onclose: Listener = null;
  onerror: Listener = null;
  /** Settles when the socket is closed, from either side: the worker's channel ends then. */
  readonly closed: Promise<void>;
  private settle!: () => void;
  private tail: Promise<void> = Promise.resolve(); // the socket's writes, in the order they were asked

  constructor(
    private channel: number,
    private credit: Credit,
    private write: Write,
    readonly protocol: string,
    readonly url: string,
  ) {
    super();
    this.closed = new Promise((resolve) => (this.settle = resolve));
  }

  send(data: Data) {
    if (this.readyState === 0) throw new DOMException("the WebSocket is not open yet", "InvalidStateError");
    if (this.readyState !== 1) return; // closing or closed: dropped, as a browser does
    const size = typeof data === "string" ? data.length : data instanceof Blob ? data.size : data.byteLength;
    this.bufferedAmount += size;
    this.queue(async () => {
      const [bytes, flags] = await frameOf(data);
      // A message waits while the client has a window of this socket's messages unread (ipc.py).
      if (this.credit.full) await this.credit.wait();
      if (!this.credit.closed) {
        this.credit.sent(bytes.length + HEADER);
        await this.write(pack(Kind.WS_SEND, this.channel, bytes, flags));
      }
      this.bufferedAmount -= size;
    });
  }

  close(code?: number, reason = "") {
    if (code !== undefined && code !== 1000 && (code < 3000 || code > 4999)) {
      throw new DOMException(`close code ${code} is neither 1000 nor in 3000-4999`, "InvalidAccessError");
    }
    if (encoder.encode(reason).length > 123) throw new DOMException("the close reason is too long", "SyntaxError");
    this.closeWith(code ?? 1000, reason);
  }

  // -- the worker's side -------------------------------------------------------------------------------

  /** The handler returned the upgrade's response: tell the host to accept, and open. */
  accept() {
    this.write(packJson(Kind.WS_ACCEPT, this.channel, { subprotocol: this.protocol || null, headers: [] }));
    this.readyState = 1;
    this.fire(new Event("open"));
  }

  received(payload: Uint8Array, text: boolean) {
    if (this.readyState !== 1) return;
    const bytes = payload.slice(); // an ArrayBuffer of its own, not a view of the frame parser's
    const data = text ? decoder.decode(payload) : this.binaryType === "blob" ? new Blob([bytes]) : bytes.buffer;
    this.fire(new MessageEvent("message", { data }));
  }

  /** The client closed (DISCONNECT carries its close code, 1005 when it sent none). */
  clientClosed(code: number) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.fire(new CloseEvent("close", { code, reason: "", wasClean: code !== 1006 }));
    this.settle();
  }

  /** Close from this side with any code (1001 when the worker is going away), after pending sends. */
  closeWith(code: number, reason = "") {
    if (this.readyState >= 2) return;
    this.readyState = 2;
    this.queue(async () => {
      await this.write(packJson(Kind.WS_CLOSE, this.channel, { code, reason }));
      this.readyState = 3;
      this.fire(new CloseEvent("close", { code, reason, wasClean: true }));
      this.settle();
    });
  }

  private queue(step: () => Promise<void>) {
    this.tail = this.tail.then(step).catch((error) => this.fire(new ErrorEvent("error", { error })));
  }

  private fire(event: Event) {
    const handler = (this as unknown as Record<string, Listener>)[`on${event.type}`];
    if (handler) handler.call(this, event);
    this.dispatchEvent(event);
  }
}

async function frameOf(data: Data): Promise<[Uint8Array, number]> {
  if (typeof data === "string") return [encoder.encode(data), TEXT];
  if (data instanceof Blob) return [new Uint8Array(await data.arrayBuffer()), 0];
  if (ArrayBuffer.isView(data)) return [new Uint8Array(data.buffer, data.byteOffset, data.byteLength), 0];
  return [new Uint8Array(data), 0];
}
