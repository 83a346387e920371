// A Deno worker: runs one TypeScript/JavaScript function for the host, as edgecli/runtime/worker.py does
// for Python functions. The host talks to it over the socket it gets as stdin and stdout (ipc.ts).
//
// Lifecycle: import the user's module → READY | BOOT_ERROR → serve requests → STOP(grace, reason) →
// drain → beforeunload → BYE → exit. docs/architecture.md describes the whole exchange.
//
// Inside the function it provides the Supabase runtime surface: Deno.serve(handler) and
// `export default { fetch }`, EdgeRuntime.waitUntil(promise), `beforeunload` (ev.detail.reason) and
// `unhandledrejection` listeners on globalThis, and console.* captured as log records tagged with the
// request and background task they belong to.

import { AsyncLocalStorage } from "node:async_hooks";
import {
  Credit,
  type Frame,
  Kind,
  MORE,
  Output,
  pack,
  packCount,
  packJson,
  parseJson,
  readFrames,
  TEXT,
  WINDOW,
} from "./ipc.ts";
import { sendBody } from "./response.ts";
import { allowUpgrade, type EdgeWebSocket, makeUpgradeWebSocket, takeUpgrade } from "./websocket.ts";

interface Spec {
  worker: string;
  function: string;
  entrypoint: string;
}

type Handler = (req: Request, info?: unknown) => Response | Promise<Response>;
type Tags = { request: string | null; task: string | null };

const MAX_MESSAGE = 10_000; // characters in one log record, as Supabase caps a log message
const spec: Spec = JSON.parse(Deno.args[0]);
const tags = new AsyncLocalStorage<Tags>();
const out = new Output(() => Deno.exit(0)); // the host is gone: nobody is left to report to
const channels = new Map<number, Channel>();
const tasks = new Map<string, { name: string; request: string | null; started: number }>();
let handler: Handler | null = null;
let taskIds = 0;
let unloaded = false;
let stopping = false;

// -- writing to the host ------------------------------------------------------------------------------

function write(frame: Uint8Array): Promise<void> {
  return out.write(frame);
}

function emit(kind: string, message: string, level = "info", extra: Record<string, unknown> | null = null) {
  const { request, task } = tags.getStore() ?? { request: null, task: null };
  emitFor(kind, message, level, request, task, extra);
}

function emitFor(
  kind: string,
  message: string,
  level: string,
  request: string | null,
  task: string | null,
  extra: Record<string, unknown> | null = null,
) {
  if (message.length > MAX_MESSAGE) {
    message = `${message.slice(0, MAX_MESSAGE)}… [truncated: ${message.length} characters]`;
  }
  const row = [Date.now() / 1000, kind, spec.function, spec.worker, request, task, level, message, extra];
  write(pack(Kind.EVENT, 0, new TextEncoder().encode(JSON.stringify(row))));
}

function cpuMs(): number {
  // utime, stime, and cutime, cstime: the host counts the CPU of processes the function started while
  // they ran (a worker's CPU is its whole tree's), so the boot's share includes those it waited for. In
  // clock ticks, 100 per second on Linux.
  const fields = Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ");
  return fields.slice(11, 15).reduce((sum, ticks) => sum + Number(ticks), 0) * 10;
}

function memoryMb(): number {
  return Math.round((Deno.memoryUsage().rss / (1024 * 1024)) * 10) / 10;
}

// -- the runtime surface inside the function ----------------------------------------------------------

function captureConsole() {
  const levels: Record<string, string> = { log: "info", info: "info", debug: "debug", warn: "warning", error: "error" };
  for (const [method, level] of Object.entries(levels)) {
    (console as unknown as Record<string, unknown>)[method] = (...args: unknown[]) =>
      emit("log", args.map((a) => (typeof a === "string" ? a : Deno.inspect(a))).join(" "), level);
  }
}

