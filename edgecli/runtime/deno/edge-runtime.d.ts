// The globals a Deno worker gives a function beyond Deno's own (worker.ts), declared for the boot's type
// check (check.ts), so that a stock Supabase function type-checks without importing Supabase's types.
// A namespace, so it merges with the same declaration from `@supabase/functions-js/edge-runtime.d.ts`.

declare namespace EdgeRuntime {
  /** Run `promise` as a background task: the worker stays until it settles, as the policy allows. */
  export function waitUntil<T>(promise: Promise<T>): Promise<T>;
}
