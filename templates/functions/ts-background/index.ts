// Background work in TypeScript: answer at once, finish the job afterwards with EdgeRuntime.waitUntil.
//
// The handler replies 202 straight away; the job runs on and logs each step. The `beforeunload`
// listener says why the worker goes away (per_worker lets the job finish; oneshot cuts it off).
// Needs Deno: `pip install 'edgecli[deno]'`. Try it (--wait follows the job until it settles):
//     edgecli invoke __NAME__ --data '{"steps": 3}' --wait

const STEP_MS = 500;

async function job(steps: number): Promise<void> {
  for (let step = 1; step <= steps; step++) {
    await new Promise((resolve) => setTimeout(resolve, STEP_MS));
    console.log(`__NAME__: step ${step} of ${steps} done`);
  }
}

addEventListener("beforeunload", (ev) => {
  console.log("__NAME__: worker going away:", (ev as CustomEvent).detail?.reason);
});

Deno.serve(async (req: Request) => {
  const { steps = 2 } = req.method === "POST" ? await req.json() : {};
  EdgeRuntime.waitUntil(job(Number(steps)));
  return new Response(JSON.stringify({ accepted: true, steps }), {
    status: 202,
    headers: { "Content-Type": "application/json" },
  });
});