function waitUntil<T>(promise: Promise<T>): Promise<T> {
  if (!promise || typeof (promise as Promise<T>).then !== "function") {
    throw new TypeError(`EdgeRuntime.waitUntil() takes a promise, not ${Deno.inspect(promise)}`);
  }
  const id = `${spec.worker}.t-${++taskIds}`;
  const store = tags.getStore();
  const request = store?.request ?? null;
  if (store) {
    // The promise is already running, and every continuation it has registered (each `await` in it so
    // far) holds the caller's tags object. Those continuations are the task: retag that object as the
    // task's, and give the caller a fresh one for whatever it runs from here on. Lines the task printed
    // before its first await ran before waitUntil was called, and keep the caller's tags.
    const caller = store.task;
    store.task = id;
    tags.enterWith({ request, task: caller });
  }
  const name = callerName();
  tasks.set(id, { name, request, started: Date.now() });
  emitFor("task_start", `task ${name} started`, "info", request, id, { name });
  promise.then(
    () => taskEnded(id, "completed", null),
    (reason) => {
      taskEnded(id, "failed", reason);
      reject(reason, promise);
    },
  );
  return promise;
}

function callerName(): string {
  // A promise has no name; the place that registered it is what a person recognises.
  const frame = (new Error().stack ?? "").split("\n")[3] ?? "";
  const where = frame.match(/([^/\s(]+:\d+):\d+\)?$/);
  return where ? `waitUntil@${where[1]}` : "waitUntil";
}

function taskEnded(id: string, status: string, error: unknown, reason: string | null = null) {
  const info = tasks.get(id);
  if (!info) return;
  tasks.delete(id);
  const duration_ms = Date.now() - info.started;
  const text = error === null ? null : describe(error);
  const message = status === "failed"
    ? `task ${info.name} failed: ${firstLine(text)}`
    : status === "cancelled"
    ? `task ${info.name} cancelled (${reason})`
    : `task ${info.name} completed`;
  const level = status === "completed" ? "info" : status === "failed" ? "error" : "warning";
  emitFor("task_end", message, level, info.request, id, { name: info.name, status, duration_ms, error: text, reason });
}

const OURS = new URL(".", import.meta.url).href; // this folder: the worker's own modules

/** An error as its author needs it: the message and their frames, not edgecli's below them (a stack lists
 * the innermost frame first, so the worker's dispatch, and Deno's own under it, come last). A stack with
 * no frame of the author's is edgecli's error, and stays whole. */
function describe(error: unknown): string {
  if (!(error instanceof Error)) return Deno.inspect(error);
  const lines = (error.stack ?? String(error)).split("\n");
  let end = lines.length;
  while (end > 1 && isFrame(lines[end - 1]) && !isUsers(lines[end - 1])) end--;
  return (lines.slice(1, end).some(isFrame) ? lines.slice(0, end) : lines).join("\n");
}

function isFrame(line: string): boolean {
  return line.trimStart().startsWith("at ");
}

function isUsers(frame: string): boolean {
  return !frame.includes(OURS) && !frame.includes("ext:") && !frame.includes("node:");
}

function firstLine(text: string | null): string {
  return (text ?? "").split("\n")[0];
}

/** A background task (or any promise nobody handled) rejected: listeners first, then the default. */
function reject(reason: unknown, promise: Promise<unknown>) {
  const event = new PromiseRejectionEvent("unhandledrejection", { promise, reason, cancelable: true });
  dispatchEvent(event);
  if (!event.defaultPrevented) unhandled(reason);
}

function unhandled(reason: unknown) {
  emit("log", `Unhandled promise rejection:\n${describe(reason)}`, "error");
  write(packJson(Kind.RETIRE, 0, { reason: "unhandledrejection" }));
}

function installRuntime() {
  captureConsole();
  (globalThis as Record<string, unknown>).EdgeRuntime = { waitUntil };
  (Deno as unknown as Record<string, unknown>).upgradeWebSocket = makeUpgradeWebSocket(write);
  (Deno as unknown as Record<string, unknown>).serve = (...args: unknown[]) => {
    const last = args[args.length - 1];
    const found = typeof last === "function" ? last : (args[0] as { handler?: unknown })?.handler;
    if (typeof found !== "function") throw new TypeError("Deno.serve() needs a handler function");
    handler = found as Handler;
    const finished = new Promise<void>(() => {});
    return { finished, addr: { transport: "tcp", hostname: "127.0.0.1", port: 0 }, shutdown: async () => {}, ref() {}, unref() {} };
  };
}

// -- requests -----------------------------------------------------------------------------------------

class Channel {
  constructor(readonly request: string) {}
  body: ReadableStreamDefaultController<Uint8Array> | null = null;
  socket: EdgeWebSocket | null = null; // the function accepted this request's WebSocket
  abort = new AbortController();
  credit = new Credit(); // response body or WebSocket message bytes out that the host has not passed on
  done: Promise<void> = Promise.resolve();
  owed = 0; // body bytes received and not yet credited back to the host
  expects = false; // the client waits for 100-continue: the host sends no body until the app reads

  /** The client left, or the worker is stopping: the request's signal aborts, its sender stops. */
  end() {
    this.abort.abort();
    this.credit.close();
  }
}

// The request body's stream holds this much before the host is asked to wait (the wire's flow control).
const BODY_BUFFER = 1 << 16;

interface Scope {
  request_id: string;
  method: string;
  scheme: string;
  path: string;
  raw_path: string;
  root_path?: string;
  type?: "http" | "websocket";
  query_string: string;
  headers: [string, string][];
}

function open(channel: number, scope: Scope) {
  const chan = new Channel(scope.request_id);
  channels.set(channel, chan);
  // Routes are /<name>/... inside the function, as on Supabase: the /functions/v1 prefix is not the app's.
  const root = scope.root_path ?? "";
  const path = scope.raw_path.startsWith(root) ? scope.raw_path.slice(root.length) : scope.raw_path;
  const url = `${scope.scheme}://${header(scope, "host") ?? "localhost"}${path}${scope.query_string ? "?" + scope.query_string : ""}`;
  const hasBody = scope.method !== "GET" && scope.method !== "HEAD";
  chan.expects = hasBody && (header(scope, "expect") ?? "").toLowerCase() === "100-continue";
  const body = hasBody
    ? new ReadableStream<Uint8Array>(
      { start: (c) => (chan.body = c), pull: () => credit(channel, chan) },
      new ByteLengthQueuingStrategy({ highWaterMark: BODY_BUFFER }),
    )
    : null;
  // The pairs as they are: a Headers object built first and then copied cost the Request twice as much.
  const request = new Request(url, { method: scope.method, headers: scope.headers, body, signal: chan.abort.signal });
  if (scope.type === "websocket") allowUpgrade(request, channel, chan.credit, url.replace(/^http/, "ws"));
  chan.done = tags.run({ request: scope.request_id, task: null }, () => respond(channel, chan, request));
}

/** A request header (the host sends their names in lower case), without building a Headers. */
function header(scope: Scope, name: string): string | undefined {
  for (const [k, v] of scope.headers) if (k === name) return v;
}

function onBody(channel: number, chan: Channel, payload: Uint8Array, more: boolean) {
  if (!chan.body) return; // GET/HEAD: the host still sends an empty last chunk
  if (payload.length) chan.body.enqueue(payload);
  if (!more) {
    chan.body.close();
    chan.body = null;
    return;
  }
  chan.owed += payload.length;
  if ((chan.body.desiredSize ?? 0) > 0) credit(channel, chan);
}

/** The app has room for more body: tell the host what it may send (ipc.py's CREDIT). */
function credit(channel: number, chan: Channel) {
  if (chan.expects) {
    chan.expects = false;
    write(packCount(Kind.CREDIT, channel, WINDOW));
  }
  if (chan.owed) {
    write(packCount(Kind.CREDIT, channel, chan.owed));
    chan.owed = 0;
  }
}

async function respond(channel: number, chan: Channel, request: Request) {
  try {
    if (!handler) throw new Error("the function has no handler");
    const response = await handler(request, { remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 0 } });
    if (!(response instanceof Response)) {
      throw new TypeError(`the handler returned ${Deno.inspect(response)}, not a Response`);
    }
    const socket = takeUpgrade(response);
    if (socket) {
      if (chan.abort.signal.aborted) return socket.clientClosed(1006); // the client left in the handshake
      chan.socket = socket;
      socket.accept();
      await socket.closed; // the channel is the socket's until either side closes it
      return;
    }
    const headers = [...response.headers];
    const start = packJson(Kind.START, channel, { status: response.status, headers });
    await sendBody(write, channel, chan.credit, start, response.body);
  } catch (error) {
    if (!chan.abort.signal.aborted) {
      // Tagged explicitly: the handler's own tags object may have become a background task's.
      emitFor("log", `Uncaught exception in handler:\n${describe(error)}`, "error", chan.request, null);
      write(packJson(Kind.FAILED, channel, { message: firstLine(describe(error)) }));
    }
  } finally {
    channels.delete(channel);
  }
}

// -- lifecycle ----------------------------------------------------------------------------------------

function fireBeforeunload(reason: string) {
  if (unloaded) return;
  unloaded = true;
  emitFor("beforeunload", `beforeunload (${reason})`, "info", null, null, { reason });
  try {
    dispatchEvent(new CustomEvent("beforeunload", { detail: { reason } }));
  } catch (error) {
    emit("log", `An event listener raised:\n${describe(error)}`, "error");
  }
}

async function stop(grace: number, reason: string) {
  if (stopping) return;
  stopping = true;
  const deadline = Date.now() + grace * 1000;
  while ((channels.size || tasks.size) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
  }
  const settled = !channels.size && !tasks.size;
  fireBeforeunload(settled ? reason : "termination");
  await new Promise((r) => setTimeout(r, 0)); // let listeners' own logging reach the wire first
  for (const id of [...tasks.keys()]) taskEnded(id, "cancelled", null, reason === "early_drop" ? "termination" : reason);
  for (const [channel, chan] of channels) {
    chan.end();
    if (chan.socket) {
      chan.socket.closeWith(1001); // the worker is going away
      continue;
    }
    write(packJson(Kind.FAILED, channel, { message: "the worker stopped before the response was complete" }));
  }
  await new Promise((r) => setTimeout(r, 0)); // let closing sockets' frames go first
  await write(packJson(Kind.BYE, 0, { cpu_ms: cpuMs(), memory_mb: memoryMb() }));
  Deno.exit(0);
}

function onFrame({ kind, flags, channel, payload }: Frame) {
  const chan = channels.get(channel);
  if (kind === Kind.REQUEST) open(channel, parseJson<Scope>(payload));
  else if (kind === Kind.BODY && chan) onBody(channel, chan, payload, (flags & MORE) !== 0);
  else if (kind === Kind.WS_RECEIVE && chan?.socket) {
    const socket = chan.socket;
    tags.run({ request: chan.request, task: null }, () => socket.received(payload, (flags & TEXT) !== 0));
  } else if (kind === Kind.CREDIT && chan) {
    chan.credit.consumed(new DataView(payload.buffer, payload.byteOffset).getUint32(0));
  } else if (kind === Kind.DISCONNECT && chan?.socket) {
    const socket = chan.socket;
    chan.credit.close();
    const code = payload.length === 4 ? new DataView(payload.buffer, payload.byteOffset).getUint32(0) : 1005;
    tags.run({ request: chan.request, task: null }, () => socket.clientClosed(code));
  } else if (kind === Kind.DISCONNECT && chan) chan.end();
  else if (kind === Kind.NOTICE) fireBeforeunload(parseJson<{ reason: string }>(payload).reason);
  else if (kind === Kind.STOP) {
    const { grace, reason } = parseJson<{ grace: number; reason: string }>(payload);
    stop(grace, reason);
  }
}

async function boot(): Promise<boolean> {
  const started = performance.now();
  try {
    // Under a tags object of its own, so a module-level waitUntil can make it the task's (waitUntil).
    const url = new URL(`file://${spec.entrypoint}`).href;
    const module = await tags.run({ request: null, task: null }, () => import(url));
    const fetch = module.default?.fetch;
    if (!handler && typeof fetch === "function") handler = fetch.bind(module.default);
    if (!handler) {
      throw new Error(`${spec.entrypoint} serves nothing: call Deno.serve(handler) or export default { fetch }`);
    }
  } catch (error) {
    const text = describe(error);
    await write(packJson(Kind.BOOT_ERROR, 0, { message: firstLine(text), error: text }));
    return false;
  }
  // Added after the module's own listeners, so a listener of the function that calls preventDefault()
  // is seen here; the process must not end on a rejection nobody handled, as Deno would by default.
  addEventListener("unhandledrejection", (event) => {
    if (event.defaultPrevented) return;
    event.preventDefault();
    unhandled(event.reason);
  });
  const boot_ms = Math.round((performance.now() - started) * 100) / 100;
  await write(packJson(Kind.READY, 0, { boot_ms, pid: Deno.pid, cpu_ms: cpuMs() }));
  return true;
}

async function main() {
  installRuntime();
  if (!(await boot())) Deno.exit(0);
  await readFrames(onFrame);
  Deno.exit(0); // the host is gone
}

main();
